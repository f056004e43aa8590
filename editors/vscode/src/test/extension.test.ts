import assert from "node:assert/strict";
import { afterEach, beforeEach, mock as nodeMock, test } from "node:test";
import type * as vscode from "vscode";
import { activate, deactivate, RESTART_COMMAND } from "../extension";
import { checks } from "../server";
import { LOADING_RECHECK_MS, TOGGLE_COMMAND, TRIGGER_INLINE_SUGGEST } from "../statusBar";
import { STATUS_CHANGED, type ServerStatus } from "../status";
import { fakes, type LanguageClient } from "./fakeLanguageClient";
import * as mock from "./vscodeMock";
import { userSet } from "./expected";

const READY: ServerStatus = {
  state: "ready",
  error: null,
  model: "/models/codellama-7b.Q4_K_M.gguf",
  model_name: "codellama-7b",
  family: "codellama",
  backend: "metal",
  latencies_ms: [210, 190],
  last_latency_ms: 190,
  notice: null,
};
const LOADING: ServerStatus = { ...READY, state: "loading", latencies_ms: [], last_latency_ms: null };
const READY_TEXT = "$(check) codellama-7b · ready · 190 ms";

let context: { subscriptions: { dispose(): unknown }[] };
/** Executables the preflight check finds; anything else is "not found on PATH". */
let installed: Set<string>;

