import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { api, FakeClock, type Leased, leaseTasks, startApp, submit, worker } from "./helper.js";

async function finishAll(app: Parameters<typeof leaseTasks>[0], leased: Leased[]): Promise<void> {
  const results = leased.map((task) => ({ id: task.id, leaseId: task.leaseId, ok: true }));
  const res = await worker(app, "complete", { workerId: "w1", results });
  assert.equal(res.json().accepted.length, leased.length);
}

// Retention itself is tested against every store in store-contract.ts; these hold that the
// environment reaches the store and what a client then sees.
describe("retention of finished tasks, as configured and as clients see it", () => {
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
});
