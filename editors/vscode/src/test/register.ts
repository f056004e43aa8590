/**
 * Loaded with `node --require` before the tests: makes `require("vscode")` return the mock, and gives the
 * extension's own modules (out/*.js) the fake language client unless a test asks for the real one. Everything
 * else, including the real vscode-languageclient when a test loads it, resolves as usual.
 */
import Module = require("node:module");
import { dirname, join } from "node:path";

type Resolve = (request: string, parent: { filename?: string } | undefined, ...rest: unknown[]) => string;

const loader = Module as unknown as { _resolveFilename: Resolve };
const resolve = loader._resolveFilename;
const extensionDir = join(__dirname, "..");
let fakeClient = true;

/** Let the extension load the real vscode-languageclient (call before the extension is first required). */
export function useRealLanguageClient(): void {
  fakeClient = false;
}

loader._resolveFilename = function (request, parent, ...rest) {
  if (request === "vscode") {
    return join(__dirname, "vscodeMock.js");
  }
  const fromExtension = parent?.filename !== undefined && dirname(parent.filename) === extensionDir;
  if (fakeClient && fromExtension && request === "vscode-languageclient/node") {
    return join(__dirname, "fakeLanguageClient.js");
  }
  return resolve.call(this, request, parent, ...rest);
};
