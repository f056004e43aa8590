import assert from "node:assert/strict";
import { afterEach, beforeEach, mock as nodeMock, test } from "node:test";
import type * as vscode from "vscode";
import { activate, deactivate, RESTART_COMMAND } from "../extension";
import { POLL_MS, TOGGLE_COMMAND } from "../statusBar";
import type { ServerStatus } from "../status";
import { fakes, type LanguageClient } from "./fakeLanguageClient";
import * as mock from "./vscodeMock";

const READY: ServerStatus = {
  model: "codellama-7b",
  backend: "metal",
  state: "ready",
  latencies_ms: [210, 190],
  last_latency_ms: 190,
  error: null,
};

let context: { subscriptions: { dispose(): unknown }[] };

async function start(): Promise<void> {
  context = { subscriptions: [] };
  await activate(context as unknown as vscode.ExtensionContext);
}

function client(index = 0): LanguageClient {
  const found = fakes.instances[index];
  assert.ok(found, `language client #${index} was created`);
  return found;
}

function item(): mock.FakeStatusBarItem {
  assert.equal(mock.state.statusBarItems.length, 1, "one status bar item");
  return mock.state.statusBarItems[0];
}

/** Let fire-and-forget promises (timer callbacks) run. */
function tick(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

beforeEach(() => {
  mock.reset();
  fakes.reset();
  fakes.statusAnswer = READY;
});

afterEach(async () => {
  await deactivate();
  for (const disposable of context?.subscriptions ?? []) {
    disposable.dispose();
  }
});

test("activation starts `codecomplete lsp` for every file document", async () => {
  await start();
  assert.equal(fakes.instances.length, 1);
  const c = client();
  assert.equal(c.id, "codecomplete");
  assert.deepEqual(c.serverOptions, { command: "codecomplete", args: ["lsp"] });
  assert.deepEqual(c.clientOptions.documentSelector, [{ scheme: "file" }]);
  assert.equal(c.startCalls, 1);
  assert.equal(c.isRunning(), true);
  assert.deepEqual(mock.state.outputChannels, ["codecomplete"]);
});

test("activation passes the settings as initializationOptions", async () => {
  mock.state.global.set("codecomplete.model", "smollm2");
  mock.state.global.set("codecomplete.tokenBudget", 1500);
  mock.state.global.set("codecomplete.serverPath", "/opt/cc/codecomplete");
  await start();
  assert.deepEqual(client().serverOptions, { command: "/opt/cc/codecomplete", args: ["lsp"] });
  assert.deepEqual(client().clientOptions.initializationOptions, {
    model: "smollm2",
    format: null,
    maxTokens: null,
    tokenBudget: 1500,
    timeBudgetMs: null,
    nGpuLayers: null,
    languages: null,
    enabled: null,
  });
});

test("activation registers the commands the manifest declares", async () => {
  await start();
  assert.deepEqual([...mock.state.commands.keys()].sort(), [RESTART_COMMAND, TOGGLE_COMMAND].sort());
  const manifest = require("../../package.json");
  const declared = manifest.contributes.commands.map((c: { command: string }) => c.command).sort();
  assert.deepEqual(declared, [...mock.state.commands.keys()].sort());
});

test("the status bar item shows the server's status and toggles on click", async () => {
  await start();
  const bar = item();
  assert.equal(bar.visible, true);
  assert.equal(bar.command, TOGGLE_COMMAND);
  assert.equal(bar.text, "$(check) codellama-7b 190 ms");
  assert.match(bar.tooltip ?? "", /codellama-7b on metal/);
  assert.equal(bar.backgroundColor, undefined);
  assert.deepEqual(client().requests.map((r) => r.method), ["codecomplete/status"]);
});

test("the status bar follows the server from loading to ready by polling", async () => {
  nodeMock.timers.enable({ apis: ["setInterval"] });
  try {
    fakes.statusAnswer = { ...READY, state: "loading", last_latency_ms: null, latencies_ms: [] };
    await start();
    assert.equal(item().text, "$(sync~spin) codellama-7b");
    fakes.statusAnswer = READY;
    nodeMock.timers.tick(POLL_MS - 1);
    await tick();
    assert.equal(item().text, "$(sync~spin) codellama-7b", "no poll before the interval");
    nodeMock.timers.tick(1);
    await tick();
    assert.equal(item().text, "$(check) codellama-7b 190 ms");
  } finally {
    nodeMock.timers.reset();
  }
});

test("a server error turns the item red", async () => {
  fakes.statusAnswer = { ...READY, state: "error", error: "cannot open model" };
  await start();
  assert.equal(item().text, "$(error) codellama-7b");
  assert.deepEqual(item().backgroundColor, new mock.ThemeColor("statusBarItem.errorBackground"));
  assert.match(item().tooltip ?? "", /cannot open model/);
});

test("a server that cannot be spawned is reported on the item, not thrown", async () => {
  fakes.startFailure = new Error("spawn codecomplete ENOENT");
  await start();
  assert.equal(item().text, "$(error) codecomplete");
  assert.match(item().tooltip ?? "", /did not start: spawn codecomplete ENOENT/);
  assert.deepEqual(client().requests, [], "no status request to a dead server");
});

test("a failing status request is shown instead of raised", async () => {
  fakes.statusAnswer = new Error("Unhandled method codecomplete/status");
  await start();
  assert.equal(item().text, "$(error) codecomplete");
  assert.match(item().tooltip ?? "", /status request failed: Unhandled method/);
});

test("changing a setting sends workspace/didChangeConfiguration and refreshes the item", async () => {
  await start();
  const c = client();
  fakes.statusAnswer = { ...READY, model: "deepseek-1.3b", state: "loading" };
  mock.changeSettings({ "codecomplete.model": "deepseek-1.3b", "codecomplete.maxTokens": 48 });
  await mock.settle();
  assert.equal(fakes.instances.length, 1, "no restart for a server setting");
  assert.deepEqual(c.notifications, [
    {
      method: "workspace/didChangeConfiguration",
      params: {
        settings: {
          codecomplete: {
            model: "deepseek-1.3b",
            format: null,
            maxTokens: 48,
            tokenBudget: null,
            timeBudgetMs: null,
            nGpuLayers: null,
            languages: null,
            enabled: null,
          },
        },
      },
    },
  ]);
  assert.equal(item().text, "$(sync~spin) deepseek-1.3b");
});

test("changes to other extensions' settings are ignored", async () => {
  await start();
  mock.changeSettings({ "editor.fontSize": 14 });
  await mock.settle();
  assert.deepEqual(client().notifications, []);
  assert.equal(client().requests.length, 1, "no extra status request");
});

test("changing serverPath restarts the server with the new command", async () => {
  await start();
  mock.changeSettings({ "codecomplete.serverPath": "/usr/local/bin/codecomplete" });
  await mock.settle();
  assert.equal(fakes.instances.length, 2);
  assert.equal(client(0).disposed, true);
  assert.equal(client(1).serverOptions.command, "/usr/local/bin/codecomplete");
  assert.equal(client(1).isRunning(), true);
  assert.deepEqual(client(0).notifications, []);
});

test("the toggle command flips codecomplete.enabled and the item, and the server hears of it", async () => {
  await start();
  await mock.commands.executeCommand(TOGGLE_COMMAND);
  await mock.settle();
  assert.equal(mock.state.global.get("codecomplete.enabled"), false);
  assert.equal(item().text, "$(circle-slash) codecomplete");
  const sent = client().notifications.at(-1)?.params as { settings: { codecomplete: { enabled: boolean } } };
  assert.equal(sent.settings.codecomplete.enabled, false);

  await mock.commands.executeCommand(TOGGLE_COMMAND);
  await mock.settle();
  assert.equal(mock.state.global.get("codecomplete.enabled"), true);
  assert.equal(item().text, "$(check) codellama-7b 190 ms");
});

test("restartServer replaces the client, and the new one reads the current settings", async () => {
  await start();
  mock.state.global.set("codecomplete.format", "psm");
  await mock.commands.executeCommand(RESTART_COMMAND);
  assert.equal(fakes.instances.length, 2);
  assert.equal(client(0).disposed, true);
  assert.equal(client(1).isRunning(), true);
  assert.equal((client(1).clientOptions.initializationOptions as { format: string }).format, "psm");
  assert.equal(item().text, "$(check) codellama-7b 190 ms");
});

test("restartServer recovers from a failed start", async () => {
  fakes.startFailure = new Error("spawn codecomplete ENOENT");
  await start();
  fakes.startFailure = undefined;
  await mock.commands.executeCommand(RESTART_COMMAND);
  assert.equal(client(1).isRunning(), true);
  assert.equal(item().text, "$(check) codellama-7b 190 ms");
});

test("deactivate stops the server and disposing removes the item and the poll", async () => {
  nodeMock.timers.enable({ apis: ["setInterval"] });
  try {
    await start();
    await deactivate();
    assert.equal(client().disposed, true);
    for (const disposable of context.subscriptions) {
      disposable.dispose();
    }
    context.subscriptions = [];
    assert.equal(item().disposed, true);
    const asked = client().requests.length;
    nodeMock.timers.tick(POLL_MS * 3);
    await tick();
    assert.equal(client().requests.length, asked, "no polling after dispose");
  } finally {
    nodeMock.timers.reset();
  }
});
