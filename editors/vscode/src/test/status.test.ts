import assert from "node:assert/strict";
import { test } from "node:test";
import { describe, displayName, formatMs, isLoading, isReady, MAX_LABEL, modelLabel, type ServerStatus } from "../status";

function status(fields: Partial<ServerStatus>): ServerStatus {
  return {
    state: "ready",
    error: null,
    model: "/models/codellama-7b.Q4_K_M.gguf",
    model_name: "codellama-7b",
    family: "codellama",
    backend: "cpu",
    latencies_ms: [],
    last_latency_ms: null,
    notice: null,
    ...fields,
  };
}

test("ready with a latency: model name, state and last latency; the median in the tooltip", () => {
  const view = describe(
    { kind: "status", status: status({ last_latency_ms: 182.4, latencies_ms: [300, 182.4, 120] }) },
    true,
  );
  assert.equal(view.text, "$(check) codellama-7b · ready · 182 ms");
  assert.match(view.tooltip, /^codecomplete: ready\n/);
  assert.match(view.tooltip, /Model: codellama-7b \(\/models\/codellama-7b\.Q4_K_M\.gguf\)/);
  assert.match(view.tooltip, /Family: codellama\nBackend: cpu/);
  assert.match(view.tooltip, /Last completion: 182 ms; median of the last 3: 182 ms/);
  assert.match(view.tooltip, /Click to disable/);
  assert.equal(view.alarming, false);
});

test("ready before any completion shows no latency", () => {
  const view = describe({ kind: "status", status: status({}) }, true);
  assert.equal(view.text, "$(check) codellama-7b · ready");
  assert.doesNotMatch(view.tooltip, /Last completion|median/);
});

test("the notice is in the tooltip, where the user reads which setting to change", () => {
  const notice = "No suggestion: the model needed more than codecomplete.timeBudgetMs (2000 ms). Raise it.";
  const view = describe({ kind: "status", status: status({ last_latency_ms: 2100, notice }) }, true);
  assert.equal(view.text, "$(check) codellama-7b · ready · 2.1 s");
  assert.ok(view.tooltip.includes(notice));
});

test("loading spins and says so; before the model is known the item names the extension", () => {
  const view = describe(
    { kind: "status", status: status({ state: "loading", model: "/m/deepseek.gguf", model_name: null }) },
    true,
  );
  assert.equal(view.text, "$(sync~spin) deepseek.gguf · loading");
  assert.match(view.tooltip, /^codecomplete: loading the model…\nModel: \/m\/deepseek\.gguf/);
  assert.equal(view.alarming, false);
  const early = describe({ kind: "status", status: { state: "loading", model: null } }, true);
  assert.equal(early.text, "$(sync~spin) codecomplete · loading");
});

test("idle (the load has not begun) and no answer yet both read as starting", () => {
  assert.equal(describe({ kind: "status", status: { state: "idle" } }, true).text, "$(sync~spin) codecomplete · starting");
  assert.equal(describe({ kind: "starting" }, true).text, "$(sync~spin) codecomplete · starting");
});

test("error is alarming and carries the server's message", () => {
  const view = describe({ kind: "status", status: status({ state: "error", error: "no such model: foo" }) }, true);
  assert.equal(view.text, "$(error) codellama-7b · error");
  assert.match(view.tooltip, /Error: no such model: foo/);
  assert.equal(view.alarming, true);
});

test("disabled by the server or by the setting shows off, with a hint to enable", () => {
  const byServer = describe({ kind: "status", status: status({ state: "disabled" }) }, true);
  const bySetting = describe({ kind: "status", status: status({ last_latency_ms: 50 }) }, false);
  for (const view of [byServer, bySetting]) {
    assert.equal(view.text, "$(circle-slash) codellama-7b · disabled");
    assert.match(view.tooltip, /completion is off\./);
    assert.match(view.tooltip, /Click to enable/);
    assert.equal(view.alarming, false);
  }
});

test("a state this extension does not know is shown as it comes", () => {
  const view = describe({ kind: "status", status: status({ state: "downloading" }) }, true);
  assert.equal(view.text, "$(question) codellama-7b · downloading");
});

test("a server that failed to start is alarming and points at serverPath", () => {
  const view = describe({ kind: "failed", message: "the server did not start: spawn nope ENOENT" }, true);
  assert.equal(view.text, "$(error) codecomplete · error");
  assert.match(view.tooltip, /spawn nope ENOENT/);
  assert.match(view.tooltip, /codecomplete\.serverPath/);
  assert.equal(view.alarming, true);
});

test("model paths are shortened to the file name on either separator", () => {
  assert.equal(modelLabel("/home/u/models/codellama-7b.Q4_K_M.gguf"), "codellama-7b.Q4_K_M.gguf");
  assert.equal(modelLabel("C:\\models\\x.gguf"), "x.gguf");
  assert.equal(modelLabel("smollm2"), "smollm2");
});

test("the item prefers the model's own name and keeps it short", () => {
  assert.equal(displayName({ state: "ready", model_name: "Smollm2 135M", model: "/m/s.gguf" }), "Smollm2 135M");
  assert.equal(displayName({ state: "ready", model_name: "", model: "/m/s.gguf" }), "s.gguf");
  assert.equal(displayName({ state: "ready" }), "codecomplete");
  const long = displayName({ state: "ready", model_name: "Smollm2 135M 8k Lc100K Mix1 Ep2 Instruct Q4" });
  assert.equal(long.length, MAX_LABEL);
  assert.ok(long.endsWith("…"));
});

test("loading and ready are told apart for the re-trigger", () => {
  assert.equal(isLoading({ kind: "starting" }), true);
  assert.equal(isLoading({ kind: "status", status: { state: "idle" } }), true);
  assert.equal(isLoading({ kind: "status", status: { state: "loading" } }), true);
  assert.equal(isLoading({ kind: "status", status: { state: "ready" } }), false);
  assert.equal(isLoading({ kind: "failed", message: "x" }), false);
  assert.equal(isReady({ kind: "status", status: { state: "ready" } }), true);
  assert.equal(isReady({ kind: "status", status: { state: "disabled" } }), false);
});

test("latencies read in ms below a second and in s above", () => {
  assert.equal(formatMs(999.6), "1000 ms");
  assert.equal(formatMs(12.3), "12 ms");
  assert.equal(formatMs(1530), "1.5 s");
});
