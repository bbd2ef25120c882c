import * as assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { describe, it } from "node:test";
import { pathToFileURL } from "node:url";
import { loadTaskCatalog } from "../src/tasks/registry.js";
import { harness } from "./helpers.js";

const { fakeMaster, worker, scratch } = harness();

/**
 * A task folder whose one type, `slow`, takes `loadMs` to load (as every task file does on a busy
 * machine, where starting a thread costs seconds) and then appends the time to `<folder>/loads`,
 * once per thread that loads it (and once for the main thread's catalog).
 */
function slowToLoadTasks(loadMs: number): { directory: string; loads: () => number[] } {
  const directory = scratch();
  const loads = path.join(directory, "loads");
  const echo = pathToFileURL(path.join(import.meta.dirname, "../src/tasks/echo.ts")).href;
  writeFileSync(path.join(directory, "package.json"), JSON.stringify({ type: "module" }));
  writeFileSync(
    path.join(directory, "slow.ts"),
    [
      `import { appendFileSync } from "node:fs";`,
      `await new Promise((resolve) => setTimeout(resolve, ${loadMs}));`,
      `appendFileSync(${JSON.stringify(loads)}, \`\${Date.now()}\\n\`);`,
      `import echo from ${JSON.stringify(echo)};`,
      // Echo runs inline, where no thread would load it: this type runs on the threads.
      `export default { ...echo, isolation: "thread" };`,
    ].join("\n"),
  );
  return {
    directory,
    loads: () => readFileSync(loads, "utf8").trim().split("\n").map(Number),
  };
}

describe("task threads", () => {
  it("are all started, their task files loaded, before the worker leases a task", async () => {
    const concurrency = 4;
    const tasks = slowToLoadTasks(400);
    const master = await fakeMaster();
    const ids = Array.from({ length: concurrency }, (_, i) => master.add("slow", i));
    const { logs } = await worker(master, {
      concurrency,
      tasks: await loadTaskCatalog(tasks.directory),
    });
    await master.until(() => master.finished().length === concurrency);

    // Leased while its thread was still loading, a task would sit `running` on the master with
    // its lease running out, doing nothing.
    const firstLease = master.callsTo("lease")[0]?.at ?? 0;
    const threadLoads = tasks.loads().slice(1);
    assert.equal(threadLoads.length, concurrency, "one load per thread, and no thread more");
    assert.ok(
      threadLoads.every((loadedAt) => loadedAt <= firstLease),
      `first lease at ${firstLease}, threads loaded at ${threadLoads}`,
    );
    for (const id of ids) {
      assert.equal(master.tasks.get(id)?.status, "succeeded");
      assert.equal(master.tasks.get(id)?.attempts, 1);
    }
    assert.ok(
      logs.some((line) => line.msg === "task threads ready" && line.threads === concurrency),
    );
  });
});
