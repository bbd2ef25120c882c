import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { measureHeap } from "../src/json-body.js";
import { TASK_OVERHEAD_BYTES } from "../src/limits.js";
import { MemoryTaskStore } from "../src/store/memory-store.js";

// A full collection before each reading, so the delta is what the store keeps, not garbage.
setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

function heapUsedAfterGc(): number {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

describe("master memory", () => {
  it("holds 100,000 queued tasks with small payloads in less than the budget counts for them", async (t) => {
    const store = new MemoryTaskStore({
      leaseSeconds: 30,
      resultTtlSeconds: 3600,
      resultMaxCount: 100_000,
      retryBackoffMs: 1000,
      sweepIntervalMs: 0,
    });
    const count = 100_000;
    const before = heapUsedAfterGc();
    for (let start = 0; start < count; start += 1000) {
      // Parsed from JSON, as the batch route receives them.
      const batch = JSON.parse(
        JSON.stringify(
          Array.from({ length: 1000 }, (_, n) => ({ type: "noop", payload: { n: start + n } })),
        ),
      ) as { type: string; payload: unknown }[];
      await store.submit(batch.map((task) => ({ ...task, maxAttempts: 3, timeoutSeconds: 300 })));
    }
    const perTask = (heapUsedAfterGc() - before) / count;
    const stats = await store.stats();
    assert.equal(stats.queued, count);
    // What MEMORY_BUDGET_BYTES counts per task must cover what a task takes, or the budget
    // would let a flood of tiny tasks past it.
    const countedPerTask = stats.budgetUsedBytes / count;
    assert.ok(countedPerTask > TASK_OVERHEAD_BYTES);
    assert.ok(
      perTask < countedPerTask,
      `${perTask.toFixed(0)} bytes per queued task on the heap, ${countedPerTask.toFixed(0)} counted`,
    );
    t.diagnostic(`${perTask.toFixed(0)} bytes per queued task on the heap`);
    await store.close();
  });

  it("keeps each task's type, maxAttempts and timeoutSeconds, past the shapes it shares too", async () => {
    const store = new MemoryTaskStore({
      leaseSeconds: 30,
      resultTtlSeconds: 3600,
      resultMaxCount: 100,
      retryBackoffMs: 1,
      sweepIntervalMs: 1,
    });
    // 2,000 distinct (type, maxAttempts, timeoutSeconds), more than the store shares (1,024),
    // twice each: a task submitted like an earlier one must not take another's settings.
    const specs = Array.from({ length: 4000 }, (_, i) => ({
      type: `t${(i % 2000) % 7}`,
      payload: i,
      maxAttempts: 1 + ((i % 2000) % 100),
      timeoutSeconds: 1 + Math.floor((i % 2000) / 7),
    }));
    const ids = (await store.submit(specs)).map((outcome) => outcome.id);
    const leased = await store.lease("w", specs.length, 0);
    assert.equal(leased.length, specs.length);
    for (const task of leased) {
      const spec = specs[ids.indexOf(task.id)];
      assert.deepEqual(
        { type: task.type, payload: task.payload, timeoutSeconds: task.timeoutSeconds },
        { type: spec?.type, payload: spec?.payload, timeoutSeconds: spec?.timeoutSeconds },
      );
    }
    // maxAttempts shows in when a task fails: fail each attempt until the task is `failed`.
    const index = specs.findIndex((spec) => spec.maxAttempts === 3);
    const id = ids[index] as string;
    let lease = leased.find((task) => task.id === id);
    for (let attempt = 1; lease !== undefined; attempt++) {
      await store.complete("w", [
        { id, leaseId: lease.leaseId, ok: false, error: "no", retryable: true },
      ]);
      const view = await store.get(id);
      assert.equal(view?.attempts, attempt);
      if (view?.status === "failed") {
        assert.equal(attempt, 3);
        break;
      }
      lease = (await store.lease("w", 1, 5000)).find((task) => task.id === id);
    }
    await store.close();
  });

  // Shapes whose heap size JSON's size undercounts up to 20 times, and ordinary ones: the
  // estimate the memory budget counts must stay close to what V8 takes, and rather above it.
  const n = 20_000;
  const shapes: Record<string, string> = {
    "empty objects": `[${Array(n).fill("{}").join(",")}]`,
    "empty arrays": `[${Array(n).fill("[]").join(",")}]`,
    "objects with keys of their own": `[${Array.from({ length: n }, (_, i) => `{"k${i}":1,"l${i}":2}`).join(",")}]`,
    "one object of many keys": `{${Array.from({ length: n }, (_, i) => `"key${i}":${i}`).join(",")}}`,
    "nested records": `[${Array(n).fill('{"a":{"b":[1,2.5,{"c":null,"d":"text"}]}}').join(",")}]`,
    numbers: `[${Array.from({ length: n }, (_, i) => i * 1.5).join(",")}]`,
    "a long string": JSON.stringify("x".repeat(50 * n)),
    "a long string past Latin-1": JSON.stringify("€".repeat(50 * n)),
  };
  for (const [name, text] of Object.entries(shapes)) {
    it(`estimates the heap of ${name} within a factor of 0.85 to 2`, (t) => {
      const before = heapUsedAfterGc();
      const value: unknown = JSON.parse(text);
      const actual = heapUsedAfterGc() - before;
      const estimate = measureHeap(value, 64) as number;
      const ratio = estimate / actual;
      t.diagnostic(`${text.length} bytes of JSON, ${actual} on the heap, ${estimate} estimated`);
      assert.ok(ratio >= 0.85 && ratio <= 2, `estimate / heap = ${ratio.toFixed(2)}`);
      // Keeps the value alive until measured.
      assert.ok(value !== undefined);
    });
  }
});
