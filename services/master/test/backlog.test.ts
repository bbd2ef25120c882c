import assert from "node:assert/strict";
import type { AddressInfo } from "node:net";
import { after, before, describe, it, type TestContext } from "node:test";
import { buildApp } from "../src/app.js";
import { storeOptions } from "../src/store/open-store.js";
import { RedisTaskStore } from "../src/store/redis-store.js";
import { StoreUnavailableError } from "../src/store/task-store.js";
import {
  API_TOKEN,
  type App,
  api,
  FakeClock,
  type Leased,
  startApp,
  testConfig,
  WORKER_TOKEN,
  worker,
} from "./helper.js";
import { redisUnavailable, startRedis, type TestRedis } from "./redis-server.js";

const SCALER_TOKEN = "scaler-token-for-tests";
const BACKLOG = "/scaler/v1/backlog";

const backlog = (app: App, token?: string) => api(app, "GET", BACKLOG, undefined, token);

/** Leases through the worker API as a worker of `slots` slots would (none: an older worker). */
async function lease(app: App, workerId: string, max: number, slots?: number): Promise<Leased[]> {
  const res = await worker(app, "lease", {
    workerId,
    max,
    ...(slots === undefined ? {} : { slots }),
  });
  assert.equal(res.statusCode, 200, res.body);
  return res.json().tasks;
}

async function submitMany(app: App, count: number): Promise<void> {
  const tasks = Array.from({ length: count }, (_, n) => ({ type: "echo", payload: n }));
  const res = await api(app, "POST", "/v1/tasks/batch", { tasks });
  assert.equal(res.statusCode, 202, res.body);
}

describe("the autoscaler's backlog route", () => {
  it("answers 404 saying SCALER_TOKEN is not set when it is not, whatever the token", async (t) => {
    const { app } = startApp(t);
    for (const token of [undefined, SCALER_TOKEN]) {
      const res = await backlog(app, token);
      assert.equal(res.statusCode, 404);
      assert.deepEqual(res.json(), {
        error: "NotFound",
        message: "GET /scaler/v1/backlog is off: SCALER_TOKEN is not set on the master",
      });
    }
  });

  it("answers 401 without the scaler token, or with another token, the other two included", async (t) => {
    const { app } = startApp(t, { env: { SCALER_TOKEN, API_TOKEN } });
    for (const token of [undefined, "wrong", API_TOKEN, WORKER_TOKEN]) {
      const res = await backlog(app, token);
      assert.equal(res.statusCode, 401, `token ${token}`);
      assert.equal(res.json().error, "Unauthorized");
      assert.equal(res.headers["www-authenticate"], "Bearer");
    }
    // The scaler token opens no other door.
    assert.equal((await api(app, "GET", "/v1/stats", undefined, SCALER_TOKEN)).statusCode, 401);
    const leased = await api(app, "POST", "/worker/v1/lease", { workerId: "w" }, SCALER_TOKEN);
    assert.equal(leased.statusCode, 401);
    // An unknown path under /scaler/ tells nothing without the token.
    assert.equal((await api(app, "GET", "/scaler/v1/nope")).statusCode, 401);
    assert.equal(
      (await api(app, "GET", "/scaler/v1/nope", undefined, SCALER_TOKEN)).statusCode,
      404,
    );
  });

  it("answers the demand (ready and running tasks), the delayed ones, the oldest wait and the slots", async (t) => {
    const clock = new FakeClock();
    const { app } = startApp(t, {
      env: { SCALER_TOKEN },
      store: { now: clock.now, random: () => 0.999999 },
    });
    await submitMany(app, 6);
    clock.advance(3000);
    const [failing] = await lease(app, "w1", 2, 4);
    const done = await worker(app, "complete", {
      workerId: "w1",
      results: [{ id: failing?.id, leaseId: failing?.leaseId, ok: false, error: "boom" }],
    });
    assert.deepEqual(done.json().accepted, [failing?.id]);
    // A worker that does not send its slots counts the max it asked for.
    await lease(app, "w2", 1);
    const res = await backlog(app, SCALER_TOKEN);
    assert.equal(res.statusCode, 200);
    assert.deepEqual(res.json(), {
      demand: 3 + 2,
      ready: 3,
      running: 2,
      delayed: 1,
      oldestQueuedSeconds: 3,
      workerSlots: 4 + 1,
    });
    // The same figures as the client's stats.
    const stats = (await api(app, "GET", "/v1/stats")).json();
    assert.deepEqual(
      [stats.queued - stats.delayed, stats.running, stats.delayed, stats.workerSlots],
      [3, 2, 1, 5],
    );
    assert.equal(stats.oldestQueuedSeconds, 3);
  });

  it("answers 503 with Retry-After when the store cannot be read", async (t) => {
    const { app, store } = startApp(t, { env: { SCALER_TOKEN } });
    store.stats = async () => {
      throw new StoreUnavailableError(new Error("Connection is closed."));
    };
    const res = await backlog(app, SCALER_TOKEN);
    assert.equal(res.statusCode, 503);
    assert.equal(res.headers["retry-after"], "5");
    assert.deepEqual(res.json(), {
      error: "ServiceUnavailable",
      message: "the task store is unavailable; try again shortly",
    });
  });

  it("is served on the internal port only when INTERNAL_PORT is set", async (t) => {
    const { app } = startApp(t, { env: { SCALER_TOKEN, API_TOKEN, INTERNAL_PORT: "8081" } });
    await app.listen({ port: 0, host: "127.0.0.1" });
    const publicPort = (app.server.address() as AddressInfo).port;
    const internalPort = await app.internalListener?.listen(0, "127.0.0.1");
    const get = (port: number | undefined) =>
      fetch(`http://127.0.0.1:${port}${BACKLOG}`, {
        headers: { authorization: `Bearer ${SCALER_TOKEN}` },
      });
    const hidden = await get(publicPort);
    assert.equal(hidden.status, 404);
    assert.match(
      ((await hidden.json()) as { message: string }).message,
      /^no route for GET \/scaler\/v1\/backlog on this port; .* served on the master's internal port$/,
    );
    const served = await get(internalPort);
    assert.equal(served.status, 200);
    assert.equal(((await served.json()) as { demand: number }).demand, 0);
  });
});

