import assert from "node:assert/strict";
import { describe, it, type TestContext } from "node:test";
import { TASK_OVERHEAD_BYTES } from "../src/limits.js";
import {
  type Completion,
  type LeasedTask,
  OverBudgetError,
  type StoreObserver,
  type TaskSpec,
  type TaskStore,
} from "../src/store/task-store.js";
import { FakeClock } from "./helper.js";

/**
 * What every `TaskStore` must do, whatever keeps its tasks: the cases the memory store's route
 * tests (leases, retention, tasks, budget) assert, asked of the store directly, so a second
 * backend is held to the same semantics. Register them with `storeContract(name, factory)`.
 */

/** The options a contract case sets; a factory maps them onto its store's own. */
export interface ContractOptions {
  leaseSeconds: number;
  resultTtlSeconds: number;
  resultMaxCount: number;
  retryBackoffMs: number;
  /** 0: no sweep timer, the case calls `sweep()` itself. */
  sweepIntervalMs: number;
  memoryBudgetBytes?: number;
  leaseMaxBytes?: number;
  observer?: StoreObserver;
  /** Absent: the real clock. */
  now?: () => number;
  random?: () => number;
}

export interface StoreUnderTest {
  store: TaskStore;
  /** Runs one sweep (lease expiry, due retries, retention) to its end. */
  sweep(): Promise<void>;
}

/** Makes a store for one case; the factory closes it when the case ends (`t.after`). */
export type StoreFactory = (t: TestContext, options: ContractOptions) => Promise<StoreUnderTest>;

const LEASE_MS = 30_000;

const defaults: ContractOptions = {
  leaseSeconds: 30,
  resultTtlSeconds: 3600,
  resultMaxCount: 100_000,
  retryBackoffMs: 1000,
  sweepIntervalMs: 0,
};

function spec(payload: unknown, extra: Partial<TaskSpec> = {}): TaskSpec {
  return { type: "echo", payload, maxAttempts: 3, timeoutSeconds: 300, ...extra };
}

function ok(task: LeasedTask | undefined, result: unknown = null): Completion {
  return { id: task?.id ?? "", leaseId: task?.leaseId ?? "", ok: true, result };
}

function fail(task: LeasedTask | undefined, error: string, retryable = true): Completion {
  return { id: task?.id ?? "", leaseId: task?.leaseId ?? "", ok: false, error, retryable };
}

