import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { HEAP_BYTES } from "../src/json-body.js";
import { TASK_OVERHEAD_BYTES } from "../src/limits.js";
import { api, FakeClock, leaseTasks, startApp, submit, worker } from "./helper.js";

describe("submitting and reading tasks", () => {
  it("queues a task and shows it with ISO timestamps and the defaults applied", async (t) => {
    const clock = new FakeClock();
    const { app } = startApp(t, { env: { MAX_ATTEMPTS: "4" }, store: { now: clock.now } });
    const res = await api(app, "POST", "/v1/tasks", { type: "echo", payload: { a: 1 } });
    assert.equal(res.statusCode, 202);
    const { id, status } = res.json();
    assert.equal(status, "queued");
    assert.match(id, /^[A-Za-z0-9_-]{16}$/);
    assert.deepEqual((await api(app, "GET", `/v1/tasks/${id}`)).json(), {
      id,
      type: "echo",
      status: "queued",
      attempts: 0,
      createdAt: "2026-01-01T00:00:00.000Z",
    });
    const [leased] = await leaseTasks(app);
    assert.deepEqual(leased?.payload, { a: 1 });
    assert.equal(leased?.timeoutSeconds, 300);
  });

  it("returns the existing task for a repeated idempotency key instead of a second one", async (t) => {
    const { app } = startApp(t);
    const body = { type: "echo", payload: 1, idempotencyKey: "order-42" };
    const first = await api(app, "POST", "/v1/tasks", body);
    const second = await api(app, "POST", "/v1/tasks", { ...body, payload: 2 });
    assert.equal(first.statusCode, 202);
    assert.equal(second.statusCode, 200);
    assert.equal(second.json().id, first.json().id);
    const stats = (await api(app, "GET", "/v1/stats")).json();
    assert.equal(stats.queued, 1);
    const leased = await leaseTasks(app);
    assert.equal(leased.length, 1);
    assert.equal(leased[0]?.payload, 1);
  });

  it("holds idempotency keys within one batch and across batches and single submissions", async (t) => {
    const { app } = startApp(t);
    const single = await submit(app, { type: "echo", payload: 0, idempotencyKey: "k0" });
    const first = await api(app, "POST", "/v1/tasks/batch", {
      tasks: [
        { type: "echo", payload: 1, idempotencyKey: "k1" },
        { type: "echo", payload: 2, idempotencyKey: "k1" },
        { type: "echo", payload: 3, idempotencyKey: "k0" },
        { type: "echo", payload: 4 },
      ],
    });
    assert.equal(first.statusCode, 202);
    const ids: string[] = first.json().ids;
    assert.equal(ids.length, 4);
    assert.equal(ids[0], ids[1]);
    assert.equal(ids[2], single);
    assert.notEqual(ids[3], ids[0]);
    const second = await api(app, "POST", "/v1/tasks/batch", {
      tasks: [{ type: "echo", payload: 5, idempotencyKey: "k1" }],
    });
    assert.deepEqual(second.json().ids, [ids[0]]);
    assert.equal((await api(app, "GET", "/v1/stats")).json().queued, 3);
  });

  it("accepts 10,000 tasks in one batch, in order, each id distinct", async (t) => {
    const { app } = startApp(t);
    const tasks = Array.from({ length: 10_000 }, (_, n) => ({ type: "echo", payload: n }));
    const res = await api(app, "POST", "/v1/tasks/batch", { tasks });
    assert.equal(res.statusCode, 202);
    const ids: string[] = res.json().ids;
    assert.equal(new Set(ids).size, 10_000);
    const leased = await leaseTasks(app, 256);
    assert.deepEqual(
      leased.map((task) => task.payload),
      Array.from({ length: 256 }, (_, n) => n),
    );
    assert.equal(leased[0]?.id, ids[0]);
  });

  it("refuses a batch of more than 10,000 tasks", async (t) => {
    const { app } = startApp(t, { env: { BODY_LIMIT_BYTES: "10000000" } });
    const tasks = Array.from({ length: 10_001 }, () => ({ type: "echo", payload: 0 }));
    const res = await api(app, "POST", "/v1/tasks/batch", { tasks });
    assert.equal(res.statusCode, 400);
    assert.equal(res.json().message, "body/tasks must NOT have more than 10000 items");
  });

  it("answers a waitSeconds request as soon as the task finishes", async (t) => {
    const { app } = startApp(t);
    const id = await submit(app, { type: "echo", payload: "hi" });
    const started = performance.now();
    const waiting = api(app, "GET", `/v1/tasks/${id}?waitSeconds=30`);
    const [leased] = await leaseTasks(app);
    assert.ok(leased);
    await worker(app, "complete", {
      workerId: "w1",
      results: [{ id, leaseId: leased.leaseId, ok: true, result: { echoed: "hi" } }],
    });
    const res = await waiting;
    const elapsedMs = performance.now() - started;
    assert.equal(res.statusCode, 200);
    const task = res.json();
    assert.equal(task.status, "succeeded");
    assert.deepEqual(task.result, { echoed: "hi" });
    assert.equal(task.attempts, 1);
    assert.ok(task.startedAt && task.finishedAt);
    assert.ok(elapsedMs < 1000, `answered after ${elapsedMs} ms`);
  });

  it("submits and waits in one request: POST /v1/tasks?waitSeconds= answers with the finished task", async (t) => {
    const { app } = startApp(t);
    const waiting = api(app, "POST", "/v1/tasks?waitSeconds=30", { type: "echo", payload: "hi" });
    const [leased] = await leaseTasks(app, 1, 5_000);
    assert.ok(leased);
    assert.equal(leased.payload, "hi");
    await worker(app, "complete", {
      workerId: "w1",
      results: [{ id: leased.id, leaseId: leased.leaseId, ok: true, result: { echoed: "hi" } }],
    });
    const res = await waiting;
    // Created by this request: 202, as without waitSeconds; the body is the task, as GET shows it.
    assert.equal(res.statusCode, 202);
    const task = res.json();
    assert.equal(task.id, leased.id);
    assert.equal(task.status, "succeeded");
    assert.deepEqual(task.result, { echoed: "hi" });
    assert.deepEqual(task, (await api(app, "GET", `/v1/tasks/${leased.id}`)).json());
  });

  it("answers a submit-and-wait with the task as it stands when the time runs out, and a repeated key at once", async (t) => {
    const { app } = startApp(t);
    const body = { type: "echo", payload: 1, idempotencyKey: "order-7" };
    const started = performance.now();
    const res = await api(app, "POST", "/v1/tasks?waitSeconds=1", body);
    const elapsedMs = performance.now() - started;
    assert.equal(res.statusCode, 202);
    assert.equal(res.json().status, "queued");
    assert.equal(typeof res.json().createdAt, "string");
    assert.ok(elapsedMs >= 950 && elapsedMs < 3000, `answered after ${elapsedMs} ms`);

    const [leased] = await leaseTasks(app);
    await worker(app, "complete", {
      workerId: "w1",
      results: [{ id: leased?.id, leaseId: leased?.leaseId, ok: true, result: 7 }],
    });
    const again = await api(app, "POST", "/v1/tasks?waitSeconds=30", body);
    assert.equal(again.statusCode, 200);
    assert.equal(again.json().id, res.json().id);
    assert.equal(again.json().result, 7);
  });

  it("answers a waitSeconds request with the task as it stands when the time runs out", async (t) => {
    const { app } = startApp(t);
    const id = await submit(app, { type: "echo", payload: 1 });
    const started = performance.now();
    const res = await api(app, "GET", `/v1/tasks/${id}?waitSeconds=1`);
    const elapsedMs = performance.now() - started;
    assert.equal(res.json().status, "queued");
    assert.ok(elapsedMs >= 950 && elapsedMs < 3000, `answered after ${elapsedMs} ms`);
  });

  it("answers a waitSeconds request at once for a task that has already finished", async (t) => {
    const { app } = startApp(t);
    const id = await submit(app, { type: "echo", payload: 1 });
    const [leased] = await leaseTasks(app);
    await worker(app, "complete", {
      workerId: "w1",
      results: [{ id, leaseId: leased?.leaseId, ok: false, error: "bad input", retryable: false }],
    });
    const started = performance.now();
    const res = await api(app, "GET", `/v1/tasks/${id}?waitSeconds=30`);
    assert.ok(performance.now() - started < 500);
    assert.equal(res.json().status, "failed");
    assert.equal(res.json().error, "bad input");
    assert.equal("result" in res.json(), false);
  });

  it("reports queue depth, running, finished, active workers and the backlog in stats", async (t) => {
    const clock = new FakeClock();
    const { app } = startApp(t, { store: { now: clock.now } });
    const tasks = Array.from({ length: 5 }, (_, n) => ({ type: "echo", payload: n }));
    await api(app, "POST", "/v1/tasks/batch", { tasks });
    clock.advance(1250);
    const leased = await leaseTasks(app, 3, 0, "w1");
    const [other] = (await worker(app, "lease", { workerId: "w2", max: 1, slots: 8 })).json().tasks;
    await worker(app, "complete", {
      workerId: "w2",
      results: [
        { id: other?.id, leaseId: other?.leaseId, ok: false, error: "no", retryable: false },
      ],
    });
    await worker(app, "complete", {
      workerId: "w1",
      results: [{ id: leased[0]?.id, leaseId: leased[0]?.leaseId, ok: true, result: null }],
    });
    assert.deepEqual((await api(app, "GET", "/v1/stats")).json(), {
      queued: 1,
      delayed: 0,
      running: 2,
      succeeded: 1,
      failed: 1,
      retained: 2,
      activeWorkers: 2,
      // The overhead of 5 tasks, the slots of 3 live payloads (small integers) and of the result
      // null, and the error "no" (a string: header and two bytes a character, at most).
      budgetUsedBytes: 5 * TASK_OVERHEAD_BYTES + 4 * HEAP_BYTES.slot + HEAP_BYTES.string + 2 * 2,
      // w1 sent no slots: its request's max counts.
      workerSlots: 3 + 8,
      // The one task still queued, since its submission.
      oldestQueuedSeconds: 1.25,
    });
  });

  it("stops taking tasks once draining, says so to every client, and in readiness", async (t) => {
    const { app, store } = startApp(t);
    const id = await submit(app, { type: "echo", payload: 1 });
    await leaseTasks(app, 1);
    const polling = worker(app, "lease", { workerId: "w1", max: 1, waitMs: 30_000 });
    const reading = api(app, "GET", `/v1/tasks/${id}?waitSeconds=60`);
    await new Promise((resolve) => setTimeout(resolve, 20));
    store.drain();

    // A worker's poll cut short is a 503 it backs off on, not an empty list it polls again on.
    const polled = await polling;
    assert.equal(polled.statusCode, 503);
    assert.equal(polled.headers["retry-after"], "5");
    assert.equal(polled.json().message, "the master is shutting down and hands out no more work");
    // A client's wait cut short shows the task as it stands, marked as cut short by the drain.
    const read = await reading;
    assert.equal(read.statusCode, 200);
    assert.equal(read.json().status, "running");
    assert.equal(read.headers["taskfleet-draining"], "true");
    assert.equal(read.headers.connection, "close");

    const res = await api(app, "POST", "/v1/tasks", { type: "echo", payload: 1 });
    assert.equal(res.statusCode, 503);
    assert.equal(res.headers["retry-after"], "5");
    assert.deepEqual(res.json(), {
      error: "ServiceUnavailable",
      message: "the master is shutting down and accepts no new tasks",
    });
    const again = await worker(app, "lease", { workerId: "w1", max: 1 });
    assert.equal(again.statusCode, 503);
    assert.equal((await api(app, "GET", "/readyz")).statusCode, 503);
    assert.equal((await api(app, "GET", "/healthz")).statusCode, 200);
  });

  it("marks nothing as draining before the drain", async (t) => {
    const { app } = startApp(t);
    const res = await api(app, "GET", "/healthz");
    assert.equal(res.headers["taskfleet-draining"], undefined);
    assert.notEqual(res.headers.connection, "close");
  });
});
