import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import { harness } from "./helpers.js";

const { fakeMaster, worker } = harness();

/** The master refuses bodies over its limit; `complete` adds 4 KiB of envelope to a result. */
const maxResultBytes = 10_000;
const bodyLimitBytes = maxResultBytes + 4096;

describe("worker result limits", () => {
  it("fails a task whose result is over MAX_RESULT_BYTES at once, saying so, and sends the rest", async () => {
    const master = await fakeMaster();
    master.bodyLimitBytes = bodyLimitBytes;
    const tooBig = master.add("big", { chars: 20_000 }, { maxAttempts: 3 });
    const fits = master.add("big", { chars: 5_000 });
    await worker(master, { maxResultBytes });
    await master.until(() => master.finished().length === 2);
    const task = master.tasks.get(tooBig);
    assert.equal(task?.status, "failed");
    assert.equal(task?.attempts, 1);
    assert.equal(
      task?.error,
      "the handler's result is at least 20002 bytes of JSON, more than the 10000 this worker may send (MAX_RESULT_BYTES)",
    );
    assert.equal(master.tasks.get(fits)?.result, "x".repeat(5_000));
    assert.ok(master.bodyBytes.every(({ bytes }) => bytes <= bodyLimitBytes));
  });

  it("splits completions so that no request is over the master's body limit", async () => {
    const master = await fakeMaster();
    master.bodyLimitBytes = bodyLimitBytes;
    // Slow answers let results pile up, so that one request could carry many.
    master.answerDelayMs.complete = 100;
    for (let i = 0; i < 24; i++) master.add("big", { chars: 4_000 });
    await worker(master, { maxResultBytes });
    await master.until(() => master.finished().length === 24);
    for (const task of master.tasks.values()) assert.equal(task.status, "succeeded");
    const completes = master.bodyBytes.filter(({ route }) => route === "complete");
    const largest = Math.max(...completes.map(({ bytes }) => bytes));
    assert.ok(largest <= bodyLimitBytes, `a complete request of ${largest} bytes`);
    assert.ok(
      master.callsTo("complete").some((call) => (call.body.results as unknown[]).length > 1),
      "results were not batched at all",
    );
  });

  it("stops leasing while results it cannot deliver fill RESULT_BUFFER_BYTES, then catches up", async () => {
    const master = await fakeMaster();
    master.failWith = 503;
    master.failRoutes = ["complete"];
    for (let i = 0; i < 40; i++) master.add("big", { chars: 5_000 });
    const { logs } = await worker(master, { concurrency: 2, resultBufferBytes: 20_000 });
    await master.until(() =>
      logs.some(
        (line) =>
          line.msg === "results waiting for the master fill RESULT_BUFFER_BYTES; leasing paused",
      ),
    );
    await new Promise((resolve) => setTimeout(resolve, 500));
    const leased = [...master.tasks.values()].filter((task) => task.attempts > 0).length;
    // Four results of 5 KB fill 20,000 bytes; two more may have been running by then.
    assert.ok(leased >= 4 && leased <= 6, `${leased} tasks leased`);
    master.failWith = undefined;
    await master.until(() => master.finished().length === 40, 20_000);
    for (const task of master.tasks.values()) assert.equal(task.status, "succeeded");
  });
});
