import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { api, FakeClock, type Leased, leaseTasks, startApp, submit, worker } from "./helper.js";

const LEASE_MS = 30_000;

function ok(task: Leased | undefined, result: unknown = null) {
  return { id: task?.id, leaseId: task?.leaseId, ok: true, result };
}
function fail(task: Leased | undefined, error: string, retryable = true) {
  return { id: task?.id, leaseId: task?.leaseId, ok: false, error, retryable };
}

// What a store does with leases (expiry, renewal, stale completions, release, retries) is tested
// once, against every store, in store-contract.ts. These tests hold what the HTTP API adds: long
// polls over a request, the answers' shapes, the environment reaching the store, and lease theft
// attempted as an outsider would (docs/api.md, "Limits").
describe("leases over the worker API", () => {
  it("wakes a waiting long poll as soon as a task is queued", async (t) => {
    const { app } = startApp(t);
    const started = performance.now();
    const polling = leaseTasks(app, 4, 30_000);
    await new Promise((resolve) => setTimeout(resolve, 20));
    const id = await submit(app, { type: "echo", payload: 1 });
    const leased = await polling;
    const elapsedMs = performance.now() - started;
    assert.deepEqual(
      leased.map((task) => [task.id, task.attempt]),
      [[id, 1]],
    );
    assert.ok(elapsedMs < 1000, `answered after ${elapsedMs} ms`);
  });

  it("answers a long poll with no tasks when nothing arrives in waitMs", async (t) => {
    const { app } = startApp(t);
    const started = performance.now();
    const res = await worker(app, "lease", { workerId: "w1", max: 1, waitMs: 200 });
    const elapsedMs = performance.now() - started;
    assert.deepEqual(res.json(), { tasks: [], leaseSeconds: 30 });
    assert.ok(elapsedMs >= 190, `answered after ${elapsedMs} ms`);
  });

  it("leases the worker's next tasks in a completion's answer when it carries a lease", async (t) => {
    const { app, store } = startApp(t);
    const tasks = Array.from({ length: 5 }, (_, n) => ({ type: "echo", payload: n }));
    await api(app, "POST", "/v1/tasks/batch", { tasks });
    const [first] = await leaseTasks(app, 1);
    const res = await worker(app, "complete", {
      workerId: "w1",
      results: [ok(first, "done")],
      lease: { max: 3, slots: 4 },
    });
    assert.equal(res.statusCode, 200);
    const answer = res.json();
    assert.deepEqual(answer.accepted, [first?.id]);
    assert.deepEqual(answer.rejected, []);
    assert.equal(answer.lease.leaseSeconds, 30);
    assert.deepEqual(
      answer.lease.tasks.map((task: Leased) => task.payload),
      [1, 2, 3],
    );
    // Leased as by /lease: running under w1's leases, which complete them.
    const done = await worker(app, "complete", {
      workerId: "w1",
      results: answer.lease.tasks.map((task: Leased) => ok(task)),
      lease: { max: 4 },
    });
    assert.equal(done.json().accepted.length, 3);
    assert.deepEqual(
      done.json().lease.tasks.map((task: Leased) => task.payload),
      [4],
    );
    assert.equal((await store.stats()).workerSlots, 4);
    // Nothing queued: an empty lease at once, never a wait.
    const started = performance.now();
    const empty = await worker(app, "complete", { workerId: "w1", results: [], lease: { max: 4 } });
    assert.deepEqual(empty.json().lease, { tasks: [], leaseSeconds: 30 });
    assert.ok(performance.now() - started < 1000);
  });

  it("answers a completion without a lease while draining, and refuses a lease out of range", async (t) => {
    const { app, store } = startApp(t);
    const id = await submit(app, { type: "echo", payload: 1 });
    await submit(app, { type: "echo", payload: 2 });
    const bad = await worker(app, "complete", { workerId: "w1", results: [], lease: { max: 0 } });
    assert.equal(bad.statusCode, 400);
    assert.equal(bad.json().message, "body/lease/max must be >= 1");
    const [held] = await leaseTasks(app, 1);
    assert.equal(held?.id, id);
    store.drain();
    const res = await worker(app, "complete", {
      workerId: "w1",
      results: [ok(held)],
      lease: { max: 4 },
    });
    assert.equal(res.statusCode, 200);
    assert.deepEqual(res.json(), { accepted: [id], rejected: [] });
  });

  it("rejects a completion for a task it does not know", async (t) => {
    const { app } = startApp(t);
    const res = await worker(app, "complete", {
      workerId: "w1",
      results: [{ id: "nope", leaseId: "1", ok: true }],
    });
    assert.deepEqual(res.json(), { accepted: [], rejected: [{ id: "nope", reason: "not_found" }] });
  });
});

