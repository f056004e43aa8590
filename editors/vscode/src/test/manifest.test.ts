import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { SERVER_KEYS } from "../settings";

const root = join(__dirname, "..", "..");
const manifest = require(join(root, "package.json"));
interface Property {
  type?: unknown;
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

test("the manifest's defaults match the server's built-in defaults", () => {
  const defaults = Object.fromEntries(Object.entries(properties).map(([key, p]) => [key, p.default]));
  assert.deepEqual(defaults, {
    "codecomplete.serverPath": "codecomplete",
    "codecomplete.enabled": true,
    "codecomplete.model": null,
    "codecomplete.format": "auto",
    "codecomplete.maxTokens": 128,
    "codecomplete.tokenBudget": 3000,
    "codecomplete.timeBudgetMs": 2000,
    "codecomplete.nGpuLayers": null,
    "codecomplete.languages": {},
  });
});

test("the extension activates after startup and ships what vsce needs without prompting", () => {
  assert.deepEqual(manifest.activationEvents, ["onStartupFinished"]);
  assert.ok(manifest.publisher && manifest.repository && manifest.license === "MIT");
  for (const file of ["README.md", "LICENSE", ".vscodeignore"]) {
    assert.ok(existsSync(join(root, file)), `${file} exists`);
  }
});
