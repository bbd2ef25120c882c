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

describe("leases", () => {
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

  it("hands a queued task to one worker only", async (t) => {
    const { app } = startApp(t);
    await submit(app, { type: "echo", payload: 1 });
    const [a, b] = await Promise.all([leaseTasks(app, 1, 100, "a"), leaseTasks(app, 1, 100, "b")]);
    assert.equal((a?.length ?? 0) + (b?.length ?? 0), 1);
  });

  it("puts a task whose lease ran out back in the queue, counting the attempt", async (t) => {
    const clock = new FakeClock();
    const { app, store } = startApp(t, { store: { now: clock.now } });
    const id = await submit(app, { type: "echo", payload: 1 });
    const [first] = await leaseTasks(app);
    clock.advance(LEASE_MS - 1);
    store.sweep();
    assert.equal((await api(app, "GET", `/v1/tasks/${id}`)).json().status, "running");
    clock.advance(1);
    store.sweep();
    const task = (await api(app, "GET", `/v1/tasks/${id}`)).json();
    assert.equal(task.status, "queued");
    assert.equal(task.attempts, 1);
    assert.match(task.error, /lost its lease/);
    const [second] = await leaseTasks(app);
    assert.equal(second?.id, id);
    assert.equal(second?.attempt, 2);
    assert.notEqual(second?.leaseId, first?.leaseId);
  });

  it("keeps a renewed lease alive past its first term", async (t) => {
    const clock = new FakeClock();
    const { app, store } = startApp(t, { store: { now: clock.now } });
    await submit(app, { type: "echo", payload: 1 });
    const [task] = await leaseTasks(app);
    clock.advance(LEASE_MS - 1000);
    const renew = await worker(app, "renew", {
      workerId: "w1",
      leases: [{ id: task?.id, leaseId: task?.leaseId }],
    });
    assert.deepEqual(renew.json(), { renewed: [task?.id], lost: [], leaseSeconds: 30 });
    clock.advance(LEASE_MS - 1000);
    store.sweep();
    const done = await worker(app, "complete", { workerId: "w1", results: [ok(task, 7)] });
    assert.deepEqual(done.json(), { accepted: [task?.id], rejected: [] });
  });

  it("reports an expired lease as lost on renewal, even before the sweep has run", async (t) => {
    const clock = new FakeClock();
    const { app } = startApp(t, { store: { now: clock.now } });
    await submit(app, { type: "echo", payload: 1 });
    const [task] = await leaseTasks(app);
    clock.advance(LEASE_MS);
    const renew = await worker(app, "renew", {
      workerId: "w1",
      leases: [
        { id: task?.id, leaseId: task?.leaseId },
        { id: "unknown", leaseId: "1" },
      ],
    });
    assert.deepEqual(renew.json(), { renewed: [], lost: [task?.id, "unknown"], leaseSeconds: 30 });
  });

  it("rejects a late completion from an expired lease without touching the result or counts", async (t) => {
    const clock = new FakeClock();
    const { app, store } = startApp(t, { store: { now: clock.now } });
    const id = await submit(app, { type: "echo", payload: 1 });
    const [stale] = await leaseTasks(app, 1, 0, "slow");
    clock.advance(LEASE_MS);
    store.sweep();
    const [current] = await leaseTasks(app, 1, 0, "fast");
    const accepted = await worker(app, "complete", {
      workerId: "fast",
      results: [ok(current, "fast")],
    });
    assert.deepEqual(accepted.json(), { accepted: [id], rejected: [] });
    const late = await worker(app, "complete", { workerId: "slow", results: [ok(stale, "slow")] });
    assert.deepEqual(late.json(), { accepted: [], rejected: [{ id, reason: "lease_lost" }] });
    const task = (await api(app, "GET", `/v1/tasks/${id}`)).json();
    assert.equal(task.result, "fast");
    assert.equal(task.attempts, 2);
    assert.equal((await api(app, "GET", "/v1/stats")).json().succeeded, 1);
  });

  it("ignores the old lease while a newer one holds the task", async (t) => {
    const clock = new FakeClock();
    const { app, store } = startApp(t, { store: { now: clock.now } });
    const id = await submit(app, { type: "echo", payload: 1 });
    const [stale] = await leaseTasks(app, 1, 0, "slow");
    clock.advance(LEASE_MS);
    store.sweep();
    const [current] = await leaseTasks(app, 1, 0, "fast");
    const staleRef = [{ id, leaseId: stale?.leaseId }];
    const renew = await worker(app, "renew", { workerId: "slow", leases: staleRef });
    assert.deepEqual(renew.json().lost, [id]);
    const release = await worker(app, "release", { workerId: "slow", leases: staleRef });
    assert.deepEqual(release.json().released, []);
    const late = await worker(app, "complete", {
      workerId: "slow",
      results: [fail(stale, "x", false)],
    });
    assert.deepEqual(late.json(), { accepted: [], rejected: [{ id, reason: "lease_lost" }] });
    assert.equal((await api(app, "GET", `/v1/tasks/${id}`)).json().status, "running");
    const done = await worker(app, "complete", { workerId: "fast", results: [ok(current, 2)] });
    assert.deepEqual(done.json().accepted, [id]);
  });

  it("rejects a completion whose lease ran out before the sweep noticed", async (t) => {
    const clock = new FakeClock();
    const { app } = startApp(t, { store: { now: clock.now } });
    const id = await submit(app, { type: "echo", payload: 1 });
    const [task] = await leaseTasks(app);
    clock.advance(LEASE_MS);
    const late = await worker(app, "complete", { workerId: "w1", results: [ok(task)] });
    assert.deepEqual(late.json(), { accepted: [], rejected: [{ id, reason: "lease_lost" }] });
    assert.equal((await api(app, "GET", `/v1/tasks/${id}`)).json().status, "queued");
  });

  it("accepts a repeated completion under the same lease once, counting it once", async (t) => {
    const { app } = startApp(t);
    const id = await submit(app, { type: "echo", payload: 1 });
    const [task] = await leaseTasks(app);
    const first = await worker(app, "complete", { workerId: "w1", results: [ok(task, "one")] });
    const again = await worker(app, "complete", { workerId: "w1", results: [ok(task, "two")] });
    assert.deepEqual(first.json().accepted, [id]);
    assert.deepEqual(again.json().accepted, [id]);
    assert.equal((await api(app, "GET", `/v1/tasks/${id}`)).json().result, "one");
    assert.equal((await api(app, "GET", "/v1/stats")).json().succeeded, 1);
  });

  it("rejects a completion for a task it does not know", async (t) => {
    const { app } = startApp(t);
    const res = await worker(app, "complete", {
      workerId: "w1",
      results: [{ id: "nope", leaseId: "1", ok: true }],
    });
    assert.deepEqual(res.json(), { accepted: [], rejected: [{ id: "nope", reason: "not_found" }] });
  });

  it("fails a task whose last attempt's lease ran out, with the reason", async (t) => {
    const clock = new FakeClock();
    const { app, store } = startApp(t, { store: { now: clock.now } });
    const id = await submit(app, { type: "echo", payload: 1, maxAttempts: 1 });
    await leaseTasks(app);
    clock.advance(LEASE_MS);
    store.sweep();
    const task = (await api(app, "GET", `/v1/tasks/${id}`)).json();
    assert.equal(task.status, "failed");
    assert.match(task.error, /attempt 1 lost its lease/);
  });

  it("stops extending a lease past the task's timeout", async (t) => {
    const clock = new FakeClock();
    const { app, store } = startApp(t, { store: { now: clock.now } });
    const id = await submit(app, { type: "echo", payload: 1, timeoutSeconds: 40, maxAttempts: 1 });
    const [task] = await leaseTasks(app);
    const refs = [{ id: task?.id, leaseId: task?.leaseId }];
    // Renewing every 20 s keeps the lease until the timeout plus one lease period (70 s).
    for (let i = 0; i < 3; i++) {
      clock.advance(20_000);
      assert.deepEqual(
        (await worker(app, "renew", { workerId: "w1", leases: refs })).json().renewed,
        [id],
      );
    }
    clock.advance(10_000);
    store.sweep();
    const failed = (await api(app, "GET", `/v1/tasks/${id}`)).json();
    assert.equal(failed.status, "failed");
    assert.equal(failed.error, "attempt 1 timed out after 40s");
  });

  it("gives a released task back without counting the attempt, ahead of the queue", async (t) => {
    const { app } = startApp(t);
    const first = await submit(app, { type: "echo", payload: 1 });
    await submit(app, { type: "echo", payload: 2 });
    const [task] = await leaseTasks(app, 1);
    const res = await worker(app, "release", {
      workerId: "w1",
      leases: [
        { id: task?.id, leaseId: task?.leaseId },
        { id: task?.id, leaseId: "999" },
      ],
    });
    assert.deepEqual(res.json(), { released: [first] });
    const view = (await api(app, "GET", `/v1/tasks/${first}`)).json();
    assert.equal(view.status, "queued");
    assert.equal(view.attempts, 0);
    assert.equal(view.startedAt, undefined);
    const [again] = await leaseTasks(app, 1);
    assert.equal(again?.id, first);
    assert.equal(again?.attempt, 1);
  });
});

