import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { api, leaseTasks, startDefaultApp, submit, worker } from "./helper.js";

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
});
