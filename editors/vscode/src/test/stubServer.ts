/**
 * A stand-in for `codecomplete lsp` speaking real LSP over stdio, for the end-to-end test of the extension with
 * the real language client. It answers from the settings it was given, so the test sees them come back, and
 * appends every method it receives to $STUB_LOG.
 */
import { appendFileSync } from "node:fs";
import { createMessageConnection, StreamMessageReader, StreamMessageWriter } from "vscode-jsonrpc/node";

interface Settings {
  model?: string | null;
  maxTokens?: number | null;
}

const log = process.env.STUB_LOG;
const connection = createMessageConnection(
  new StreamMessageReader(process.stdin),
  new StreamMessageWriter(process.stdout),
);
let settings: Settings = {};

function seen(method: string, params?: unknown): void {
  if (log) {
    appendFileSync(log, `${JSON.stringify({ method, params })}\n`);
  }
}

connection.onRequest("initialize", (params: { initializationOptions?: Settings }) => {
  seen("initialize", params.initializationOptions);
  settings = params.initializationOptions ?? {};
  return { capabilities: { textDocumentSync: 2, inlineCompletionProvider: true } };
});
connection.onNotification((method: string, params: unknown) => {
  seen(method, params);
  if (method === "workspace/didChangeConfiguration") {
    settings = (params as { settings: { codecomplete: Settings } }).settings.codecomplete;
  }
  if (method === "exit") {
    process.exit(0);
  }
});
connection.onRequest("codecomplete/status", () => {
  seen("codecomplete/status");
  return {
    model: settings.model ?? "default",
    backend: `stub ${process.argv.slice(2).join(" ")}`,
    state: "ready",
    latencies_ms: [5],
    last_latency_ms: 5,
    error: null,
  };
});
connection.onRequest(
  "textDocument/inlineCompletion",
  (params: { textDocument: { uri: string }; position: { line: number; character: number } }) => {
    seen("textDocument/inlineCompletion", params);
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