describe("lease ownership", () => {
  it("hands out lease ids of 128 random bits, unrelated to one another", async (t) => {
    const { app } = startApp(t);
    const tasks = Array.from({ length: 200 }, (_, n) => ({ type: "echo", payload: n }));
    await api(app, "POST", "/v1/tasks/batch", { tasks });
    const leaseIds = (await leaseTasks(app, 200)).map((task) => task.leaseId);
    for (const leaseId of leaseIds) assert.match(leaseId, /^[A-Za-z0-9_-]{22}$/);
    // A counter's ids share long prefixes; random ones almost never share their first 36 bits
    // (about 3 chances in 10 million for 200 ids).
    assert.equal(new Set(leaseIds.map((id) => id.slice(0, 6))).size, 200);
  });

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

  it("spreads retries with jitter between half and all of the exponential delay", async (t) => {
    const clock = new FakeClock();
    const { app } = startApp(t, {
      env: { RETRY_BACKOFF_MS: "1000" },
      store: { now: clock.now, random: () => 0 },
    });
    await submit(app, { type: "flaky", payload: 1 });
    const [task] = await leaseTasks(app);
    await worker(app, "complete", { workerId: "w1", results: [fail(task, "boom")] });
    clock.advance(499);
    assert.deepEqual(await leaseTasks(app), []);
    clock.advance(1);
    assert.equal((await leaseTasks(app)).length, 1);
  });

  it("fails at once when the worker says the failure is not retryable", async (t) => {
    const { app } = startApp(t);
    const id = await submit(app, { type: "echo", payload: 1, maxAttempts: 5 });
    const [task] = await leaseTasks(app);
    await worker(app, "complete", { workerId: "w1", results: [fail(task, "bad payload", false)] });
    const view = (await api(app, "GET", `/v1/tasks/${id}`)).json();
    assert.equal(view.status, "failed");
    assert.equal(view.attempts, 1);
  });

  it("wakes a waiting long poll when a retry becomes due", async (t) => {
    const { app } = startApp(t, {
      env: { RETRY_BACKOFF_MS: "50" },
      store: { sweepIntervalMs: 10 },
    });
    const id = await submit(app, { type: "flaky", payload: 1 });
    const [task] = await leaseTasks(app);
    await worker(app, "complete", { workerId: "w1", results: [fail(task, "boom")] });
    const started = performance.now();
    const [retry] = await leaseTasks(app, 1, 5000);
    assert.equal(retry?.id, id);
    assert.ok(performance.now() - started < 1000);
  });
});
