import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { api, FakeClock, type Leased, leaseTasks, startApp, submit, worker } from "./helper.js";

async function finishAll(app: Parameters<typeof leaseTasks>[0], leased: Leased[]): Promise<void> {
  const results = leased.map((task) => ({ id: task.id, leaseId: task.leaseId, ok: true }));
  const res = await worker(app, "complete", { workerId: "w1", results });
  assert.equal(res.json().accepted.length, leased.length);
}

describe("retention of finished tasks", () => {
  it("drops finished tasks once RESULT_TTL_SECONDS has passed", async (t) => {
    const clock = new FakeClock();
    const { app, store } = startApp(t, {
      env: { RESULT_TTL_SECONDS: "60" },
      store: { now: clock.now },
    });
    const old = await submit(app, { type: "echo", payload: 1 });
    await finishAll(app, await leaseTasks(app));
    clock.advance(30_000);
    const young = await submit(app, { type: "echo", payload: 2 });
    await finishAll(app, await leaseTasks(app));
    const queued = await submit(app, { type: "echo", payload: 3 });
    clock.advance(30_000);
    store.sweep();
    assert.equal((await api(app, "GET", `/v1/tasks/${old}`)).statusCode, 404);
    assert.equal((await api(app, "GET", `/v1/tasks/${young}`)).json().status, "succeeded");
    clock.advance(3_600_000);
    store.sweep();
    assert.equal((await api(app, "GET", `/v1/tasks/${young}`)).statusCode, 404);
    // Only finished tasks expire; a queued one waits however long it takes.
    assert.equal((await api(app, "GET", `/v1/tasks/${queued}`)).json().status, "queued");
    const stats = (await api(app, "GET", "/v1/stats")).json();
    assert.equal(stats.retained, 0);
    assert.equal(stats.succeeded, 2);
  });

  it("keeps at most RESULT_MAX_COUNT finished tasks, dropping the oldest first", async (t) => {
    const { app } = startApp(t, { env: { RESULT_MAX_COUNT: "3" } });
    const ids: string[] = [];
    for (let n = 0; n < 5; n++) {
      ids.push(await submit(app, { type: "echo", payload: n }));
      await finishAll(app, await leaseTasks(app));
    }
    const statuses = await Promise.all(
      ids.map(async (id) => (await api(app, "GET", `/v1/tasks/${id}`)).statusCode),
    );
    assert.deepEqual(statuses, [404, 404, 200, 200, 200]);
    assert.equal((await api(app, "GET", "/v1/stats")).json().retained, 3);
  });

  it("forgets the idempotency key of a dropped task, so the key can be used again", async (t) => {
    const { app } = startApp(t, { env: { RESULT_MAX_COUNT: "1" } });
    const first = await submit(app, { type: "echo", payload: 1, idempotencyKey: "k" });
    await finishAll(app, await leaseTasks(app));
    await submit(app, { type: "echo", payload: 2 });
    await finishAll(app, await leaseTasks(app));
    const again = await api(app, "POST", "/v1/tasks", {
      type: "echo",
      payload: 3,
      idempotencyKey: "k",
    });
    assert.equal(again.statusCode, 202);
    assert.notEqual(again.json().id, first);
  });

  it("holds a bounded number of tasks under a steady stream", async (t) => {
    const clock = new FakeClock();
    const { app, store } = startApp(t, {
      env: { RESULT_TTL_SECONDS: "10", RESULT_MAX_COUNT: "500" },
      store: { now: clock.now },
    });
    for (let round = 0; round < 20; round++) {
      const tasks = Array.from({ length: 100 }, (_, n) => ({ type: "echo", payload: n }));
      await api(app, "POST", "/v1/tasks/batch", { tasks });
      await finishAll(app, await leaseTasks(app, 100));
      clock.advance(1000);
      store.sweep();
    }
    const stats = (await api(app, "GET", "/v1/stats")).json();
    assert.equal(stats.succeeded, 2000);
    assert.ok(stats.retained <= 500, `retained ${stats.retained}`);
    assert.equal(stats.queued + stats.running, 0);
  });
});