describe("lease ownership", () => {
  it("does not let a guessed lease id complete another worker's live lease", async (t) => {
    const { app } = startApp(t);
    const id = await submit(app, { type: "echo", payload: 1 });
    await leaseTasks(app, 1, 0, "victim");
    // What used to work at the first try: lease ids were "1", "2", ... in base 36.
    const guesses = Array.from({ length: 100 }, (_, n) => ({
      id,
      leaseId: (n + 1).toString(36),
      ok: true,
      result: "forged",
    }));
    for (const workerId of ["victim", "attacker"]) {
      const res = await worker(app, "complete", { workerId, results: guesses });
      assert.deepEqual(res.json().accepted, []);
    }
    const task = (await api(app, "GET", `/v1/tasks/${id}`)).json();
    assert.equal(task.status, "running");
    assert.equal(task.result, undefined);
  });

  it("refuses another worker's lease on complete and release, and changes nothing", async (t) => {
    const { app } = startApp(t);
    const id = await submit(app, { type: "echo", payload: 1 });
    const [held] = await leaseTasks(app, 1, 0, "owner");
    const refs = [{ id, leaseId: held?.leaseId }];
    const release = await worker(app, "release", { workerId: "thief", leases: refs });
    assert.deepEqual(release.json(), { released: [] });
    const complete = await worker(app, "complete", {
      workerId: "thief",
      results: [ok(held, "forged")],
    });
    assert.deepEqual(complete.json(), { accepted: [], rejected: [{ id, reason: "lease_lost" }] });
    const running = (await api(app, "GET", `/v1/tasks/${id}`)).json();
    assert.equal(running.status, "running");
    assert.equal(running.attempts, 1);
    // The owner's result is the one that counts, and the thief cannot pass for its repetition.
    const done = await worker(app, "complete", { workerId: "owner", results: [ok(held, "real")] });
    assert.deepEqual(done.json().accepted, [id]);
    const again = await worker(app, "complete", { workerId: "thief", results: [ok(held, "x")] });
    assert.deepEqual(again.json(), { accepted: [], rejected: [{ id, reason: "lease_lost" }] });
    assert.equal((await api(app, "GET", `/v1/tasks/${id}`)).json().result, "real");
  });

  it("reports another worker's lease as lost on renew, without extending it", async (t) => {
    const clock = new FakeClock();
    const { app, store } = startApp(t, { store: { now: clock.now } });
    const id = await submit(app, { type: "echo", payload: 1 });
    const [held] = await leaseTasks(app, 1, 0, "owner");
    clock.advance(LEASE_MS - 1000);
    const renew = await worker(app, "renew", {
      workerId: "thief",
      leases: [{ id, leaseId: held?.leaseId }],
    });
    assert.deepEqual(renew.json(), { renewed: [], lost: [id], leaseSeconds: 30 });
    clock.advance(1000);
    store.sweep();
    const task = (await api(app, "GET", `/v1/tasks/${id}`)).json();
    assert.equal(task.status, "queued");
    assert.match(task.error, /lost its lease/);
  });
});

describe("retries", () => {
  it("retries a failed attempt after a backoff, then fails the task with the last error", async (t) => {
    const clock = new FakeClock();
    const { app } = startApp(t, {
      env: { RETRY_BACKOFF_MS: "1000" },
      // Jitter at its top: the full exponential delay.
      store: { now: clock.now, random: () => 0.999999 },
    });
    const id = await submit(app, { type: "flaky", payload: 1, maxAttempts: 3 });
    const backoffs = [1000, 2000];
    for (const [attempt, backoff] of backoffs.entries()) {
      const [task] = await leaseTasks(app);
      assert.equal(task?.attempt, attempt + 1);
      await worker(app, "complete", {
        workerId: "w1",
        results: [fail(task, `boom ${attempt + 1}`)],
      });
      const waiting = (await api(app, "GET", `/v1/tasks/${id}`)).json();
      assert.equal(waiting.status, "queued");
      assert.equal(waiting.error, `boom ${attempt + 1}`);
      assert.equal((await api(app, "GET", "/v1/stats")).json().delayed, 1);
      clock.advance(backoff - 1);
      assert.deepEqual(await leaseTasks(app), [], `attempt ${attempt + 2} came early`);
      clock.advance(1);
    }
    const [last] = await leaseTasks(app);
    assert.equal(last?.attempt, 3);
    const done = await worker(app, "complete", { workerId: "w1", results: [fail(last, "boom 3")] });
    assert.deepEqual(done.json().accepted, [id]);
    const task = (await api(app, "GET", `/v1/tasks/${id}`)).json();
    assert.equal(task.status, "failed");
    assert.equal(task.attempts, 3);
    assert.equal(task.error, "boom 3");
    assert.equal((await api(app, "GET", "/v1/stats")).json().failed, 1);
  });
});
