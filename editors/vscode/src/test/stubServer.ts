/**
 * A stand-in for `codecomplete lsp` speaking real LSP over stdio, for the end-to-end test of the extension with
 * the real language client. It is at least as strict as the real server: a request without `params` is
 * rejected with JSON-RPC's "Invalid params" (only `shutdown`, which LSP defines without params, may omit
 * them) and a method it does not know with "Method not found".
 *
 * Like the real server it loads a "model" after `initialized` (state loading → ready after $STUB_LOAD_MS) and
 * pushes each change of its status as `codecomplete/statusChanged` (unless $STUB_PUSH is "0", for a server
 * that predates the notification). It answers from the settings it was given, so the test sees them come back,
 * and appends every message it receives to $STUB_LOG.
 */
import { appendFileSync } from "node:fs";
import {
  AbstractMessageReader,
  createMessageConnection,
  type DataCallback,
  type Disposable,
  ErrorCodes,
  type Message,
  type MessageReader,
  StreamMessageReader,
  StreamMessageWriter,
} from "vscode-jsonrpc/node";

interface Settings {
  model?: string | null;
  maxTokens?: number | null;
  enabled?: boolean | null;
}

/** Requests LSP defines without params. */
const PARAMLESS = new Set(["shutdown"]);

const log = process.env.STUB_LOG;
const loadMs = Number(process.env.STUB_LOAD_MS ?? "50");
const push = process.env.STUB_PUSH !== "0";
const writer = new StreamMessageWriter(process.stdout);

function seen(method: string, params?: unknown): void {
  if (log) {
    appendFileSync(log, `${JSON.stringify({ method, params })}\n`);
  }
}

interface RawRequest {
  id: number | string;
  method: string;
  params?: unknown;
}

/** Answers a request that has no params itself, with the error a strict JSON-RPC server gives. */
class StrictReader extends AbstractMessageReader implements MessageReader {
  constructor(private readonly inner: MessageReader) {
    super();
    inner.onError((error) => this.fireError(error));
    inner.onClose(() => this.fireClose());
    inner.onPartialMessage((info) => this.firePartialMessage(info));
  }

  listen(callback: DataCallback): Disposable {
    return this.inner.listen((message: Message) => {
      const request = message as unknown as RawRequest;
      if (request.id !== undefined && typeof request.method === "string" && !("params" in request)) {
        if (!PARAMLESS.has(request.method)) {
          seen(request.method, "<no params>");
          void writer.write({
            jsonrpc: "2.0",
            id: request.id,
            error: { code: ErrorCodes.InvalidParams, message: `Invalid params: ${request.method} needs params` },
          } as Message);
          return;
        }
      }
      callback(message);
    });
  }
}

const connection = createMessageConnection(new StrictReader(new StreamMessageReader(process.stdin)), writer);
let settings: Settings = {};
let state: "idle" | "loading" | "ready" | "disabled" = "idle";
const latencies: number[] = [];

function status(): Record<string, unknown> {
  const model = settings.model ?? "default";
  const loaded = state !== "idle" && state !== "loading";
  return {
    state: state === "ready" && settings.enabled === false ? "disabled" : state,
    error: null,
    model: loaded ? `/models/${model}.gguf` : null,
    model_name: loaded ? model : null,
    family: loaded ? "stub" : null,
    backend: `stub ${process.argv.slice(2).join(" ")}`,
    latencies_ms: [...latencies],
    last_latency_ms: latencies.at(-1) ?? null,
    notice: null,
  };
}

function changed(): void {
  if (push) {
    void connection.sendNotification("codecomplete/statusChanged", status());
  }
}

connection.onRequest("initialize", (params: { initializationOptions?: Settings }) => {
  seen("initialize", params.initializationOptions);
  settings = params.initializationOptions ?? {};
  return { capabilities: { textDocumentSync: 2, inlineCompletionProvider: true } };
});
connection.onNotification((method: string, params: unknown) => {
  seen(method, params);
  if (method === "initialized") {
    state = "loading";
    changed();
    setTimeout(() => {
      state = "ready";
      changed();
    }, loadMs);
  }
  if (method === "workspace/didChangeConfiguration") {
    settings = (params as { settings: { codecomplete: Settings } }).settings.codecomplete;
    changed();
  }
  if (method === "exit") {
    process.exit(0);
  }
});
connection.onRequest("codecomplete/status", (params: unknown) => {
  seen("codecomplete/status", params);
  return status();
});
connection.onRequest(
  "textDocument/inlineCompletion",
  (params: { textDocument: { uri: string }; position: { line: number; character: number } }) => {
    seen("textDocument/inlineCompletion", params);
    if (state !== "ready") {
      return { items: [] };
    }
    latencies.push(5);
    changed();
    const { line, character } = params.position;
    return {
      items: [
        {
          insertText: `return ${settings.maxTokens ?? 0}`,
          range: { start: params.position, end: { line, character } },
        },
      ],
    };
  },
);
connection.onRequest("shutdown", () => {
  seen("shutdown");
  return null;
});
connection.listen();
