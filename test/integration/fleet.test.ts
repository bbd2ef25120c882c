import * as assert from "node:assert/strict";
import { after, afterEach, before, describe, it } from "node:test";
import { Fleet, type TaskSpec, taskLogs, until } from "./fleet";

// The prime-counting function pi(n - 1), from published tables: independent of the worker's sieve.
const primesBelow: [number, number][] = [
  [10, 4],
  [100, 25],
  [1_000, 168],
  [10_000, 1_229],
  [100_000, 9_592],
];

const fleets: Fleet[] = [];
async function fleet(masterEnv?: Record<string, string>): Promise<Fleet> {
  const started = await Fleet.start(masterEnv);
  fleets.push(started);
  return started;
}
afterEach(async () => {
  await Promise.all(fleets.splice(0).map((f) => f.stop()));
});
after(async () => {
  await Promise.all(fleets.splice(0).map((f) => f.stop()));
});

describe("a master with real worker processes", { timeout: 150_000 }, () => {
  // A fresh clone has no build yet: compiling both services is part of the setup, not of a test.
  before(() => Fleet.build(), { timeout: 120_000 });

  it("runs 1,000 mixed tasks through 3 workers, each recorded once with the right result", async () => {
    const f = await fleet();
    await Promise.all([f.addWorker(), f.addWorker(), f.addWorker()]);
    const specs: TaskSpec[] = [];
    const expected: unknown[] = [];
    for (let i = 0; i < 1000; i++) {
      if (i % 3 === 0) {
        specs.push({ type: "echo", payload: { i, text: `task ${i}` } });
        expected.push({ i, text: `task ${i}` });
      } else if (i % 3 === 1) {
        specs.push({ type: "sleep", payload: { ms: i % 7 } });
        expected.push({ slept: i % 7 });
      } else {
        const [n, count] = primesBelow[i % primesBelow.length] as [number, number];
        specs.push({ type: "cpu", payload: { n } });
        expected.push(count);
      }
    }
    const ids = await f.submit(specs);
    assert.equal(new Set(ids).size, 1000);
    await f.waitForFinished(1000, 30_000);

    for (const [i, id] of ids.entries()) {
      const task = await f.task(id);
      assert.equal(task.status, "succeeded", `task ${i}: ${JSON.stringify(task)}`);
      assert.equal(task.attempts, 1, `task ${i}`);
      assert.deepEqual(task.result, expected[i], `task ${i}`);
    }
    assert.equal(await f.metric("taskfleet_tasks_finished_total", { status: "succeeded" }), 1000);
    assert.equal(await f.metric("taskfleet_tasks_finished_total"), 1000);
    // One ended attempt per task: no completion was counted twice.
    assert.equal(await f.metric("taskfleet_task_attempts_total"), 1000);
    const stats = await f.stats();
    assert.equal(stats.activeWorkers, 3);
    // Every worker took part.
    for (const worker of f.workers) {
      assert.ok(
        worker.logs.some((line) => line.msg === "task done"),
        `${worker.name} ran nothing`,
      );
    }
  });

  it("finishes the tasks of a worker killed with SIGKILL on another worker, none lost or doubled", async () => {
    const sleepMs = 3000;
    const f = await fleet();
    const doomed = await f.addWorker({ CONCURRENCY: "2" });
    // Long enough that the doomed worker cannot finish its two before it is killed, even when a
    // busy machine takes a second or more to start the survivor.
    const ids = await f.submit(
      Array.from({ length: 6 }, (_, i) => ({ type: "sleep", payload: { ms: sleepMs + i } })),
    );
    await until(async () => (await f.stats()).running === 2, 5000);
    const held = [];
    for (const id of ids) if ((await f.task(id)).status === "running") held.push(id);
    assert.equal(held.length, 2);

    const survivor = await f.addWorker({ CONCURRENCY: "2" });
    doomed.child.kill("SIGKILL");
    assert.equal(await doomed.exited, 128 + 9);
    await f.waitForFinished(6, 30_000);

    for (const [i, id] of ids.entries()) {
      const task = await f.task(id);
      assert.equal(task.status, "succeeded");
      assert.deepEqual(task.result, { slept: sleepMs + i });
      // The killed worker's attempt counts once its lease expires; nothing else ran twice.
      assert.equal(task.attempts, held.includes(id) ? 2 : 1, `task ${i}`);
    }
    for (const id of held) {
      assert.equal(taskLogs(survivor, "task done", id).length, 1);
      assert.equal(taskLogs(doomed, "task done", id).length, 0);
    }
    assert.equal(await f.metric("taskfleet_tasks_finished_total"), 6);
    assert.equal(await f.metric("taskfleet_lease_expirations_total"), 2);
  });

  it("lets a worker sent SIGTERM finish its task, take no new one, and exit 0", async () => {
    const f = await fleet();
    // The task outlives a lease (2 s): the worker must keep renewing while it shuts down.
    const leaving = await f.addWorker({ CONCURRENCY: "1", SHUTDOWN_GRACE_SECONDS: "10" });
    const [held] = (await f.submit([{ type: "sleep", payload: { ms: 3000 } }])) as [string];
    await until(async () => (await f.task(held)).status === "running", 5000);
    const staying = await f.addWorker({ CONCURRENCY: "1" });

    leaving.child.kill("SIGTERM");
    await until(
      () => leaving.logs.some((line) => line.msg === "shutting down: leasing stopped"),
      5000,
    );
    const [later] = (await f.submit([{ type: "echo", payload: "after SIGTERM" }])) as [string];
    // A second signal (an impatient operator, or a relay) changes nothing.
    leaving.child.kill("SIGINT");

    assert.equal(await leaving.exited, 0);
    const task = await f.task(held);
    assert.equal(task.status, "succeeded");
    assert.equal(task.attempts, 1);
    assert.deepEqual(task.result, { slept: 3000 });
    assert.equal(taskLogs(leaving, "task done", held).length, 1);
    assert.equal(taskLogs(staying, "task started", held).length, 0);
    assert.ok(leaving.logs.some((line) => line.msg === "shut down" && line.released === 0));
    assert.ok(leaving.logs.some((line) => line.msg === "already shutting down"));

    await f.waitForFinished(2, 5000);
    assert.equal((await f.task(later)).result, "after SIGTERM");
    assert.equal(taskLogs(leaving, "task started", later).length, 0);
    assert.equal(await f.metric("taskfleet_lease_expirations_total"), 0);
  });

  it("marks a task that keeps failing as failed after maxAttempts, with its error", async () => {
    const f = await fleet();
    await f.addWorker();
    const [id] = (await f.submit([
      { type: "fail", payload: { message: "upstream said no" }, maxAttempts: 3 },
    ])) as [string];
    await f.waitForFinished(1, 10_000);
    const task = await f.task(id);
    assert.equal(task.status, "failed");
    assert.equal(task.attempts, 3);
    assert.equal(task.error, "upstream said no");
    assert.equal(await f.metric("taskfleet_tasks_finished_total", { status: "failed" }), 1);
  });
});