function ref(task: LeasedTask | undefined) {
  return { id: task?.id ?? "", leaseId: task?.leaseId ?? "" };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** `skip`: a reason to register the cases skipped (the backend is not available here). */
export function storeContract(
  name: string,
  factory: StoreFactory,
  { skip }: { skip?: string } = {},
): void {
  /** A store with the defaults and a fake clock, unless the case says otherwise. */
  async function make(t: TestContext, options: Partial<ContractOptions> = {}) {
    const clock = new FakeClock();
    const under = await factory(t, { ...defaults, now: clock.now, ...options });
    return { ...under, clock };
  }

  async function submitOne(store: TaskStore, payload: unknown, extra: Partial<TaskSpec> = {}) {
    const [outcome] = await store.submit([spec(payload, extra)]);
    assert.ok(outcome);
    return outcome.id;
  }

  /** Completes every task leased with success under worker w1. */
  async function finishAll(store: TaskStore, leased: LeasedTask[]): Promise<void> {
    const outcome = await store.complete(
      "w1",
      leased.map((task) => ok(task)),
    );
    assert.equal(outcome.accepted.length, leased.length);
  }

  describe(`${name}: submitting and reading`, { skip }, () => {
    it("queues a task and shows it with its creation time and no attempts", async (t) => {
      const { store, clock } = await make(t);
      const [outcome] = await store.submit([spec({ a: 1 }, { timeoutSeconds: 120 })]);
      assert.equal(outcome?.status, "queued");
      assert.equal(outcome?.created, true);
      const id = outcome?.id ?? "";
      assert.match(id, /^[A-Za-z0-9_-]{16}$/);
      assert.deepEqual(await store.get(id), {
        id,
        type: "echo",
        status: "queued",
        attempts: 0,
        createdAt: clock.ms,
      });
      const [leased] = await store.lease("w1", 10, 0);
      assert.deepEqual(leased?.payload, { a: 1 });
      assert.equal(leased?.type, "echo");
      assert.equal(leased?.timeoutSeconds, 120);
      assert.equal(leased?.attempt, 1);
    });

    it("answers undefined for a task it does not know", async (t) => {
      const { store } = await make(t);
      assert.equal(await store.get("nope"), undefined);
      assert.equal(await store.waitForFinish("nope", 1000), undefined);
    });

    it("returns the existing task for a repeated idempotency key instead of a second one", async (t) => {
      const { store } = await make(t);
      const [first] = await store.submit([spec(1, { idempotencyKey: "order-42" })]);
      const [second] = await store.submit([spec(2, { idempotencyKey: "order-42" })]);
      assert.equal(first?.created, true);
      assert.deepEqual(second, { id: first?.id, status: "queued", created: false });
      assert.equal((await store.stats()).queued, 1);
      const leased = await store.lease("w1", 10, 0);
      assert.equal(leased.length, 1);
      assert.equal(leased[0]?.payload, 1);
      // The answer shows the task as it stands now.
      const [third] = await store.submit([spec(3, { idempotencyKey: "order-42" })]);
      assert.deepEqual(third, { id: first?.id, status: "running", created: false });
    });

    it("holds idempotency keys within one batch and across batches", async (t) => {
      const { store } = await make(t);
      const single = await submitOne(store, 0, { idempotencyKey: "k0" });
      const first = await store.submit([
        spec(1, { idempotencyKey: "k1" }),
        spec(2, { idempotencyKey: "k1" }),
        spec(3, { idempotencyKey: "k0" }),
        spec(4),
      ]);
      assert.deepEqual(
        first.map((o) => o.created),
        [true, false, false, true],
      );
      const ids = first.map((o) => o.id);
      assert.equal(ids[0], ids[1]);
      assert.equal(ids[2], single);
      assert.notEqual(ids[3], ids[0]);
      const second = await store.submit([spec(5, { idempotencyKey: "k1" })]);
      assert.deepEqual(
        second.map((o) => o.id),
        [ids[0]],
      );
      assert.equal((await store.stats()).queued, 3);
    });

    it("accepts 10,000 tasks in one batch, in order, each id distinct, and leases them FIFO", async (t) => {
      const { store } = await make(t);
      const outcomes = await store.submit(Array.from({ length: 10_000 }, (_, n) => spec(n)));
      const ids = outcomes.map((o) => o.id);
      assert.equal(new Set(ids).size, 10_000);
      const leased = await store.lease("w1", 256, 0);
      assert.deepEqual(
        leased.map((task) => task.payload),
        Array.from({ length: 256 }, (_, n) => n),
      );
      assert.deepEqual(
        leased.map((task) => task.id),
        ids.slice(0, 256),
      );
      const next = await store.lease("w1", 3, 0);
      assert.deepEqual(
        next.map((task) => task.payload),
        [256, 257, 258],
      );
    });
  });

  describe(`${name}: leases`, { skip }, () => {
    it("hands out lease ids of 128 random bits, unrelated to one another", async (t) => {
      const { store } = await make(t);
      await store.submit(Array.from({ length: 200 }, (_, n) => spec(n)));
      const leaseIds = (await store.lease("w1", 200, 0)).map((task) => task.leaseId);
      assert.equal(leaseIds.length, 200);
      for (const leaseId of leaseIds) assert.match(leaseId, /^[A-Za-z0-9_-]{22}$/);
      assert.equal(new Set(leaseIds.map((id) => id.slice(0, 6))).size, 200);
    });

    it("leases at most max tasks, and fewer when their payloads pass the byte cap", async (t) => {
      const { store } = await make(t, { leaseMaxBytes: 25 });
      // "x".repeat(8) is 10 bytes as JSON: two fit in 25, a third does not.
      await store.submit(Array.from({ length: 6 }, () => spec("x".repeat(8))));
      await submitOne(store, "y".repeat(40));
      assert.equal((await store.lease("w1", 1, 0)).length, 1);
      assert.equal((await store.lease("w1", 10, 0)).length, 2);
      assert.equal((await store.lease("w1", 10, 0)).length, 2);
      assert.equal((await store.lease("w1", 10, 0)).length, 1);
      // One task always goes, however large.
      const [big] = await store.lease("w1", 10, 0);
      assert.equal(big?.payload, "y".repeat(40));
      assert.deepEqual(await store.lease("w1", 10, 0), []);
      assert.equal((await store.stats()).running, 7);
    });

    it("leases the next tasks in the same call that completes, when asked", async (t) => {
      const { store } = await make(t, { leaseMaxBytes: 25 });
      const ids = (await store.submit(Array.from({ length: 6 }, (_, n) => spec(n)))).map(
        (outcome) => outcome.id,
      );
      const first = await store.lease("w1", 2, 0);
      const outcome = await store.complete("w1", [ok(first[0], "a"), fail(first[1], "boom")], {
        max: 3,
        slots: 8,
      });
      assert.deepEqual(outcome.accepted, [ids[0], ids[1]]);
      assert.deepEqual(outcome.rejected, []);
      // Oldest first, under fresh leases of this worker; the failure waits out its backoff.
      const next = outcome.leased ?? [];
      assert.deepEqual(
        next.map((task) => [task.id, task.attempt]),
        [
          [ids[2], 1],
          [ids[3], 1],
          [ids[4], 1],
        ],
      );
      assert.equal(new Set([...first, ...next].map((task) => task.leaseId)).size, 5);
      assert.equal((await store.stats()).workerSlots, 8);
      assert.equal((await store.get(ids[0] ?? ""))?.result, "a");
      assert.deepEqual(
        (
          await store.complete(
            "w1",
            next.map((task) => ok(task)),
          )
        ).accepted,
        next.map((task) => task.id),
      );
      // The byte cap holds as for any lease: "x".repeat(8) is 10 bytes, two fit in 25.
      await store.submit(Array.from({ length: 3 }, () => spec("x".repeat(8))));
      const [last] = await store.lease("w1", 1, 0);
      const capped = await store.complete("w1", [ok(last)], { max: 10 });
      assert.equal(capped.leased?.length, 2);
      assert.equal((await store.stats()).queued, 2);
      // A draining store takes the completions and leases nothing.
      store.drain();
      const drained = await store.complete(
        "w1",
        (capped.leased ?? []).map((task) => ok(task)),
        {
          max: 10,
        },
      );
      assert.equal(drained.accepted.length, 2);
      assert.deepEqual(drained.leased ?? [], []);
      assert.equal((await store.stats()).queued, 2);
    });

    it("hands a queued task to one worker only", async (t) => {
      const { store } = await make(t, { now: undefined });
      await submitOne(store, 1);
      const [a, b] = await Promise.all([store.lease("a", 1, 100), store.lease("b", 1, 100)]);
      assert.equal(a.length + b.length, 1);
    });

    it("wakes a waiting long poll as soon as a task is queued", async (t) => {
      const { store } = await make(t, { now: undefined });
      const started = performance.now();
      const polling = store.lease("w1", 4, 30_000);
      await sleep(20);
      const id = await submitOne(store, 1);
      const leased = await polling;
      const elapsedMs = performance.now() - started;
      assert.deepEqual(
        leased.map((task) => [task.id, task.attempt]),
        [[id, 1]],
      );
      assert.ok(elapsedMs < 1000, `answered after ${elapsedMs} ms`);
    });

    it("answers a long poll with no tasks when nothing arrives in waitMs", async (t) => {
      const { store } = await make(t, { now: undefined });
      const started = performance.now();
      assert.deepEqual(await store.lease("w1", 1, 200), []);
      const elapsedMs = performance.now() - started;
      assert.ok(elapsedMs >= 190, `answered after ${elapsedMs} ms`);
    });

    it("answers a long poll with no tasks at once when its signal aborts", async (t) => {
      const { store } = await make(t, { now: undefined });
      const controller = new AbortController();
      const started = performance.now();
      const polling = store.lease("w1", 1, 30_000, { signal: controller.signal });
      await sleep(20);
      controller.abort();
      assert.deepEqual(await polling, []);
      assert.ok(performance.now() - started < 1000);
      // Nothing was taken for the poll that went away.
      await submitOne(store, 1);
      assert.equal((await store.lease("w1", 1, 0)).length, 1);
    });

    it("puts a task whose lease ran out back in the queue, counting the attempt", async (t) => {
      const { store, clock, sweep } = await make(t);
      const id = await submitOne(store, 1);
      const [first] = await store.lease("w1", 10, 0);
      clock.advance(LEASE_MS - 1);
      await sweep();
      assert.equal((await store.get(id))?.status, "running");
      clock.advance(1);
      await sweep();
      const task = await store.get(id);
      assert.equal(task?.status, "queued");
      assert.equal(task?.attempts, 1);
      assert.match(task?.error ?? "", /attempt 1 lost its lease \(not renewed within 30s\)/);
      const [second] = await store.lease("w1", 10, 0);
      assert.equal(second?.id, id);
      assert.equal(second?.attempt, 2);
      assert.notEqual(second?.leaseId, first?.leaseId);
    });

    it("keeps a renewed lease alive past its first term", async (t) => {
      const { store, clock, sweep } = await make(t);
      await submitOne(store, 1);
      const [task] = await store.lease("w1", 10, 0);
      clock.advance(LEASE_MS - 1000);
      assert.deepEqual(await store.renew("w1", [ref(task)]), { renewed: [task?.id], lost: [] });
      clock.advance(LEASE_MS - 1000);
      await sweep();
      assert.deepEqual(await store.complete("w1", [ok(task, 7)]), {
        accepted: [task?.id],
        rejected: [],
      });
      assert.equal((await store.get(task?.id ?? ""))?.result, 7);
    });

    it("reports an expired lease as lost on renewal, even before the sweep has run", async (t) => {
      const { store, clock } = await make(t);
      await submitOne(store, 1);
      const [task] = await store.lease("w1", 10, 0);
      clock.advance(LEASE_MS);
      const renew = await store.renew("w1", [ref(task), { id: "unknown", leaseId: "1" }]);
      assert.deepEqual(renew, { renewed: [], lost: [task?.id, "unknown"] });
      assert.equal((await store.get(task?.id ?? ""))?.status, "queued");
    });

    it("rejects a late completion from an expired lease without touching the result or counts", async (t) => {
      const { store, clock, sweep } = await make(t);
      const id = await submitOne(store, 1);
      const [stale] = await store.lease("slow", 1, 0);
      clock.advance(LEASE_MS);
      await sweep();
      const [current] = await store.lease("fast", 1, 0);
      assert.deepEqual(await store.complete("fast", [ok(current, "fast")]), {
        accepted: [id],
        rejected: [],
      });
      assert.deepEqual(await store.complete("slow", [ok(stale, "slow")]), {
        accepted: [],
        rejected: [{ id, reason: "lease_lost" }],
      });
      const task = await store.get(id);
      assert.equal(task?.result, "fast");
      assert.equal(task?.attempts, 2);
      assert.equal((await store.stats()).succeeded, 1);
    });

    it("ignores the old lease while a newer one holds the task", async (t) => {
      const { store, clock, sweep } = await make(t);
      const id = await submitOne(store, 1);
      const [stale] = await store.lease("slow", 1, 0);
      clock.advance(LEASE_MS);
      await sweep();
      const [current] = await store.lease("fast", 1, 0);
      assert.deepEqual((await store.renew("slow", [ref(stale)])).lost, [id]);
      assert.deepEqual(await store.release("slow", [ref(stale)]), { released: [] });
      assert.deepEqual(await store.complete("slow", [fail(stale, "x", false)]), {
        accepted: [],
        rejected: [{ id, reason: "lease_lost" }],
      });
      // Even the lease's own worker cannot use the old lease.
      assert.deepEqual((await store.renew("fast", [ref(stale)])).lost, [id]);
      assert.equal((await store.get(id))?.status, "running");
      assert.deepEqual((await store.complete("fast", [ok(current, 2)])).accepted, [id]);
    });

    it("rejects a completion whose lease ran out before the sweep noticed", async (t) => {
      const { store, clock } = await make(t);
      const id = await submitOne(store, 1);
      const [task] = await store.lease("w1", 10, 0);
      clock.advance(LEASE_MS);
      assert.deepEqual(await store.complete("w1", [ok(task)]), {
        accepted: [],
        rejected: [{ id, reason: "lease_lost" }],
      });
      const view = await store.get(id);
      assert.equal(view?.status, "queued");
      assert.equal(view?.result, undefined);
      assert.equal((await store.stats()).succeeded, 0);
    });

    it("accepts a repeated completion under the same lease once, counting it once", async (t) => {
      const observed = observe();
      const { store } = await make(t, { observer: observed.observer });
      const id = await submitOne(store, 1);
      const [task] = await store.lease("w1", 10, 0);
      assert.deepEqual((await store.complete("w1", [ok(task, "one")])).accepted, [id]);
      assert.deepEqual((await store.complete("w1", [ok(task, "two")])).accepted, [id]);
      assert.deepEqual((await store.complete("w1", [fail(task, "three")])).accepted, [id]);
      const view = await store.get(id);
      assert.equal(view?.result, "one");
      assert.equal(view?.status, "succeeded");
      assert.equal((await store.stats()).succeeded, 1);
      assert.deepEqual(observed.events, ["submitted 1", "attempt succeeded", "finished succeeded"]);
    });

    it("rejects a completion for a task it does not know", async (t) => {
      const { store } = await make(t);
      assert.deepEqual(
        await store.complete("w1", [{ id: "nope", leaseId: "1", ok: true, result: 1 }]),
        { accepted: [], rejected: [{ id: "nope", reason: "not_found" }] },
      );
    });

    it("fails a task whose last attempt's lease ran out, with the reason", async (t) => {
      const { store, clock, sweep } = await make(t);
      const id = await submitOne(store, 1, { maxAttempts: 1 });
      await store.lease("w1", 10, 0);
      clock.advance(LEASE_MS);
      await sweep();
      const task = await store.get(id);
      assert.equal(task?.status, "failed");
      assert.equal(task?.attempts, 1);
      assert.equal(task?.finishedAt, clock.ms);
      assert.match(task?.error ?? "", /attempt 1 lost its lease/);
      const stats = await store.stats();
      assert.deepEqual([stats.failed, stats.running, stats.queued], [1, 0, 0]);
    });

    it("stops extending a lease past the task's timeout", async (t) => {
      const { store, clock, sweep } = await make(t);
      const id = await submitOne(store, 1, { timeoutSeconds: 40, maxAttempts: 1 });
      const [task] = await store.lease("w1", 10, 0);
      // Renewing every 20 s keeps the lease until the timeout plus one lease period (70 s).
      for (let i = 0; i < 3; i++) {
        clock.advance(20_000);
        assert.deepEqual((await store.renew("w1", [ref(task)])).renewed, [id]);
      }
      clock.advance(9_999);
      await sweep();
      assert.equal((await store.get(id))?.status, "running");
      clock.advance(1);
      await sweep();
      const failed = await store.get(id);
      assert.equal(failed?.status, "failed");
      assert.equal(failed?.error, "attempt 1 timed out after 40s");
    });

    it("gives a released task back without counting the attempt, ahead of the queue", async (t) => {
      const { store } = await make(t);
      const first = await submitOne(store, 1);
      await submitOne(store, 2);
      const [task] = await store.lease("w1", 1, 0);
      const released = await store.release("w1", [ref(task), { id: first, leaseId: "999" }]);
      assert.deepEqual(released, { released: [first] });
      const view = await store.get(first);
      assert.equal(view?.status, "queued");
      assert.equal(view?.attempts, 0);
      assert.equal(view?.startedAt, undefined);
      const [again] = await store.lease("w1", 1, 0);
      assert.equal(again?.id, first);
      assert.equal(again?.attempt, 1);
      assert.notEqual(again?.leaseId, task?.leaseId);
      // The released lease is over: it completes nothing.
      assert.deepEqual((await store.complete("w1", [ok(task)])).rejected, [
        { id: first, reason: "lease_lost" },
      ]);
    });

    it("fails an unsent task for good, without counting the attempt", async (t) => {
      const { store } = await make(t);
      const id = await submitOne(store, 1);
      const [task] = await store.lease("w1", 1, 0);
      await store.failUnsent("other", [ref(task)], "ignored");
      assert.equal((await store.get(id))?.status, "running");
      await store.failUnsent("w1", [ref(task)], "the payload would not serialize");
      const view = await store.get(id);
      assert.equal(view?.status, "failed");
      assert.equal(view?.attempts, 0);
      assert.equal(view?.error, "the payload would not serialize");
      assert.equal((await store.stats()).failed, 1);
    });
  });

  describe(`${name}: lease ownership`, { skip }, () => {
    it("does not let a guessed lease id complete another worker's live lease", async (t) => {
      const { store } = await make(t);
      const id = await submitOne(store, 1);
      await store.lease("victim", 1, 0);
      const guesses: Completion[] = Array.from({ length: 100 }, (_, n) => ({
        id,
        leaseId: (n + 1).toString(36),
        ok: true,
        result: "forged",
      }));
      for (const workerId of ["victim", "attacker"]) {
        assert.deepEqual((await store.complete(workerId, guesses)).accepted, []);
      }
      const task = await store.get(id);
      assert.equal(task?.status, "running");
      assert.equal(task?.result, undefined);
    });

    it("refuses another worker's lease on complete and release, and changes nothing", async (t) => {
      const { store } = await make(t);
      const id = await submitOne(store, 1);
      const [held] = await store.lease("owner", 1, 0);
      assert.deepEqual(await store.release("thief", [ref(held)]), { released: [] });
      assert.deepEqual(await store.complete("thief", [ok(held, "forged")]), {
        accepted: [],
        rejected: [{ id, reason: "lease_lost" }],
      });
      const running = await store.get(id);
      assert.equal(running?.status, "running");
      assert.equal(running?.attempts, 1);
      assert.deepEqual((await store.complete("owner", [ok(held, "real")])).accepted, [id]);
      assert.deepEqual(await store.complete("thief", [ok(held, "x")]), {
        accepted: [],
        rejected: [{ id, reason: "lease_lost" }],
      });
      assert.equal((await store.get(id))?.result, "real");
    });

    it("reports another worker's lease as lost on renew, without extending it", async (t) => {
      const { store, clock, sweep } = await make(t);
      const id = await submitOne(store, 1);
      const [held] = await store.lease("owner", 1, 0);
      clock.advance(LEASE_MS - 1000);
      assert.deepEqual(await store.renew("thief", [ref(held)]), { renewed: [], lost: [id] });
      clock.advance(1000);
      await sweep();
      const task = await store.get(id);
      assert.equal(task?.status, "queued");
      assert.match(task?.error ?? "", /lost its lease/);
    });
  });

  describe(`${name}: retries`, { skip }, () => {
    it("retries a failed attempt after a backoff, then fails the task with the last error", async (t) => {
      // Jitter at its top: the full exponential delay.
      const { store, clock } = await make(t, { random: () => 0.999999 });
      const id = await submitOne(store, 1, { maxAttempts: 3 });
      for (const [attempt, backoff] of [1000, 2000].entries()) {
        const [task] = await store.lease("w1", 10, 0);
        assert.equal(task?.attempt, attempt + 1);
        const outcome = await store.complete("w1", [fail(task, `boom ${attempt + 1}`)]);
        assert.deepEqual(outcome.accepted, [id]);
        const waiting = await store.get(id);
        assert.equal(waiting?.status, "queued");
        assert.equal(waiting?.error, `boom ${attempt + 1}`);
        const stats = await store.stats();
        assert.deepEqual([stats.queued, stats.delayed, stats.running], [1, 1, 0]);
        clock.advance(backoff - 1);
        assert.deepEqual(await store.lease("w1", 10, 0), [], `attempt ${attempt + 2} came early`);
        clock.advance(1);
      }
      const [last] = await store.lease("w1", 10, 0);
      assert.equal(last?.attempt, 3);
      assert.deepEqual((await store.complete("w1", [fail(last, "boom 3")])).accepted, [id]);
      const task = await store.get(id);
      assert.equal(task?.status, "failed");
      assert.equal(task?.attempts, 3);
      assert.equal(task?.error, "boom 3");
      const stats = await store.stats();
      assert.deepEqual([stats.failed, stats.queued, stats.delayed], [1, 0, 0]);
    });

    it("spreads retries with jitter between half and all of the exponential delay", async (t) => {
      const { store, clock } = await make(t, { random: () => 0 });
      await submitOne(store, 1);
      const [task] = await store.lease("w1", 10, 0);
      await store.complete("w1", [fail(task, "boom")]);
      clock.advance(499);
      assert.deepEqual(await store.lease("w1", 10, 0), []);
      clock.advance(1);
      assert.equal((await store.lease("w1", 10, 0)).length, 1);
    });

    it("queues a retry at once when the backoff is 0", async (t) => {
      const { store } = await make(t, { retryBackoffMs: 0 });
      const id = await submitOne(store, 1);
      const [task] = await store.lease("w1", 10, 0);
      await store.complete("w1", [fail(task, "boom")]);
      assert.equal((await store.stats()).delayed, 0);
      const [again] = await store.lease("w1", 10, 0);
      assert.deepEqual([again?.id, again?.attempt], [id, 2]);
    });

    it("fails at once when the worker says the failure is not retryable", async (t) => {
      const { store } = await make(t);
      const id = await submitOne(store, 1, { maxAttempts: 5 });
      const [task] = await store.lease("w1", 10, 0);
      await store.complete("w1", [fail(task, "bad payload", false)]);
      const view = await store.get(id);
      assert.equal(view?.status, "failed");
      assert.equal(view?.attempts, 1);
      assert.equal(view?.error, "bad payload");
      assert.equal("result" in (view ?? {}), false);
    });

    it("clears the error of an earlier attempt when a retry succeeds", async (t) => {
      const { store } = await make(t, { retryBackoffMs: 0 });
      const id = await submitOne(store, 1);
      const [task] = await store.lease("w1", 10, 0);
      await store.complete("w1", [fail(task, "boom")]);
      const [retry] = await store.lease("w1", 10, 0);
      await store.complete("w1", [ok(retry, "fine")]);
      const view = await store.get(id);
      assert.deepEqual([view?.status, view?.error, view?.result], ["succeeded", undefined, "fine"]);
    });

    it("wakes a waiting long poll when a retry becomes due", async (t) => {
      const { store } = await make(t, { now: undefined, retryBackoffMs: 50, sweepIntervalMs: 10 });
      const id = await submitOne(store, 1);
      const [task] = await store.lease("w1", 10, 0);
      await store.complete("w1", [fail(task, "boom")]);
      const started = performance.now();
      const [retry] = await store.lease("w1", 1, 5000);
      assert.equal(retry?.id, id);
      assert.ok(performance.now() - started < 1000);
    });
  });

  describe(`${name}: retention of finished tasks`, { skip }, () => {
    it("drops finished tasks once the result TTL has passed", async (t) => {
      const { store, clock, sweep } = await make(t, { resultTtlSeconds: 60 });
      const old = await submitOne(store, 1);
      await finishAll(store, await store.lease("w1", 10, 0));
      clock.advance(30_000);
      const young = await submitOne(store, 2);
      await finishAll(store, await store.lease("w1", 10, 0));
      const queued = await submitOne(store, 3);
      clock.advance(30_000);
      await sweep();
      assert.equal(await store.get(old), undefined);
      assert.equal((await store.get(young))?.status, "succeeded");
      clock.advance(3_600_000);
      await sweep();
      assert.equal(await store.get(young), undefined);
      // Only finished tasks expire; a queued one waits however long it takes.
      assert.equal((await store.get(queued))?.status, "queued");
      const stats = await store.stats();
      assert.equal(stats.retained, 0);
      assert.equal(stats.succeeded, 2);
    });

    it("keeps at most resultMaxCount finished tasks, dropping the oldest first", async (t) => {
      const { store } = await make(t, { resultMaxCount: 3 });
      const ids: string[] = [];
      for (let n = 0; n < 5; n++) {
        ids.push(await submitOne(store, n));
        await finishAll(store, await store.lease("w1", 10, 0));
      }
      const found = await Promise.all(ids.map(async (id) => (await store.get(id)) !== undefined));
      assert.deepEqual(found, [false, false, true, true, true]);
      assert.equal((await store.stats()).retained, 3);
    });

    it("forgets the idempotency key of a dropped task, so the key can be used again", async (t) => {
      const { store } = await make(t, { resultMaxCount: 1 });
      const first = await submitOne(store, 1, { idempotencyKey: "k" });
      await finishAll(store, await store.lease("w1", 10, 0));
      await submitOne(store, 2);
      await finishAll(store, await store.lease("w1", 10, 0));
      const [again] = await store.submit([spec(3, { idempotencyKey: "k" })]);
      assert.equal(again?.created, true);
      assert.notEqual(again?.id, first);
    });

    it("holds a bounded number of tasks under a steady stream", async (t) => {
      const { store, clock, sweep } = await make(t, {
        resultTtlSeconds: 10,
        resultMaxCount: 500,
      });
      for (let round = 0; round < 20; round++) {
        await store.submit(Array.from({ length: 100 }, (_, n) => spec(n)));
        await finishAll(store, await store.lease("w1", 100, 0));
        clock.advance(1000);
        await sweep();
      }
      const stats = await store.stats();
      assert.equal(stats.succeeded, 2000);
      assert.ok(stats.retained <= 500, `retained ${stats.retained}`);
      assert.equal(stats.queued + stats.running, 0);
    });
  });

  describe(`${name}: waiting for a result`, { skip }, () => {
    it("answers a wait as soon as the task finishes", async (t) => {
      const { store } = await make(t, { now: undefined });
      const id = await submitOne(store, "hi");
      const started = performance.now();
      const waiting = store.waitForFinish(id, 30_000);
      await sleep(20);
      const [leased] = await store.lease("w1", 10, 0);
      await store.complete("w1", [ok(leased, { echoed: "hi" })]);
      const task = await waiting;
      const elapsedMs = performance.now() - started;
      assert.equal(task?.status, "succeeded");
      assert.deepEqual(task?.result, { echoed: "hi" });
      assert.equal(task?.attempts, 1);
      assert.ok(task?.startedAt && task.finishedAt);
      assert.ok(elapsedMs < 1000, `answered after ${elapsedMs} ms`);
      // What the wait answers is the task as a read shows it, field for field.
      assert.deepEqual(task, await store.get(id));
    });

    it("answers a wait with the task as it stands when the time runs out", async (t) => {
      const { store } = await make(t, { now: undefined });
      const id = await submitOne(store, 1);
      const started = performance.now();
      const task = await store.waitForFinish(id, 300);
      const elapsedMs = performance.now() - started;
      assert.equal(task?.status, "queued");
      assert.ok(elapsedMs >= 290 && elapsedMs < 2000, `answered after ${elapsedMs} ms`);
    });

    it("answers a wait at once for a task that has already finished", async (t) => {
      const { store } = await make(t, { now: undefined });
      const id = await submitOne(store, 1);
      const [leased] = await store.lease("w1", 10, 0);
      await store.complete("w1", [fail(leased, "bad input", false)]);
      const started = performance.now();
      const task = await store.waitForFinish(id, 30_000);
      assert.ok(performance.now() - started < 500);
      assert.equal(task?.status, "failed");
      assert.equal(task?.error, "bad input");
      assert.equal("result" in (task ?? {}), false);
    });

    it("submits and waits in one call: the new task, answered as soon as it finishes", async (t) => {
      const { store } = await make(t, { now: undefined });
      const started = performance.now();
      const waiting = store.submitAndWait(spec("hi"), 30_000);
      const leased = await store.lease("w1", 10, 5_000);
      await store.complete("w1", [ok(leased[0], { echoed: "hi" })]);
      const { outcome, task } = await waiting;
      assert.ok(performance.now() - started < 2000);
      assert.deepEqual([outcome.created, outcome.status, outcome.id], [true, "queued", task?.id]);
      assert.equal(task?.status, "succeeded");
      assert.deepEqual(task?.result, { echoed: "hi" });
      assert.deepEqual(task, await store.get(outcome.id));
    });

    it("submits and waits with a known idempotency key: waits for the task the key names", async (t) => {
      const { store } = await make(t, { now: undefined });
      const [first] = await store.submit([spec(1, { idempotencyKey: "k" })]);
      const waiting = store.submitAndWait(spec(2, { idempotencyKey: "k" }), 30_000);
      await sleep(20);
      const [leased] = await store.lease("w1", 10, 0);
      await store.complete("w1", [ok(leased, "first")]);
      const { outcome, task } = await waiting;
      assert.deepEqual([outcome.created, outcome.id], [false, first?.id]);
      assert.equal(task?.result, "first");
      assert.equal((await store.stats()).succeeded, 1);
    });

    it("submits and waits: the task as it stands when the time runs out", async (t) => {
      const { store } = await make(t, { now: undefined });
      const started = performance.now();
      const { outcome, task } = await store.submitAndWait(spec(1), 300);
      const elapsedMs = performance.now() - started;
      assert.equal(outcome.created, true);
      assert.deepEqual([task?.id, task?.status], [outcome.id, "queued"]);
      assert.ok(elapsedMs >= 290 && elapsedMs < 2000, `answered after ${elapsedMs} ms`);
    });

    it("answers a wait when its signal aborts", async (t) => {
      const { store } = await make(t, { now: undefined });
      const id = await submitOne(store, 1);
      const controller = new AbortController();
      const started = performance.now();
      const waiting = store.waitForFinish(id, 30_000, controller.signal);
      await sleep(20);
      controller.abort();
      assert.equal((await waiting)?.status, "queued");
      assert.ok(performance.now() - started < 1000);
    });
  });

  describe(`${name}: stats and drain`, { skip }, () => {
    it("reports queue depth, running, finished and active workers", async (t) => {
      const { store } = await make(t);
      await store.submit(Array.from({ length: 5 }, (_, n) => spec(n)));
      const leased = await store.lease("w1", 3, 0);
      const [other] = await store.lease("w2", 1, 0);
      await store.complete("w2", [fail(other, "no", false)]);
      await store.complete("w1", [ok(leased[0], null)]);
      const { budgetUsedBytes, ...stats } = await store.stats();
      assert.deepEqual(stats, {
        queued: 1,
        delayed: 0,
        running: 2,
        succeeded: 1,
        failed: 1,
        retained: 2,
        activeWorkers: 2,
        workerSlots: 4,
        oldestQueuedSeconds: 0,
      });
      assert.ok(budgetUsedBytes >= 3 * TASK_OVERHEAD_BYTES, `budget ${budgetUsedBytes}`);
    });

    it("stops counting a worker as active once it has not called for a while", async (t) => {
      const { store, clock, sweep } = await make(t);
      await store.lease("w1", 1, 0);
      clock.advance(30_000);
      await store.lease("w2", 1, 0);
      assert.equal((await store.stats()).activeWorkers, 2);
      clock.advance(30_001);
      await sweep();
      assert.equal((await store.stats()).activeWorkers, 1);
    });

    it("stops handing out work once draining, but still takes renewals and completions", async (t) => {
      const { store } = await make(t, { now: undefined });
      const id = await submitOne(store, 1);
      const [task] = await store.lease("w1", 1, 0);
      const polling = store.lease("w2", 1, 30_000);
      const reading = store.waitForFinish(id, 60_000);
      await sleep(20);
      assert.equal(store.draining, false);
      store.drain();
      assert.equal(store.draining, true);
      const started = performance.now();
      assert.deepEqual(await polling, []);
      assert.equal((await reading)?.status, "running");
      assert.ok(performance.now() - started < 1000);
      await submitOne(store, 2);
      assert.deepEqual(await store.lease("w1", 1, 1000), []);
      assert.deepEqual((await store.renew("w1", [ref(task)])).renewed, [id]);
      assert.deepEqual((await store.complete("w1", [ok(task, 1)])).accepted, [id]);
      assert.equal((await store.stats()).queued, 1);
    });
  });

  describe(`${name}: backlog figures`, { skip }, () => {
    /** The two figures an autoscaler reads besides the counts. */
    async function backlog(store: TaskStore) {
      const { oldestQueuedSeconds, workerSlots } = await store.stats();
      return { oldestQueuedSeconds, workerSlots };
    }

    it("reports no wait and no slots when nothing is queued and no worker has called", async (t) => {
      const { store } = await make(t);
      assert.deepEqual(await backlog(store), { oldestQueuedSeconds: 0, workerSlots: 0 });
    });

    it("measures how long the next task to lease has been ready, until it is leased", async (t) => {
      const { store, clock } = await make(t);
      await submitOne(store, 1);
      clock.advance(1500);
      await submitOne(store, 2);
      assert.equal((await store.stats()).oldestQueuedSeconds, 1.5);
      clock.advance(500);
      assert.equal((await store.stats()).oldestQueuedSeconds, 2);
      // The first task leaves the queue; the second has waited since it was submitted.
      assert.equal((await store.lease("w1", 1, 0))[0]?.payload, 1);
      assert.equal((await store.stats()).oldestQueuedSeconds, 0.5);
      await store.lease("w1", 1, 0);
      assert.equal((await store.stats()).oldestQueuedSeconds, 0);
    });

    it("leaves out a task waiting out its backoff, and counts the retry from when it ended", async (t) => {
      // Jitter at its top: the first retry waits 1000 ms.
      const { store, clock, sweep } = await make(t, { random: () => 0.999999 });
      await submitOne(store, 1);
      const [task] = await store.lease("w1", 1, 0);
      await store.complete("w1", [fail(task, "boom")]);
      const waiting = await store.stats();
      assert.deepEqual([waiting.queued, waiting.delayed, waiting.oldestQueuedSeconds], [1, 1, 0]);
      clock.advance(3000);
      await sweep();
      const ready = await store.stats();
      assert.deepEqual([ready.queued, ready.delayed], [1, 0]);
      // Ready since the backoff ended (1 s after the failure), not since the sweep saw it.
      assert.equal(ready.oldestQueuedSeconds, 2);
    });

    it("counts a task whose lease ran out from when it ran out", async (t) => {
      const { store, clock, sweep } = await make(t);
      await submitOne(store, 1);
      await store.lease("w1", 1, 0);
      assert.equal((await store.stats()).oldestQueuedSeconds, 0);
      clock.advance(LEASE_MS + 2000);
      await sweep();
      assert.equal((await store.stats()).oldestQueuedSeconds, 2);
    });

    it("counts a released task from when it was first ready, as if it had never been leased", async (t) => {
      const { store, clock } = await make(t);
      await submitOne(store, 1);
      clock.advance(1000);
      const [task] = await store.lease("w1", 1, 0);
      clock.advance(1000);
      await submitOne(store, 2);
      assert.deepEqual((await store.release("w1", [ref(task)])).released, [task?.id]);
      assert.equal((await store.stats()).oldestQueuedSeconds, 2);
    });

    it("sums the slots of the workers, each as its latest lease request reported them", async (t) => {
      const { store } = await make(t);
      await store.lease("a", 2, 0, { slots: 8 });
      await store.lease("b", 1, 0, { slots: 4 });
      assert.equal((await store.stats()).workerSlots, 12);
      // A later report replaces the earlier one.
      await store.lease("a", 1, 0, { slots: 16 });
      assert.equal((await store.stats()).workerSlots, 20);
      // A worker that sends no slots counts the max of its latest request.
      await store.lease("old", 3, 0);
      assert.equal((await store.stats()).workerSlots, 23);
      await store.lease("old", 2, 0);
      assert.equal((await store.stats()).workerSlots, 22);
      // Other calls keep a worker active without changing its slots.
      await store.renew("b", []);
      await store.complete("b", []);
      await store.release("b", []);
      assert.deepEqual(await backlog(store), { oldestQueuedSeconds: 0, workerSlots: 22 });
    });

    it("counts only the slots of workers that called within the active window", async (t) => {
      const { store, clock, sweep } = await make(t);
      await store.lease("gone", 1, 0, { slots: 8 });
      await store.lease("busy", 1, 0, { slots: 2 });
      clock.advance(30_000);
      await store.lease("new", 1, 0, { slots: 4 });
      // A worker whose slots are all busy does not lease, but renews: it stays active.
      await store.renew("busy", []);
      assert.equal((await store.stats()).workerSlots, 14);
      clock.advance(30_001);
      const stats = await store.stats();
      assert.deepEqual([stats.activeWorkers, stats.workerSlots], [2, 6]);
      await sweep();
      assert.equal((await store.stats()).workerSlots, 6);
      clock.advance(30_000);
      await sweep();
      assert.deepEqual(await backlog(store), { oldestQueuedSeconds: 0, workerSlots: 0 });
    });

    it("forgets a worker's slots with the worker: back with a renewal only, it counts none", async (t) => {
      const { store, clock, sweep } = await make(t);
      await store.lease("w1", 1, 0, { slots: 8 });
      clock.advance(60_001);
      await sweep();
      await store.renew("w1", []);
      const stats = await store.stats();
      assert.deepEqual([stats.activeWorkers, stats.workerSlots], [1, 0]);
      await store.lease("w1", 1, 0, { slots: 4 });
      assert.equal((await store.stats()).workerSlots, 4);
    });
  });

  describe(`${name}: memory budget`, { skip }, () => {
    // Each task counts its overhead and the payload's heap estimate, given here as the route
    // gives it: 5 fit in the budget, 6 do not.
    const CHARGE = TASK_OVERHEAD_BYTES + 3000;
    const big = (extra: Partial<TaskSpec> = {}) =>
      spec("x", { payloadMemoryBytes: 3000, payloadBytes: 3, ...extra });

    it("refuses a submission past the budget, creating nothing, and a batch whole", async (t) => {
      const { store } = await make(t, { memoryBudgetBytes: 20_000 });
      for (let i = 0; i < 5; i++) await store.submit([big()]);
      assert.equal((await store.stats()).budgetUsedBytes, 5 * CHARGE);
      await assert.rejects(store.submit([big()]), (error) => {
        assert.ok(error instanceof OverBudgetError);
        assert.equal(
          error.message,
          `the master holds ${5 * CHARGE} bytes of queued and running tasks; ${CHARGE} more would exceed MEMORY_BUDGET_BYTES (20000)`,
        );
        return true;
      });
      await assert.rejects(
        store.submit([spec(1, { payloadMemoryBytes: 8 }), big()]),
        OverBudgetError,
      );
      assert.equal((await store.stats()).queued, 5);
      // Small tasks still fit in what is left.
      assert.equal((await store.submit([spec(1, { payloadMemoryBytes: 8 })]))[0]?.created, true);
    });

    it("refuses a submit-and-wait past the budget and creates nothing, whether its wait ran out during the submission or not", async (t) => {
      const { store } = await make(t, { memoryBudgetBytes: 20_000 });
      for (let i = 0; i < 5; i++) await store.submit([big()]);
      await assert.rejects(store.submitAndWait(big(), 1), OverBudgetError);
      await assert.rejects(store.submitAndWait(big(), 30_000), OverBudgetError);
      assert.equal((await store.stats()).queued, 5);
    });

    it("answers a known idempotency key even when full: it creates nothing", async (t) => {
      const { store } = await make(t, { memoryBudgetBytes: 20_000 });
      const [first] = await store.submit([big({ idempotencyKey: "order-1" })]);
      for (let i = 0; i < 4; i++) await store.submit([big()]);
      const [again] = await store.submit([big({ idempotencyKey: "order-1" })]);
      assert.deepEqual(again, { id: first?.id, status: "queued", created: false });
    });

    it("gives back what a task counted once it has finished and retention dropped it", async (t) => {
      const { store } = await make(t, { memoryBudgetBytes: 20_000, resultMaxCount: 0 });
      for (let i = 0; i < 10; i++) {
        await store.submit([big()]);
        await finishAll(store, await store.lease("w1", 1, 0));
      }
      assert.equal((await store.stats()).budgetUsedBytes, 0);
    });
  });
}

/** An observer that writes down what it is told, in order. */
export function observe(): { observer: StoreObserver; events: string[] } {
  const events: string[] = [];
  return {
    events,
    observer: {
      submitted: (count) => events.push(`submitted ${count}`),
      attemptEnded: (outcome) => events.push(`attempt ${outcome}`),
      finished: (status) => events.push(`finished ${status}`),
    },
  };
}
