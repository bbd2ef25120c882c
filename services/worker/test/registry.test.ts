import * as assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { describe, it } from "node:test";
import { countPrimesBelow } from "../src/tasks/cpu.js";
import { loadTaskCatalog, loadTaskRegistry } from "../src/tasks/registry.js";

const taskModule = path.resolve(import.meta.dirname, "../src/task.ts");

describe("task registry", () => {
  it("registers every built-in task file under its file name", async () => {
    const registry = await loadTaskRegistry();
    assert.deepEqual([...registry.keys()], ["cpu", "echo", "fail", "sleep"]);
  });

  it("picks up a new task type from a new file, and skips files starting with _", async () => {
    const directory = await mkdtemp(path.join(os.tmpdir(), "taskfleet-tasks-"));
    try {
      const source = `import { defineTask, z } from ${JSON.stringify(taskModule)};
export default defineTask({ payload: z.object({ a: z.number() }), run: ({ a }) => a * 2 });
`;
      await writeFile(path.join(directory, "double.ts"), source);
      await writeFile(path.join(directory, "_helpers.ts"), "export const x = 1;\n");
      await writeFile(path.join(directory, "notes.md"), "not a task\n");
      const registry = await loadTaskRegistry(directory);
      assert.deepEqual([...registry.keys()], ["double"]);
      const double = registry.get("double");
      const controller = new AbortController();
      assert.equal(
        await double?.run({ a: 21 }, { signal: controller.signal, id: "t", attempt: 1 }),
        42,
      );
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  });

  it("keeps the handlers declared inline in the catalog, and refuses an unknown isolation", async () => {
    const catalog = await loadTaskCatalog();
    assert.deepEqual([...catalog.inline.keys()], ["echo"]);
    const directory = await mkdtemp(path.join(os.tmpdir(), "taskfleet-tasks-"));
    try {
      const source = `import { defineTask, z } from ${JSON.stringify(taskModule)};
export default defineTask({ payload: z.null(), run: () => 1, isolation: "process" });
`;
      await writeFile(path.join(directory, "elsewhere.ts"), source);
      await assert.rejects(
        loadTaskRegistry(directory),
        /task file elsewhere\.ts: isolation must be "thread" or "inline" \(got "process"\)/,
      );
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  });

  it("refuses a task file that does not export a handler, naming the file", async () => {
    const directory = await mkdtemp(path.join(os.tmpdir(), "taskfleet-tasks-"));
    try {
      await writeFile(path.join(directory, "broken.ts"), "export const run = () => 1;\n");
      await assert.rejects(loadTaskRegistry(directory), /task file broken\.ts must default-export/);
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  });
});

describe("cpu task", () => {
  it("counts the primes below n", () => {
    // Reference values of the prime-counting function pi(n - 1).
    const known: [number, number][] = [
      [1, 0],
      [2, 0],
      [3, 1],
      [10, 4],
      [11, 4],
      [12, 5],
      [1_000, 168],
      [262_145, 23_000],
      [1_000_000, 78_498],
      [10_000_000, 664_579],
    ];
    for (const [n, count] of known) assert.equal(countPrimesBelow(n), count, `n = ${n}`);
  });
});
