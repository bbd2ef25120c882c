import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import type { RenderedFiles } from "../../scripts/render/render.js";
import {
  firstDifference,
  readRendered,
  renderAllStacks,
  writeRendered,
} from "../../scripts/render/stacks.js";

let fresh: RenderedFiles;
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "taskfleet-rendered-"));

before(async () => {
  fresh = await renderAllStacks();
});

after(() => fs.rmSync(scratch, { recursive: true, force: true }));

describe("the committed rendered/ folder", () => {
  test("is what npm run render gives for the current program and stack files", () => {
    const difference = firstDifference(fresh, readRendered());
    assert.equal(
      difference,
      undefined,
      `rendered/ is stale: run npm run render and commit rendered/\n${difference}`,
    );
  });
});

describe("the staleness check", () => {
  function copyOfCommitted(): string {
    const dir = fs.mkdtempSync(path.join(scratch, "copy-"));
    writeRendered(fresh, dir);
    return dir;
  }

  test("names the file and line of a value edited since the last render", () => {
    const dir = copyOfCommitted();
    const file = path.join(dir, "prod", "kubernetes.yaml");
    const lines = fs.readFileSync(file, "utf8").split("\n");
    const line = lines.findIndex((text) => /^ {2}maxReplicaCount: \d+$/.test(text));
    assert.notEqual(line, -1, "prod has no autoscaler maxReplicaCount line");
    lines[line] = "  maxReplicaCount: 999";
    fs.writeFileSync(file, lines.join("\n"));
    assert.equal(
      firstDifference(fresh, readRendered(dir)),
      `rendered/prod/kubernetes.yaml:${line + 1} differs\n` +
        `  committed: "  maxReplicaCount: 999"\n` +
        `  rendered:  ${JSON.stringify(fresh.get("prod/kubernetes.yaml")?.split("\n")[line])}`,
    );
  });

  test("reports a stack folder that is missing, and a file no stack renders", () => {
    const dir = copyOfCommitted();
    fs.rmSync(path.join(dir, "dev", "cloud.yaml"));
    assert.equal(firstDifference(fresh, readRendered(dir)), "rendered/dev/cloud.yaml is missing");
    writeRendered(fresh, dir);
    fs.mkdirSync(path.join(dir, "staging"));
    fs.writeFileSync(path.join(dir, "staging", "kubernetes.yaml"), "");
    assert.equal(
      firstDifference(fresh, readRendered(dir)),
      "rendered/staging/kubernetes.yaml belongs to no stack",
    );
  });

  test("passes once the folder is rendered again, which also drops a removed stack's files", () => {
    const dir = copyOfCommitted();
    fs.writeFileSync(path.join(dir, "prod", "cloud.yaml"), "stale\n");
    fs.mkdirSync(path.join(dir, "staging"));
    fs.writeFileSync(path.join(dir, "staging", "cloud.yaml"), "");
    assert.notEqual(firstDifference(fresh, readRendered(dir)), undefined);
    writeRendered(fresh, dir);
    assert.equal(firstDifference(fresh, readRendered(dir)), undefined);
    assert.equal(fs.existsSync(path.join(dir, "staging")), false);
  });
});
