/**
 * The stub server is as strict as a JSON-RPC server may be, so a request the extension sends in a form the real
 * server refuses fails here too: no params → "Invalid params", an unknown method → "Method not found".
 *
 * With $CODECOMPLETE_LSP set to a codecomplete executable, the real `codecomplete lsp` is checked alongside: it
 * answers the status request as the extension sends it, and refuses unknown methods the same way.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import {
  createMessageConnection,
  ErrorCodes,
  type MessageConnection,
  ResponseError,
  StreamMessageReader,
  StreamMessageWriter,
} from "vscode-jsonrpc/node";

interface Server {
  connection: MessageConnection;
  process: ChildProcess;
}

const runtime = mkdtempSync(join(tmpdir(), "codecomplete-protocol-"));
after(() => rmSync(runtime, { recursive: true, force: true }));

async function startServer(command: string, args: string[]): Promise<Server> {
  const child = spawn(command, args, {
    stdio: ["pipe", "pipe", "inherit"],
    // The real server's shared daemon lives in a private runtime dir, and goes with it.
    env: { ...process.env, CODECOMPLETE_RUNTIME_DIR: runtime, STUB_PUSH: "1" },
  });
  const connection = createMessageConnection(
    new StreamMessageReader(child.stdout!),
    new StreamMessageWriter(child.stdin!),
  );
  connection.listen();
  await connection.sendRequest("initialize", { processId: process.pid, rootUri: null, capabilities: {} });
  await connection.sendNotification("initialized", {});
  return { connection, process: child };
}

async function stopServer(server: Server): Promise<void> {
  const exited = new Promise((resolve) => server.process.once("exit", resolve));
  await server.connection.sendRequest("shutdown");
  await server.connection.sendNotification("exit");
  await exited;
  server.connection.dispose();
}

async function refusal(promise: Promise<unknown>): Promise<ResponseError<unknown>> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof ResponseError, `a JSON-RPC error answer, not ${error}`);
    return error;
  }
  assert.fail("the request was answered, not refused");
}

const servers: [string, string, string[]][] = [["the stub", process.execPath, [join(__dirname, "stubServer.js"), "lsp"]]];
if (process.env.CODECOMPLETE_LSP) {
  // --no-daemon: the model loads in the server's own process, which ends with the test.
  servers.push(["the real codecomplete lsp", process.env.CODECOMPLETE_LSP, ["lsp", "--no-daemon"]]);
}

for (const [name, command, args] of servers) {
  describe(name, () => {
    let server: Server;
    test("starts", { timeout: 30_000 }, async () => {
      server = await startServer(command, args);
    });

    test("answers codecomplete/status sent as the extension sends it, with params", async () => {
      const status = await server.connection.sendRequest<{ state: string }>("codecomplete/status", {});
      assert.ok(["idle", "loading", "ready", "error", "disabled"].includes(status.state), status.state);
    });

    test("refuses an unknown method", async () => {
      const error = await refusal(server.connection.sendRequest("codecomplete/noSuchMethod", {}));
      assert.equal(error.code, ErrorCodes.MethodNotFound);
    });

    if (name === "the stub") {
      test("refuses a request without params, as a strict JSON-RPC server does", async () => {
        const error = await refusal(server.connection.sendRequest("codecomplete/status"));
        assert.equal(error.code, ErrorCodes.InvalidParams);
      });
    }

    test("shuts down", { timeout: 30_000 }, async () => {
      await stopServer(server);
    });
  });
}
