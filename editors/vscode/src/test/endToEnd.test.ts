/**
 * The extension with the real vscode-languageclient and a real LSP server process (the strict stub in
 * stubServer.ts): spawn, initialize with our settings, the status pushed by the server, the re-trigger when the
 * model becomes ready, inline completion through the provider the client registers with VS Code, a settings
 * change, and a clean shutdown. With $CODECOMPLETE_EXTENSION_MAIN set to the out/extension.js of an unpacked
 * .vsix, the same test runs the packaged extension and its bundled node_modules.
 */
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type * as vscode from "vscode";
import { useRealLanguageClient } from "./register";
import * as mock from "./vscodeMock";
import { userSet } from "./expected";

useRealLanguageClient();
const main = process.env.CODECOMPLETE_EXTENSION_MAIN || "../extension";
const extension: typeof import("../extension") = require(main);

const dir = mkdtempSync(join(tmpdir(), "codecomplete-vscode-"));
const log = join(dir, "server.log");
const context = { subscriptions: [] as { dispose(): unknown }[] };

function received(): { method: string; params: unknown }[] {
  return readFileSync(log, "utf8")
    .trim()
    .split("\n")
    .map((line) => JSON.parse(line));
}

function bar(): mock.FakeStatusBarItem {
  return mock.state.statusBarItems[0];
}

/** Wait (bounded) until `check` holds; the server and the client run in their own time. */
async function until(check: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) {
      assert.fail(`waited ${timeoutMs} ms for ${what}; status item: ${bar()?.text}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

before(async () => {
  const server = join(dir, "codecomplete");
  writeFileSync(server, `#!/bin/sh\nexec "${process.execPath}" "${join(__dirname, "stubServer.js")}" "$@"\n`);
  chmodSync(server, 0o755);
  process.env.STUB_LOG = log;
  // Long enough to see "loading" first, short enough for a fast test.
  process.env.STUB_LOAD_MS = "300";
  mock.state.global.set("codecomplete.serverPath", server);
  mock.state.global.set("codecomplete.model", "stub-model");
  mock.state.global.set("codecomplete.maxTokens", 64);
  mock.window.activeTextEditor = {};
  await extension.activate(context as unknown as vscode.ExtensionContext);
});

after(async () => {
  await extension.deactivate();
  for (const disposable of context.subscriptions) {
    disposable.dispose();
  }
  rmSync(dir, { recursive: true, force: true });
});

test("the server is spawned with `lsp` and gets the settings at initialize", () => {
  const [first] = received();
  assert.equal(first.method, "initialize");
  assert.deepEqual(first.params, userSet({ model: "stub-model", maxTokens: 64 }));
});

test("the status is asked for with params, then pushed: loading → ready re-triggers the suggestion", async () => {
  await until(() => bar().text === "$(check) stub-model · ready", "the pushed ready status");
  const asked = received().filter((m) => m.method === "codecomplete/status");
  assert.deepEqual(asked, [{ method: "codecomplete/status", params: {} }], "one request, with params");
  assert.ok(
    mock.state.executed.some((c) => c.id === "editor.action.inlineSuggest.trigger"),
    "VS Code was asked to request the suggestion at the cursor again",
  );
  assert.match(bar().tooltip ?? "", /Model: stub-model \(\/models\/stub-model\.gguf\)/);
  assert.match(bar().tooltip ?? "", /Backend: stub lsp/);
  assert.deepEqual(mock.state.messages, [], "no error shown to the user");
});

test("inline completions go through the provider the client registers for file documents", async () => {
  assert.equal(mock.state.inlineProviders.length, 1);
  const { selector, provider } = mock.state.inlineProviders[0];
  assert.deepEqual(JSON.parse(JSON.stringify(selector)), [{ scheme: "file" }]);
  const document = { uri: mock.Uri.file("/work/a.py"), languageId: "python", version: 1 };
  const token = { isCancellationRequested: false, onCancellationRequested: () => new mock.Disposable(() => {}) };
  const result = await provider.provideInlineCompletionItems(
    document,
    new mock.Position(3, 4),
    { triggerKind: mock.InlineCompletionTriggerKind.Automatic, selectedCompletionInfo: undefined },
    token,
  );
  const items: mock.InlineCompletionItem[] = Array.isArray(result) ? result : result.items;
  assert.equal(items.length, 1);
  assert.equal(items[0].insertText, "return 64");
  assert.deepEqual(items[0].range, new mock.Range(3, 4, 3, 4));
  const request = received().find((m) => m.method === "textDocument/inlineCompletion");
  assert.deepEqual((request?.params as { position: unknown }).position, { line: 3, character: 4 });
  await until(() => bar().text === "$(check) stub-model · ready · 5 ms", "the latency the server pushed");
});

test("a settings change reaches the running server", async () => {
  mock.changeSettings({ "codecomplete.model": "other-model" });
  await mock.settle();
  const change = received().find((m) => m.method === "workspace/didChangeConfiguration");
  assert.deepEqual(change?.params, {
    settings: {
      codecomplete: userSet({ model: "other-model", maxTokens: 64 }),
    },
  });
  await until(() => bar().text === "$(check) other-model · ready · 5 ms", "the new model on the item");
});

test("no request the extension sent was refused by the strict server", () => {
  assert.deepEqual(
    received().filter((m) => m.params === "<no params>"),
    [],
  );
});

test("deactivate shuts the server down cleanly", async () => {
  await extension.deactivate();
  // The exit notification is sent, not answered: give the server a moment to read it.
  await until(() => received().at(-1)?.method === "exit", "the exit notification");
  const methods = received().map((m) => m.method);
  assert.deepEqual(methods.slice(-2), ["shutdown", "exit"]);
});