async function start(): Promise<void> {
  context = { subscriptions: [] };
  await activate(context as unknown as vscode.ExtensionContext);
  await tick();
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

function statusRequests(index = 0): number {
  return client(index).requests.filter((r) => r.method === "codecomplete/status").length;
}

function triggers(): number {
  return mock.state.executed.filter((c) => c.id === TRIGGER_INLINE_SUGGEST).length;
}

/** Let pending promise chains (requests, listeners, timer callbacks) run. */
async function tick(): Promise<void> {
  for (let i = 0; i < 5; i++) {
    await new Promise((resolve) => setImmediate(resolve));
  }
}

beforeEach(() => {
  mock.reset();
  fakes.reset();
  fakes.statusAnswer = READY;
  installed = new Set(["codecomplete", "/opt/cc/codecomplete", "/usr/local/bin/codecomplete"]);
  checks.whyNotExecutable = async (command) =>
    installed.has(command) ? undefined : `"${command}" was not found on PATH`;
});

afterEach(async () => {
  await deactivate();
  for (const disposable of context?.subscriptions ?? []) {
    disposable.dispose();
  }
  nodeMock.timers.reset();
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
  assert.deepEqual(client().clientOptions.initializationOptions, userSet({ model: "smollm2", tokenBudget: 1500 }));
});

test("activation registers the commands the manifest declares", async () => {
  await start();
  assert.deepEqual([...mock.state.commands.keys()].sort(), [RESTART_COMMAND, TOGGLE_COMMAND].sort());
  const manifest = require("../../package.json");
  const declared = manifest.contributes.commands.map((c: { command: string }) => c.command).sort();
  assert.deepEqual(declared, [...mock.state.commands.keys()].sort());
});

test("the status is requested once after start, with params, and shows model, state and latency", async () => {
  await start();
  const bar = item();
  assert.equal(bar.visible, true);
  assert.equal(bar.command, TOGGLE_COMMAND);
  assert.equal(bar.text, READY_TEXT);
  assert.match(bar.tooltip ?? "", /Model: codellama-7b \(\/models\/codellama-7b\.Q4_K_M\.gguf\)/);
  assert.match(bar.tooltip ?? "", /Last completion: 190 ms; median of the last 2: 200 ms/);
  assert.equal(bar.backgroundColor, undefined);
  assert.deepEqual(client().requests, [{ method: "codecomplete/status", params: {} }]);
  assert.deepEqual(mock.state.messages, []);
});

test("no polling: a ready server is asked nothing more until something happens", async () => {
  nodeMock.timers.enable({ apis: ["setTimeout", "setInterval"] });
  await start();
  nodeMock.timers.tick(60_000);
  await tick();
  assert.equal(statusRequests(), 1);
});

test("a pushed status redraws the item without a request", async () => {
  await start();
  client().push(STATUS_CHANGED, { ...READY, last_latency_ms: 75, latencies_ms: [75] });
  await tick();
  assert.equal(item().text, "$(check) codellama-7b · ready · 75 ms");
  assert.equal(statusRequests(), 1, "only the request after start");
});

test("a statusChanged notification without a status makes the extension ask for it", async () => {
  await start();
  fakes.statusAnswer = { ...READY, last_latency_ms: 42 };
  client().push(STATUS_CHANGED);
  await tick();
  assert.equal(statusRequests(), 2);
  assert.deepEqual(client().requests[1].params, {});
  assert.equal(item().text, "$(check) codellama-7b · ready · 42 ms");
});

test("loading → ready by notification asks VS Code for the suggestion at the cursor again", async () => {
  fakes.statusAnswer = LOADING;
  mock.window.activeTextEditor = {};
  await start();
  assert.equal(item().text, "$(sync~spin) codellama-7b · loading");
  assert.equal(triggers(), 0);
  client().push(STATUS_CHANGED, READY);
  await tick();
  assert.equal(item().text, READY_TEXT);
  assert.equal(triggers(), 1);
  client().push(STATUS_CHANGED, { ...READY, last_latency_ms: 12 });
  await tick();
  assert.equal(triggers(), 1, "ready → ready does not trigger again");
  assert.equal(statusRequests(), 1);
});

test("a server that is ready at its start (its model already loaded) forces no suggestion", async () => {
  mock.window.activeTextEditor = {};
  await start();
  assert.equal(item().text, READY_TEXT);
  assert.equal(triggers(), 0);
});

test("the trigger needs an editor, and completion turned on", async () => {
  fakes.statusAnswer = LOADING;
  await start();
  client().push(STATUS_CHANGED, READY);
  await tick();
  assert.equal(triggers(), 0, "no editor, nothing to trigger");
  mock.window.activeTextEditor = {};
  mock.state.global.set("codecomplete.enabled", false);
  client().push(STATUS_CHANGED, LOADING);
  client().push(STATUS_CHANGED, READY);
  await tick();
  assert.equal(triggers(), 0, "completion is off");
});

test("a server that does not push its status is re-read while it loads, then left alone", async () => {
  nodeMock.timers.enable({ apis: ["setTimeout"] });
  fakes.statusAnswer = { state: "idle", error: null };
  mock.window.activeTextEditor = {};
  await start();
  assert.equal(item().text, "$(sync~spin) codecomplete · starting");
  nodeMock.timers.tick(LOADING_RECHECK_MS[0]);
  await tick();
  assert.equal(statusRequests(), 2);
  fakes.statusAnswer = LOADING;
  nodeMock.timers.tick(LOADING_RECHECK_MS[1]);
  await tick();
  assert.equal(statusRequests(), 3);
  assert.equal(item().text, "$(sync~spin) codellama-7b · loading");
  fakes.statusAnswer = READY;
  nodeMock.timers.tick(LOADING_RECHECK_MS[2] - 1);
  await tick();
  assert.equal(statusRequests(), 3, "the delay grows");
  nodeMock.timers.tick(1);
  await tick();
  assert.equal(item().text, READY_TEXT);
  assert.equal(triggers(), 1);
  nodeMock.timers.tick(60_000);
  await tick();
  assert.equal(statusRequests(), 4, "no reads once ready");
});

test("once the server has pushed a status, loading is followed by its notifications alone", async () => {
  nodeMock.timers.enable({ apis: ["setTimeout"] });
  await start();
  client().push(STATUS_CHANGED, LOADING);
  await tick();
  nodeMock.timers.tick(60_000);
  await tick();
  assert.equal(statusRequests(), 1);
  assert.equal(item().text, "$(sync~spin) codellama-7b · loading");
});

test("an answered completion refreshes the latency, until the server pushes its status", async () => {
  await start();
  fakes.statusAnswer = { ...READY, last_latency_ms: 55 };
  await client().provideInlineCompletion();
  await tick();
  assert.equal(item().text, "$(check) codellama-7b · ready · 55 ms");
  assert.equal(statusRequests(), 2);
  client().push(STATUS_CHANGED, { ...READY, last_latency_ms: 60 });
  await client().provideInlineCompletion();
  await tick();
  assert.equal(statusRequests(), 2, "the server says it itself now");
  assert.equal(item().text, "$(check) codellama-7b · ready · 60 ms");
});

test("a server error turns the item red, and the tooltip carries the error and the notice", async () => {
  fakes.statusAnswer = {
    ...READY,
    state: "error",
    error: "cannot open model",
    notice: "The last request timed out: raise codecomplete.timeBudgetMs.",
  };
  await start();
  assert.equal(item().text, "$(error) codellama-7b · error");
  assert.deepEqual(item().backgroundColor, new mock.ThemeColor("statusBarItem.errorBackground"));
  assert.match(item().tooltip ?? "", /Error: cannot open model/);
  assert.match(item().tooltip ?? "", /raise codecomplete\.timeBudgetMs/);
});

test("a serverPath that is not there: a clear message, a red item, no client, and a retry on a settings change", async () => {
  mock.state.global.set("codecomplete.serverPath", "/nowhere/codecomplete");
  await start();
  assert.equal(fakes.instances.length, 0, "nothing spawned");
  assert.equal(item().text, "$(error) codecomplete · error");
  assert.match(item().tooltip ?? "", /"\/nowhere\/codecomplete" was not found/);
  assert.equal(mock.state.messages.length, 1);
  assert.match(mock.state.messages[0], /^codecomplete: the server cannot start: .*Set codecomplete\.serverPath/);

  installed.add("/nowhere/codecomplete");
  mock.changeSettings({ "codecomplete.maxTokens": 32 });
  await mock.settle();
  await tick();
  assert.equal(fakes.instances.length, 1, "retried");
  assert.equal(client().isRunning(), true);
  assert.equal(item().text, READY_TEXT);
});

test("the error message's button opens the serverPath setting", async () => {
  mock.state.messageChoice = "Open Settings";
  mock.state.global.set("codecomplete.serverPath", "/nowhere/codecomplete");
  await start();
  assert.deepEqual(
    mock.state.executed.find((c) => c.id === "workbench.action.openSettings"),
    { id: "workbench.action.openSettings", args: ["codecomplete.serverPath"] },
  );
});

test("in a remote window the message and its button lead to the Remote settings", async () => {
  mock.env.remoteName = "ssh-remote";
  mock.state.messageChoice = "Open Settings";
  mock.state.global.set("codecomplete.serverPath", "/nowhere/codecomplete");
  await start();
  assert.match(mock.state.messages[0], /Set codecomplete\.serverPath in the Remote settings/);
  assert.deepEqual(
    mock.state.executed.find((c) => c.id.startsWith("workbench.action.open")),
    { id: "workbench.action.openRemoteSettings", args: [{ query: "codecomplete.serverPath" }] },
  );
});

test("a client that fails to start is reported and retried when the settings change", async () => {
  fakes.startFailure = new Error("spawn codecomplete EACCES");
  await start();
  assert.equal(item().text, "$(error) codecomplete · error");
  assert.match(item().tooltip ?? "", /did not start: spawn codecomplete EACCES/);
  assert.match(mock.state.messages[0] ?? "", /codecomplete: the server did not start: spawn codecomplete EACCES/);
  assert.deepEqual(client().requests, [], "no status request to a dead server");
  fakes.startFailure = undefined;
  mock.changeSettings({ "codecomplete.format": "psm" });
  await mock.settle();
  await tick();
  assert.equal(client(1).isRunning(), true);
  assert.equal(item().text, READY_TEXT);
});

test("a failing status request is shown instead of raised", async () => {
  fakes.statusAnswer = new Error("Internal Error");
  await start();
  assert.equal(item().text, "$(error) codecomplete · error");
  assert.match(item().tooltip ?? "", /status request failed: Internal Error/);
});

test("a server that goes away shows on the item", async () => {
  await start();
  client().crash();
  await tick();
  assert.equal(item().text, "$(error) codecomplete · error");
  assert.match(item().tooltip ?? "", /the server stopped/);
});

test("changing a setting sends workspace/didChangeConfiguration and refreshes the item", async () => {
  await start();
  const c = client();
  fakes.statusAnswer = { ...LOADING, model: "deepseek-1.3b.gguf", model_name: null };
  mock.changeSettings({ "codecomplete.model": "deepseek-1.3b", "codecomplete.maxTokens": 48 });
  await mock.settle();
  assert.equal(fakes.instances.length, 1, "no restart for a server setting");
  assert.deepEqual(c.notifications, [
    {
      method: "workspace/didChangeConfiguration",
      params: {
        settings: {
          codecomplete: userSet({ model: "deepseek-1.3b", maxTokens: 48 }),
        },
      },
    },
  ]);
  assert.equal(item().text, "$(sync~spin) deepseek-1.3b.gguf · loading");
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
  await tick();
  assert.equal(fakes.instances.length, 2);
  assert.equal(client(0).disposed, true);
  assert.equal(client(1).serverOptions.command, "/usr/local/bin/codecomplete");
  assert.equal(client(1).isRunning(), true);
  assert.deepEqual(client(0).notifications, []);
  assert.equal(statusRequests(1), 1);
  assert.equal(item().text, READY_TEXT);
});

test("the toggle command flips codecomplete.enabled and the item, and the server hears of it", async () => {
  await start();
  fakes.statusAnswer = { ...READY, state: "disabled" };
  await mock.commands.executeCommand(TOGGLE_COMMAND);
  assert.equal(item().text, "$(circle-slash) codellama-7b · disabled", "at once");
  await mock.settle();
  assert.equal(mock.state.global.get("codecomplete.enabled"), false);
  assert.equal(item().text, "$(circle-slash) codellama-7b · disabled");
  assert.match(item().tooltip ?? "", /Click to enable/);
  const sent = client().notifications.at(-1)?.params as { settings: { codecomplete: { enabled: boolean } } };
  assert.equal(sent.settings.codecomplete.enabled, false);

  fakes.statusAnswer = READY;
  await mock.commands.executeCommand(TOGGLE_COMMAND);
  await mock.settle();
  assert.equal(mock.state.global.get("codecomplete.enabled"), true);
  assert.equal(item().text, READY_TEXT);
});

test("restartServer replaces the client, and the new one reads the current settings", async () => {
  await start();
  mock.state.global.set("codecomplete.format", "psm");
  await mock.commands.executeCommand(RESTART_COMMAND);
  await tick();
  assert.equal(fakes.instances.length, 2);
  assert.equal(client(0).disposed, true);
  assert.equal(client(1).isRunning(), true);
  assert.equal((client(1).clientOptions.initializationOptions as { format: string }).format, "psm");
  assert.equal(item().text, READY_TEXT);
});

test("restartServer recovers from a failed start", async () => {
  fakes.startFailure = new Error("spawn codecomplete ENOENT");
  await start();
  fakes.startFailure = undefined;
  await mock.commands.executeCommand(RESTART_COMMAND);
  await tick();
  assert.equal(client(1).isRunning(), true);
  assert.equal(item().text, READY_TEXT);
});

test("notifications from a replaced client are ignored", async () => {
  await start();
  const old = client(0);
  await mock.commands.executeCommand(RESTART_COMMAND);
  await tick();
  old.handlers.get(STATUS_CHANGED)?.({ ...READY, state: "error", error: "old" });
  await tick();
  assert.equal(item().text, READY_TEXT);
});

test("deactivate stops the server and disposing removes the item and any timer", async () => {
  nodeMock.timers.enable({ apis: ["setTimeout"] });
  fakes.statusAnswer = LOADING;
  await start();
  await deactivate();
  assert.equal(client().disposed, true);
  for (const disposable of context.subscriptions) {
    disposable.dispose();
  }
  context.subscriptions = [];
  assert.equal(item().disposed, true);
  const asked = client().requests.length;
  nodeMock.timers.tick(60_000);
  await tick();
  assert.equal(client().requests.length, asked, "no reads after dispose");
});
