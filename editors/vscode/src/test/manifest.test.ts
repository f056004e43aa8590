import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { SERVER_KEYS } from "../settings";

const root = join(__dirname, "..", "..");
const manifest = require(join(root, "package.json"));
interface Property {
  type?: unknown;
  scope?: string;
  default?: unknown;
  description?: string;
  markdownDescription?: string;
}

const properties: Record<string, Property> = manifest.contributes.configuration.properties;

test("engines.vscode is what the language client requires, and @types/vscode is pinned to it", () => {
  const client = require(join(root, "node_modules", "vscode-languageclient", "package.json"));
  assert.equal(manifest.engines.vscode, client.engines.vscode);
  assert.equal(`^${manifest.devDependencies["@types/vscode"]}`, manifest.engines.vscode);
});

test("main points at the compiled entry point", () => {
  assert.equal(manifest.main, "./out/extension.js");
  assert.ok(existsSync(join(root, manifest.main)));
});

test("every server setting and serverPath is contributed with a type, a default and a description", () => {
  for (const key of [...SERVER_KEYS, "serverPath"]) {
    const property = properties[`codecomplete.${key}`];
    assert.ok(property, `codecomplete.${key} is contributed`);
    assert.ok(property.type, `${key} has a type`);
    assert.ok("default" in property, `${key} has a default`);
    assert.ok(property.description || property.markdownDescription, `${key} has a description`);
  }
  assert.equal(Object.keys(properties).length, SERVER_KEYS.length + 1, "no contributed setting goes unused");
});

// The defaults against the server's own: tests/test_settings_sources.py reads both.

test("the extension activates after startup and ships what vsce needs without prompting", () => {
  assert.deepEqual(manifest.activationEvents, ["onStartupFinished"]);
  assert.ok(manifest.publisher && manifest.repository && manifest.license === "MIT");
  for (const file of ["README.md", "LICENSE", ".vscodeignore"]) {
    assert.ok(existsSync(join(root, file)), `${file} exists`);
  }
});

test("serverPath has machine scope: read from User or Remote settings, never from a workspace", () => {
  // In a remote window (SSH, containers, code-server) VS Code drops machine and machine-overridable settings
  // from the local User settings and reads them from the Remote (Machine) settings; `machine` also keeps a
  // cloned repository's .vscode/settings.json from choosing the executable this extension spawns.
  assert.equal(properties["codecomplete.serverPath"].scope, "machine");
});
