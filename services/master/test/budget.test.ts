import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { HEAP_BYTES } from "../src/json-body.js";
import { TASK_OVERHEAD_BYTES } from "../src/limits.js";
import { api, leaseTasks, startApp, submit, worker } from "./helper.js";

// A string of 2,998 characters counts its slot, its header and its characters, 3,030 bytes, and
// the task 3,542 with its overhead: 5 fit in 20,000, 6 do not.
const PAYLOAD = "x".repeat(2998);
const CHARGE = TASK_OVERHEAD_BYTES + HEAP_BYTES.slot + HEAP_BYTES.string + 2998;
const env = { BODY_LIMIT_BYTES: "8192", MEMORY_BUDGET_BYTES: "20000" };

async function stats(app: Parameters<typeof submit>[0]) {
  return (await api(app, "GET", "/v1/stats")).json();
}

describe("memory budget", () => {
  it("refuses a submission past MEMORY_BUDGET_BYTES with 503 and Retry-After, creating nothing", async (t) => {
    const { app } = startApp(t, { env });
    for (let i = 0; i < 5; i++) await submit(app, { type: "echo", payload: PAYLOAD });
    assert.equal((await stats(app)).budgetUsedBytes, 5 * CHARGE);

    const refused = await api(app, "POST", "/v1/tasks", { type: "echo", payload: PAYLOAD });
    assert.equal(refused.statusCode, 503);
    assert.equal(refused.headers["retry-after"], "5");
    assert.deepEqual(refused.json(), {
      error: "ServiceUnavailable",
      message: `the master holds ${5 * CHARGE} bytes of queued and running tasks; ${CHARGE} more would exceed MEMORY_BUDGET_BYTES (20000); try again later`,
    });
    // A batch is refused whole, even when part of it would fit.
    const batch = await api(app, "POST", "/v1/tasks/batch", {
      tasks: [
        { type: "echo", payload: 1 },
        { type: "echo", payload: PAYLOAD },
      ],
    });
    assert.equal(batch.statusCode, 503);
    assert.equal((await stats(app)).queued, 5);
    // Small tasks still fit in what is left.
    assert.equal(
      (await api(app, "POST", "/v1/tasks", { type: "echo", payload: 1 })).statusCode,
      202,
    );
  });

  it("answers a known idempotency key even when full: it creates nothing", async (t) => {
    const { app } = startApp(t, { env });
    const body = { type: "echo", payload: PAYLOAD, idempotencyKey: "order-1" };
    const id = await submit(app, body);
    for (let i = 0; i < 4; i++) await submit(app, { type: "echo", payload: PAYLOAD });
    const again = await api(app, "POST", "/v1/tasks", body);
    assert.equal(again.statusCode, 200);
    assert.equal(again.json().id, id);
  });

  it("drops retained results oldest first to make room, before it refuses a live task", async (t) => {
    const { app } = startApp(t, { env });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(await submit(app, { type: "echo", payload: PAYLOAD }));
    const leased = await leaseTasks(app, 5);
    // Finished in order, each keeping a result as large as its payload was.
    for (const task of leased) {
      const res = await worker(app, "complete", {
        workerId: "w1",
        results: [{ id: task.id, leaseId: task.leaseId, ok: true, result: task.payload }],
      });
      assert.deepEqual(res.json().accepted, [task.id]);
    }
    assert.deepEqual(await stats(app).then((s) => [s.retained, s.budgetUsedBytes]), [
      5,
      5 * CHARGE,
    ]);

    await submit(app, { type: "echo", payload: PAYLOAD });
    await submit(app, { type: "echo", payload: PAYLOAD });
    // Two new live tasks took the room of the two oldest results.
    const read = await Promise.all(ids.map((id) => api(app, "GET", `/v1/tasks/${id}`)));
    assert.deepEqual(
      read.map((res) => res.statusCode),
      [404, 404, 200, 200, 200],
    );
    assert.deepEqual(await stats(app).then((s) => [s.retained, s.queued]), [3, 2]);
  });

  it("keeps a result that arrives when the budget is full, dropping older results for it", async (t) => {
    const { app } = startApp(t, { env });
    const first = await submit(app, { type: "echo", payload: 1 });
    const [task] = await leaseTasks(app);
    await worker(app, "complete", {
      workerId: "w1",
      results: [{ id: first, leaseId: task?.leaseId, ok: true, result: PAYLOAD }],
    });
    const second = await submit(app, { type: "echo", payload: 1 });
    for (let i = 0; i < 4; i++) await submit(app, { type: "echo", payload: PAYLOAD });
    const leased = (await leaseTasks(app, 1)).find((t) => t.id === second);
    assert.ok(leased);
    // This result passes the budget: the older one goes, this one stays readable.
    const res = await worker(app, "complete", {
      workerId: "w1",
      results: [{ id: second, leaseId: leased.leaseId, ok: true, result: PAYLOAD }],
    });
    assert.deepEqual(res.json().accepted, [second]);
    assert.equal((await api(app, "GET", `/v1/tasks/${first}`)).statusCode, 404);
    assert.equal((await api(app, "GET", `/v1/tasks/${second}`)).json().result, PAYLOAD);
  });

  it("refuses tasks past the most one master holds with 503, after retained results make room", async (t) => {
    const { app } = startApp(t, { store: { tasksMax: 3 } });
    const finished = await submit(app, { type: "echo", payload: 1 });
    const [task] = await leaseTasks(app);
    await worker(app, "complete", {
      workerId: "w1",
      results: [{ id: task?.id, leaseId: task?.leaseId, ok: true, result: 1 }],
    });
    const queued = [await submit(app, { type: "echo", payload: 2 })];
    // A retained result makes room: the table holds 3 tasks, none of them that finished one.
    const batch = await api(app, "POST", "/v1/tasks/batch", {
      tasks: [
        { type: "echo", payload: 3 },
        { type: "echo", payload: 4 },
      ],
    });
    queued.push(...(batch.json().ids as string[]));
    assert.equal((await api(app, "GET", `/v1/tasks/${finished}`)).statusCode, 404);

    const refused = await api(app, "POST", "/v1/tasks", { type: "echo", payload: 5 });
    assert.equal(refused.statusCode, 503);
    assert.equal(refused.headers["retry-after"], "5");
    assert.deepEqual(refused.json(), {
      error: "ServiceUnavailable",
      message:
        "the master holds 3 queued and running tasks, and 3 tasks at most: 1 more do not fit; try again later",
    });
    assert.equal((await stats(app)).queued, 3);
    for (const id of queued) {
      assert.equal((await api(app, "GET", `/v1/tasks/${id}`)).json().status, "queued");
    }
  });

  it("gives back what a task counted once retention drops it", async (t) => {
    const { app } = startApp(t, { env: { ...env, RESULT_MAX_COUNT: "1" } });
    for (let i = 0; i < 2; i++) {
      await submit(app, { type: "echo", payload: PAYLOAD });
      const [task] = await leaseTasks(app);
      await worker(app, "complete", {
        workerId: "w1",
        results: [{ id: task?.id, leaseId: task?.leaseId, ok: true, result: null }],
      });
    }
    // One result of `null` is kept: the overhead and the result's slot.
    assert.equal((await stats(app)).budgetUsedBytes, TASK_OVERHEAD_BYTES + HEAP_BYTES.slot);
  });
});