describe("the backlog with several masters on one Redis", { skip: redisUnavailable() }, () => {
  let redis: TestRedis;
  let prefixes = 0;
  before(async () => {
    redis = await startRedis();
  });
  after(() => redis?.stop());

  /** A master app on the test's Redis under `prefix`, on the test's clock, closed after it. */
  function redisMaster(t: TestContext, prefix: string, clock: FakeClock): App {
    const config = testConfig({ SCALER_TOKEN });
    const store = new RedisTaskStore({
      ...storeOptions(config),
      sweepIntervalMs: 0,
      now: clock.now,
      prefix,
      redis: { host: redis.host, port: redis.port },
    });
    const app = buildApp({ config, store, logger: false });
    t.after(() => app.close());
    return app;
  }

  it("answers the same backlog and stats on every master, whichever took the calls", async (t) => {
    const clock = new FakeClock();
    const prefix = `backlog-${++prefixes}:`;
    const [one, two] = [redisMaster(t, prefix, clock), redisMaster(t, prefix, clock)];
    assert.ok(one && two);
    await submitMany(one, 10);
    clock.advance(4500);
    assert.equal((await lease(two, "w1", 3, 16)).length, 3);
    assert.equal((await lease(two, "w2", 2, 2)).length, 2);
    const answers = await Promise.all([one, two].map((app) => backlog(app, SCALER_TOKEN)));
    for (const answer of answers) {
      assert.equal(answer.statusCode, 200);
      assert.deepEqual(answer.json(), {
        demand: 10,
        ready: 5,
        running: 5,
        delayed: 0,
        oldestQueuedSeconds: 4.5,
        workerSlots: 18,
      });
    }
    const [statsOne, statsTwo] = await Promise.all(
      [one, two].map(async (app) => (await api(app, "GET", "/v1/stats")).json()),
    );
    assert.deepEqual(statsTwo, statsOne);
  });
});
