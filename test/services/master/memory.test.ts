import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { MemoryTaskStore } from "../../../services/master/src/store/memory-store.js";

// A full collection before each reading, so the delta is what the store keeps, not garbage.
setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

function heapUsedAfterGc(): number {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

describe("master memory", () => {
  it("holds 100,000 queued tasks with small payloads in under 1 KB each", async () => {
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
    assert.equal((await store.stats()).queued, count);
    assert.ok(perTask < 1024, `${perTask.toFixed(0)} bytes per queued task`);
    await store.close();
  });
});
