import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Redis } from "ioredis";
import { api, startDefaultApp, submit, WORKER_TOKEN, worker } from "./helper.js";
import { runMaster } from "./process.js";
import { redisUnavailable, startRedis, type TestRedis } from "./redis-server.js";

const skip = redisUnavailable();
const PASSWORD = "redis-password-for-tests";

/**
 * The master on STORE=redis as `server.ts` builds it: the store chosen by the environment, what a
 * draining master still does when its tasks are shared, and what clients see when Redis is away.
 */
describe("the master on STORE=redis", { skip }, () => {
  let redis: TestRedis;
  let db = 0;
  before(async () => {
    redis = await startRedis();
    const admin = new Redis({ host: redis.host, port: redis.port });
    await admin.config("SET", "requirepass", PASSWORD);
    admin.disconnect();
  });
  after(() => redis?.stop());

  /** The environment of a master on the test's Redis, in a database of its own. */
  const redisEnv = (password = PASSWORD) => ({
    STORE: "redis",
    REDIS_URL: `redis://${redis.host}:${redis.port}/${++db % 16}`,
    REDIS_PASSWORD: password,
  });

  it("keeps tasks where every master on the same Redis sees them", async (t) => {
    const env = redisEnv();
    const one = startDefaultApp(t, env);
    const other = startDefaultApp(t, env);
    const id = await submit(one, { type: "echo", payload: { n: 1 } });
    const leased = await worker(other, "lease", { workerId: "w1", max: 1 });
    assert.deepEqual(
      leased.json().tasks.map((task: { id: string }) => task.id),
      [id],
    );
    const { leaseId } = leased.json().tasks[0];
    const completed = await worker(one, "complete", {
      workerId: "w1",
      results: [{ id, leaseId, ok: true, result: { n: 1 } }],
    });
    assert.deepEqual(completed.json().accepted, [id]);
    const read = await api(other, "GET", `/v1/tasks/${id}`);
    assert.equal(read.json().status, "succeeded");
    assert.deepEqual(read.json().result, { n: 1 });
  });

  it("answers a submit-and-wait when another master records the result", async (t) => {
    const env = redisEnv();
    const one = startDefaultApp(t, env);
    const other = startDefaultApp(t, env);
    const waiting = api(one, "POST", "/v1/tasks?waitSeconds=30", { type: "echo", payload: 3 });
    const leased = await worker(other, "lease", { workerId: "w1", max: 1, waitMs: 5_000 });
    const [task] = leased.json().tasks;
    await worker(other, "complete", {
      workerId: "w1",
      results: [{ id: task.id, leaseId: task.leaseId, ok: true, result: 9 }],
    });
    const res = await waiting;
    assert.equal(res.statusCode, 202);
    assert.equal(res.json().id, task.id);
    assert.equal(res.json().status, "succeeded");
    assert.equal(res.json().result, 9);
  });

  it("leases in a completion's answer from the shared queue", async (t) => {
    const env = redisEnv();
    const one = startDefaultApp(t, env);
    const other = startDefaultApp(t, env);
    const first = await submit(one, { type: "echo", payload: 1 });
    const second = await submit(one, { type: "echo", payload: 2 });
    const [task] = (await worker(other, "lease", { workerId: "w1", max: 1 })).json().tasks;
    assert.equal(task.id, first);
    const res = await worker(one, "complete", {
      workerId: "w1",
      results: [{ id: task.id, leaseId: task.leaseId, ok: true, result: 1 }],
      lease: { max: 2 },
    });
    assert.deepEqual(res.json().accepted, [first]);
    assert.deepEqual(
      res.json().lease.tasks.map((leased: { id: string }) => leased.id),
      [second],
    );
    const [next] = res.json().lease.tasks;
    const done = await worker(other, "complete", {
      workerId: "w1",
      results: [{ id: next.id, leaseId: next.leaseId, ok: true, result: 2 }],
    });
    assert.deepEqual(done.json(), { accepted: [second], rejected: [] });
  });

  it("still takes submissions while draining, closing the connection, and hands out nothing", async (t) => {
    const env = redisEnv();
    const draining = startDefaultApp(t, env);
    const serving = startDefaultApp(t, env);
    draining.taskStore.drain();

    const submitted = await api(draining, "POST", "/v1/tasks", { type: "echo", payload: 2 });
    assert.equal(submitted.statusCode, 202);
    assert.equal(submitted.headers.connection, "close");
    assert.equal(submitted.headers["taskfleet-draining"], "true");
    assert.equal((await worker(draining, "lease", { workerId: "w1", max: 1 })).statusCode, 503);
    assert.equal((await api(draining, "GET", "/readyz")).statusCode, 503);

    // Another master hands the task out.
    const leased = await worker(serving, "lease", { workerId: "w1", max: 1 });
    assert.equal(leased.json().tasks[0]?.id, submitted.json().id);
  });

  it("answers 503 with Retry-After while Redis refuses it, and logs no password", async (t) => {
    const wrong = "not-the-password";
    const lines: string[] = [];
    const app = startDefaultApp(t, { ...redisEnv(wrong), LOG_LEVEL: "warn" }, (line) =>
      lines.push(line),
    );
    const refused = await api(app, "POST", "/v1/tasks", { type: "echo", payload: 3 });
    assert.equal(refused.statusCode, 503);
    assert.equal(refused.headers["retry-after"], "5");
    assert.deepEqual(refused.json(), {
      error: "ServiceUnavailable",
      message: "the task store is unavailable; try again shortly",
    });
    const read = await api(app, "GET", "/v1/tasks/00000000000000000000000000");
    assert.equal(read.statusCode, 503);
    assert.ok(
      lines.some((line) => line.includes("task store unavailable")),
      lines.join("\n"),
    );
    for (const line of lines) assert.doesNotMatch(line, new RegExp(`${wrong}|${PASSWORD}`));
  });

  it("starts as a process that says where its store is, never what the password is", async (t) => {
    const master = await runMaster(t, { WORKER_TOKEN, SHUTDOWN_DRAIN_SECONDS: "0", ...redisEnv() });
    const ready = master.lines().find((line) => line.msg === "master ready");
    assert.deepEqual(ready?.store, {
      kind: "redis",
      url: `redis://127.0.0.1:${redis.port}/${db % 16}`,
      password: true,
      ca: false,
    });
    const res = await fetch(`${master.base}/v1/tasks`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ type: "echo", payload: 4 }),
    });
    assert.equal(res.status, 202);
    master.child.kill("SIGTERM");
    await new Promise((resolve) => master.child.once("exit", resolve));
    assert.doesNotMatch(JSON.stringify(master.lines()) + master.stderr(), new RegExp(PASSWORD));
  });
});
