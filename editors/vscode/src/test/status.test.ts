import assert from "node:assert/strict";
import { test } from "node:test";
import { describe, formatMs, modelLabel, type ServerStatus } from "../status";

function status(fields: Partial<ServerStatus>): ServerStatus {
  return {
    model: "codellama-7b",
    backend: "cpu",
    state: "ready",
    latencies_ms: [],
    last_latency_ms: null,
    error: null,
    ...fields,
  };
}

test("ready with a latency shows model and last latency, and the median in the tooltip", () => {
  const view = describe(
    { kind: "status", status: status({ last_latency_ms: 182.4, latencies_ms: [300, 182.4, 120] }) },
    true,
  );
  assert.equal(view.text, "$(check) codellama-7b 182 ms");
  assert.match(view.tooltip, /codellama-7b on cpu/);
  assert.match(view.tooltip, /Last completion: 182 ms/);
  assert.match(view.tooltip, /Median of the last 3: 182 ms/);
  assert.match(view.tooltip, /Click to disable/);
  assert.equal(view.alarming, false);
});

test("ready before any completion shows no latency", () => {
  const view = describe({ kind: "status", status: status({}) }, true);
  assert.equal(view.text, "$(check) codellama-7b");
  assert.doesNotMatch(view.tooltip, /Last completion|Median/);
});

test("loading spins and says so", () => {
  const view = describe({ kind: "status", status: status({ state: "loading", model: "/m/deepseek.gguf" }) }, true);
  assert.equal(view.text, "$(sync~spin) deepseek.gguf");
  assert.match(view.tooltip, /\/m\/deepseek\.gguf on cpu\nLoading the model/);
  assert.equal(view.alarming, false);
});

test("error is alarming and carries the server's message", () => {
  const view = describe(
    { kind: "status", status: status({ state: "error", error: "no such model: foo" }) },
    true,
  );
  assert.equal(view.text, "$(error) codellama-7b");
  assert.match(view.tooltip, /Error: no such model: foo/);
  assert.equal(view.alarming, true);
});

test("disabled by the server or by the setting shows off, with a hint to enable", () => {
  const byServer = describe({ kind: "status", status: status({ state: "disabled" }) }, true);
  const bySetting = describe({ kind: "status", status: status({ last_latency_ms: 50 }) }, false);
  for (const view of [byServer, bySetting]) {
    assert.equal(view.text, "$(circle-slash) codecomplete");
    assert.match(view.tooltip, /completion is off\. Click to enable/);
    assert.equal(view.alarming, false);
  }
});

test("a server that failed to start is alarming and points at serverPath", () => {
  const view = describe({ kind: "failed", message: "the server did not start: spawn nope ENOENT" }, true);
  assert.equal(view.text, "$(error) codecomplete");
  assert.match(view.tooltip, /spawn nope ENOENT/);
  assert.match(view.tooltip, /codecomplete\.serverPath/);
  assert.equal(view.alarming, true);
});

test("starting spins", () => {
  assert.equal(describe({ kind: "starting" }, true).text, "$(sync~spin) codecomplete");
});

test("model paths are shortened to the file name on either separator", () => {
  assert.equal(modelLabel("/home/u/models/codellama-7b.Q4_K_M.gguf"), "codellama-7b.Q4_K_M.gguf");
  assert.equal(modelLabel("C:\\models\\x.gguf"), "x.gguf");
  assert.equal(modelLabel("smollm2"), "smollm2");
});

test("latencies read in ms below a second and in s above", () => {
  assert.equal(formatMs(999.6), "1000 ms");
  assert.equal(formatMs(12.3), "12 ms");
  assert.equal(formatMs(1530), "1.5 s");
});
