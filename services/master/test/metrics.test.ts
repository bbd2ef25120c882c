import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  type App,
  api,
  FakeClock,
  leaseTasks,
  startApp,
  startDefaultApp,
  submit,
  worker,
} from "./helper.js";

/** The value of an unlabelled sample in `/metrics`, as Prometheus text writes it. */
async function sample(app: App, name: string): Promise<string | undefined> {
  const text = (await api(app, "GET", "/metrics")).body;
  return new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1];
}

describe("metrics", () => {
  it("serves Prometheus text with the taskfleet_ names, counting what happened", async (t) => {
    const app = startDefaultApp(t);
    const id = await submit(app, { type: "echo", payload: 1 });
    await submit(app, { type: "echo", payload: 2 });
    await api(app, "POST", "/v1/tasks", { type: "echo", payload: 3, idempotencyKey: "k" });
    await api(app, "POST", "/v1/tasks", { type: "echo", payload: 3, idempotencyKey: "k" });
    const [task] = await leaseTasks(app, 1);
    assert.equal(task?.id, id);
    await worker(app, "complete", {
      workerId: "w1",
      results: [{ id, leaseId: task?.leaseId, ok: true, result: 1 }],
    });
    const res = await api(app, "GET", "/metrics");
    assert.equal(res.statusCode, 200);
    assert.match(String(res.headers["content-type"]), /^text\/plain; version=0\.0\.4/);
    const text = res.body;
    const sample = (line: string) => assert.ok(text.includes(`${line}\n`), `missing ${line}`);
    sample("taskfleet_tasks_submitted_total 3");
    sample('taskfleet_tasks_finished_total{status="succeeded"} 1');
    sample('taskfleet_task_attempts_total{outcome="succeeded"} 1');
    sample("taskfleet_lease_expirations_total 0");
    sample('taskfleet_tasks{status="queued"} 2');
    sample('taskfleet_tasks{status="running"} 0');
    sample('taskfleet_tasks{status="retained"} 1');
    sample("taskfleet_active_workers 1");
    // The same figure as /v1/stats.
    const { budgetUsedBytes } = (await api(app, "GET", "/v1/stats")).json();
    assert.ok(budgetUsedBytes > 0);
    sample(`taskfleet_memory_budget_used_bytes ${budgetUsedBytes}`);
    sample('taskfleet_task_run_seconds_count{outcome="succeeded"} 1');
    assert.match(
      text,
      /taskfleet_http_request_duration_seconds_count\{method="POST",route="\/v1\/tasks",status_code="202"\} 3/,
    );
    assert.match(text, /^taskfleet_process_resident_memory_bytes \d+/m);
    const names = new Set([...text.matchAll(/^# TYPE (\S+)/gm)].map((m) => m[1]));
    for (const name of names) assert.match(String(name), /^taskfleet_/);
  });

  it("shows the backlog: the oldest ready task's age, the workers' slots, ready tasks per slot", async (t) => {
    const clock = new FakeClock();
    const { app } = startApp(t, { store: { now: clock.now } });
    const backlogGauges = async () => [
      await sample(app, "taskfleet_oldest_queued_task_age_seconds"),
      await sample(app, "taskfleet_worker_slots"),
      await sample(app, "taskfleet_queued_tasks_per_worker_slot"),
    ];
    assert.deepEqual(await backlogGauges(), ["0", "0", "0"]);
    for (let n = 0; n < 5; n++) await submit(app, { type: "echo", payload: n });
    // Tasks ready and no worker to run them.
    assert.deepEqual(await backlogGauges(), ["0", "0", "+Inf"]);
    clock.advance(2500);
    const leased = await worker(app, "lease", { workerId: "w1", max: 1, slots: 2 });
    assert.equal(leased.json().tasks.length, 1);
    assert.deepEqual(await backlogGauges(), ["2.5", "2", "2"]);
    await leaseTasks(app, 4, 0, "w2");
    assert.deepEqual(await backlogGauges(), ["0", "6", "0"]);
  });

  it("reads the store's figures once per scrape, not once per gauge", async (t) => {
    const { app, store } = startApp(t);
    const stats = store.stats.bind(store);
    let reads = 0;
    store.stats = () => {
      reads++;
      return stats();
    };
    await api(app, "GET", "/metrics");
    assert.equal(reads, 1);
    await api(app, "GET", "/metrics");
    assert.equal(reads, 2);
  });
});
