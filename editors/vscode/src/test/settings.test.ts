import assert from "node:assert/strict";
import { homedir } from "node:os";
import { join } from "node:path";
import { beforeEach, test } from "node:test";
import { configurationChangeParams, SERVER_KEYS, serverPath, serverSettings, toggleEnabled } from "../settings";
import * as mock from "./vscodeMock";
import { userSet } from "./expected";

beforeEach(() => mock.reset());

test("with nothing set every server setting is null, so the server keeps its config file and defaults", () => {
  const settings = serverSettings();
  assert.deepEqual(Object.keys(settings).sort(), [...SERVER_KEYS].sort());
  for (const key of SERVER_KEYS) {
    assert.equal(settings[key], null, key);
  }
  assert.equal(serverPath(), "codecomplete");
});

test("settings the user set are sent with their values, and serverPath never is", () => {
  mock.state.global.set("codecomplete.model", "/models/codellama-7b.Q4_K_M.gguf");
  mock.state.global.set("codecomplete.maxTokens", 64);
  mock.state.global.set("codecomplete.languages", { markdown: false });
  mock.state.global.set("codecomplete.serverPath", "/opt/cc/bin/codecomplete");
  mock.state.workspace.set("codecomplete.format", "spm");
  mock.state.workspace.set("codecomplete.maxTokens", 32);
  assert.deepEqual(serverSettings(), userSet({ model: "/models/codellama-7b.Q4_K_M.gguf", format: "spm", maxTokens: 32, languages: { markdown: false } }));
  assert.equal(serverPath(), "/opt/cc/bin/codecomplete");
});

test("a setting explicitly set to its default value is still sent", () => {
  mock.state.global.set("codecomplete.enabled", true);
  mock.state.global.set("codecomplete.nGpuLayers", 0);
  assert.equal(serverSettings().enabled, true);
  assert.equal(serverSettings().nGpuLayers, 0);
});

test("the change notification nests the settings under codecomplete", () => {
  mock.state.global.set("codecomplete.timeBudgetMs", 500);
  const params = configurationChangeParams();
  assert.deepEqual(Object.keys(params.settings), ["codecomplete"]);
  assert.equal(params.settings.codecomplete.timeBudgetMs, 500);
});

test("a blank serverPath falls back to codecomplete on PATH", () => {
  mock.state.global.set("codecomplete.serverPath", "  ");
  assert.equal(serverPath(), "codecomplete");
});

test("toggle flips enabled in the user settings", async () => {
  assert.equal(await toggleEnabled(), false);
  assert.equal(mock.state.global.get("codecomplete.enabled"), false);
  assert.equal(await toggleEnabled(), true);
  assert.equal(mock.state.global.get("codecomplete.enabled"), true);
  assert.equal(mock.state.workspace.has("codecomplete.enabled"), false);
});

test("toggle writes to the workspace when the workspace overrides enabled", async () => {
  mock.state.global.set("codecomplete.enabled", true);
  mock.state.workspace.set("codecomplete.enabled", false);
  assert.equal(await toggleEnabled(), true);
  assert.equal(mock.state.workspace.get("codecomplete.enabled"), true);
  assert.equal(mock.state.global.get("codecomplete.enabled"), true);
});

test("serverPath is a machine setting: a workspace cannot point it at an executable of its own", () => {
  mock.state.workspace.set("codecomplete.serverPath", "./evil");
  assert.equal(serverPath(), "codecomplete");
  mock.state.global.set("codecomplete.serverPath", "/opt/cc/bin/codecomplete");
  assert.equal(serverPath(), "/opt/cc/bin/codecomplete");
});

test("a serverPath under ~/ is taken from the home directory", () => {
  mock.state.global.set("codecomplete.serverPath", "~/.local/bin/codecomplete");
  assert.equal(serverPath(), join(homedir(), ".local/bin/codecomplete"));
});
