/** The check that runs before a client is started: is serverPath something spawn() can run? */
import assert from "node:assert/strict";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { whyNotExecutable } from "../server";

const dir = mkdtempSync(join(tmpdir(), "codecomplete-path-"));
const bin = join(dir, "bin");
mkdirSync(bin);
writeFileSync(join(bin, "codecomplete"), "#!/bin/sh\n");
chmodSync(join(bin, "codecomplete"), 0o755);
writeFileSync(join(dir, "plain"), "");
chmodSync(join(dir, "plain"), 0o644);

after(() => rmSync(dir, { recursive: true, force: true }));

test("an executable file given by path, or found on PATH, passes", async () => {
  assert.equal(await whyNotExecutable(join(bin, "codecomplete"), { PATH: "" }, "linux"), undefined);
  assert.equal(await whyNotExecutable("codecomplete", { PATH: `/nonexistent:${bin}` }, "linux"), undefined);
});

test("each way of being unusable is named", async () => {
  assert.equal(await whyNotExecutable("codecomplete", { PATH: dir }, "linux"), '"codecomplete" was not found on PATH');
  assert.equal(await whyNotExecutable(join(dir, "nope")), `"${join(dir, "nope")}" does not exist`);
  assert.equal(await whyNotExecutable(join(dir, "plain")), `"${join(dir, "plain")}" is not executable`);
  assert.equal(await whyNotExecutable(bin), `"${bin}" is not a file`);
});
