/** The real vscode-languageclient (under the mocked vscode), to check what it does with our options. */
import assert from "node:assert/strict";
import { test } from "node:test";
import type * as lc from "vscode-languageclient/node";
import { clientOptions, serverOptions } from "../server";
import * as fake from "./fakeLanguageClient";
import * as mock from "./vscodeMock";

const real: typeof lc = require("vscode-languageclient/node");

function build(): lc.LanguageClient {
  const output = mock.window.createOutputChannel("codecomplete") as unknown as import("vscode").LogOutputChannel;
  const options = clientOptions(output);
  return new real.LanguageClient("codecomplete", "codecomplete", serverOptions("codecomplete"), options);
}

test("the real client accepts our options on the oldest VS Code the manifest allows", () => {
  assert.ok(build());
});

test("the real client refuses an older VS Code, so the check above is a real one", () => {
  const declared = mock.version;
  mock.setVersion("1.90.0");
  try {
    assert.throws(build, /requires VS Code version/);
  } finally {
    mock.setVersion(declared);
  }
});

test("the real client announces textDocument/inlineCompletion to the server", () => {
  const feature = build().getFeature("textDocument/inlineCompletion");
  assert.ok(feature, "inline completion feature is built in");
  const capabilities: lc.ClientCapabilities = {};
  feature.fillClientCapabilities(capabilities);
  assert.deepEqual(capabilities.textDocument?.inlineCompletion, { dynamicRegistration: true });
});

test("the fake client's states match the real ones", () => {
  for (const name of ["Stopped", "Running", "Starting", "StartFailed"] as const) {
    assert.equal(fake.State[name], real.State[name], name);
  }
});
