/**
 * The extension with the real vscode-languageclient and a real LSP server process (the stub in stubServer.ts):
 * spawn, initialize with our settings, status polling, inline completion through the provider the client
 * registers with VS Code, a settings change, and a clean shutdown. With $CODECOMPLETE_EXTENSION_MAIN set to the
 * out/extension.js of an unpacked .vsix, the same test runs the packaged extension and its bundled node_modules.
 */
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type * as vscode from "vscode";
import { useRealLanguageClient } from "./register";
import * as mock from "./vscodeMock";

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

before(async () => {
  const server = join(dir, "codecomplete");
  writeFileSync(server, `#!/bin/sh\nexec "${process.execPath}" "${join(__dirname, "stubServer.js")}" "$@"\n`);
  chmodSync(server, 0o755);
  process.env.STUB_LOG = log;
  mock.state.global.set("codecomplete.serverPath", server);
  mock.state.global.set("codecomplete.model", "stub-model");
  mock.state.global.set("codecomplete.maxTokens", 64);
  await extension.activate(context as unknown as vscode.ExtensionContext);
});

after(async () => {
  await extension.deactivate();
  for (const disposable of context.subscriptions) {
    disposable.dispose();
  }
  rmSync(dir, { recursive: true, force: true });
});

test("the server is spawned with `lsp`, gets the settings at initialize, and feeds the status bar", () => {
  const [first] = received();
  assert.equal(first.method, "initialize");
  assert.deepEqual(first.params, {
    model: "stub-model",
    format: null,
    maxTokens: 64,
    tokenBudget: null,
    timeBudgetMs: null,
    nGpuLayers: null,
    languages: null,
    enabled: null,
  });
  const bar = mock.state.statusBarItems[0];
  assert.equal(bar.text, "$(check) stub-model 5 ms");
  assert.match(bar.tooltip ?? "", /stub-model on stub lsp/);
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
});

test("a settings change reaches the running server", async () => {
  mock.changeSettings({ "codecomplete.model": "other-model" });
  await mock.settle();
  const change = received().find((m) => m.method === "workspace/didChangeConfiguration");
  assert.deepEqual(change?.params, {
    settings: {
      codecomplete: {
        model: "other-model",
        format: null,
        maxTokens: 64,
        tokenBudget: null,
        timeBudgetMs: null,
        nGpuLayers: null,
        languages: null,
        enabled: null,
      },
    },
  });
  assert.equal(mock.state.statusBarItems[0].text, "$(check) other-model 5 ms");
});

test("deactivate shuts the server down cleanly", async () => {
  await extension.deactivate();
  // The exit notification is sent, not answered: give the server a moment to read it.
  const deadline = Date.now() + 5000;
  while (received().at(-1)?.method !== "exit" && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const methods = received().map((m) => m.method);
  assert.deepEqual(methods.slice(-2), ["shutdown", "exit"]);
});
