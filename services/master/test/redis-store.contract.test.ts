import assert from "node:assert/strict";
import { once } from "node:events";
import * as net from "node:net";
import { after, before, describe, it, type TestContext } from "node:test";
import { Redis } from "ioredis";
import { type RedisStoreOptions, RedisTaskStore } from "../src/store/redis-store.js";
import { StoreUnavailableError } from "../src/store/task-store.js";
import { FakeClock } from "./helper.js";
import { redisUnavailable, startRedis, type TestRedis } from "./redis-server.js";
import { type ContractOptions, observe, storeContract } from "./store-contract.js";

const skip = redisUnavailable();
let redis: TestRedis | undefined;
before(async () => {
  if (skip === undefined) redis = await startRedis();
});
after(async () => {
  await redis?.stop();
});

let stores = 0;

/** A store on the test's redis-server, under a prefix of its own, closed when the test ends. */
function redisStore(t: TestContext, options: Omit<RedisStoreOptions, "redis">): RedisTaskStore {
  if (redis === undefined) throw new Error("redis-server has not started");
  const store = new RedisTaskStore({
    redis: { host: redis.host, port: redis.port },
    ...options,
  });
  t.after(() => store.close());
  return store;
}

/**
 * Counts the scripts the test's redis-server has run so far (ioredis sends a script's first call
 * on a connection as EVAL, later ones as EVALSHA), for cases about how many a call takes.
 */
function scriptCounter(t: TestContext): () => Promise<number> {
  if (redis === undefined) throw new Error("redis-server has not started");
  const client = new Redis({ host: redis.host, port: redis.port });
  t.after(() => client.disconnect());
  return async () => {
    const stats = await client.info("commandstats");
    const calls = (name: string) =>
      Number(new RegExp(`cmdstat_${name}:calls=(\\d+)`).exec(stats)?.[1] ?? 0);
    return calls("eval") + calls("evalsha");
  };
}

/**
 * Waits until Redis has run `count` scripts more than `from`: a long poll started before has then
 * made its first try to lease (a fixed sleep is too short on a busy machine).
 */
async function untilScripts(
  scripts: () => Promise<number>,
  from: number,
  count: number,
): Promise<void> {
  const deadline = performance.now() + 5000;
  while ((await scripts()) < from + count) {
    if (performance.now() > deadline) throw new Error(`${count} scripts did not run within 5 s`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

storeContract(
  "redis store",
  async (t, options: ContractOptions) => {
    const store = redisStore(t, { ...options, prefix: `test-${++stores}:` });
    return { store, sweep: () => store.sweep() };
  },
  { skip },
);

describe("redis store: several masters on one Redis", { skip }, () => {
  const base = {
    leaseSeconds: 30,
    resultTtlSeconds: 3600,
    resultMaxCount: 100_000,
    retryBackoffMs: 1000,
    sweepIntervalMs: 0,
  };

  /** Two stores on one Redis under one prefix, as two masters of one deployment. */
  function twoMasters(t: TestContext): { a: RedisTaskStore; b: RedisTaskStore; prefix: string } {
    const prefix = `shared-${++stores}:`;
    return { a: redisStore(t, { ...base, prefix }), b: redisStore(t, { ...base, prefix }), prefix };
  }

  it("wakes a long poll on one store when another queues a task", async (t) => {
    const { a, b } = twoMasters(t);
    const started = performance.now();
    const polling = a.lease("w1", 4, 30_000);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const [submitted] = await b.submit([
      { type: "echo", payload: 1, maxAttempts: 3, timeoutSeconds: 60 },
    ]);
    const leased = await polling;
    const elapsedMs = performance.now() - started;
    assert.deepEqual(
      leased.map((task) => task.id),
      [submitted?.id],
    );
    assert.ok(elapsedMs < 1000, `answered after ${elapsedMs} ms`);
    // The lease is known to both: the other store takes its completion.
    assert.deepEqual(
      (
        await b.complete("w1", [
          { id: leased[0]?.id ?? "", leaseId: leased[0]?.leaseId ?? "", ok: true },
        ])
      ).accepted,
      [submitted?.id],
    );
  });

  it("wakes a wait for a result on one store when the task finishes through another", async (t) => {
    const { a, b } = twoMasters(t);
    const [submitted] = await a.submit([
      { type: "echo", payload: 1, maxAttempts: 3, timeoutSeconds: 60 },
    ]);
    const id = submitted?.id ?? "";
    const waiting = a.waitForFinish(id, 30_000);
    const [leased] = await b.lease("w1", 1, 0);
    const started = performance.now();
    await b.complete("w1", [{ id, leaseId: leased?.leaseId ?? "", ok: true, result: "done" }]);
    const task = await waiting;
    assert.equal(task?.result, "done");
    assert.ok(performance.now() - started < 1000);
  });

  it("publishes the finish of the tasks somebody waits for, and of no other", async (t) => {
    if (redis === undefined) throw new Error("redis-server has not started");
    const { a, b, prefix } = twoMasters(t);
    const listener = new Redis({ host: redis.host, port: redis.port });
    t.after(() => listener.disconnect());
    const messages: string[] = [];
    listener.on("message", (_channel: string, message: string) => messages.push(message));
    await listener.subscribe(`${prefix}finished`);
    const spec = { type: "echo", maxAttempts: 1, timeoutSeconds: 60 };
    const outcomes = await a.submit(
      Array.from({ length: 20 }, (_, n) => ({ ...spec, payload: n })),
    );
    const watchedId = outcomes[7]?.id ?? "";
    const waiting = a.waitForFinish(watchedId, 30_000);
    // The wait has marked its task (its first read) before the completions come.
    await new Promise((resolve) => setTimeout(resolve, 50));
    const leased = await b.lease("w1", 20, 0);
    await b.complete(
      "w1",
      leased.map((task) => ({
        id: task.id,
        leaseId: task.leaseId,
        ok: true,
        result: task.payload,
      })),
    );
    assert.deepEqual((await waiting)?.result, 7);
    await b.get(watchedId); // a round trip on Redis after the publish: the message has gone out
    assert.equal(messages.length, 1);
    assert.equal(JSON.parse(messages[0] ?? "[]")[0], watchedId);
  });

  /**
   * A task on a store of its own prefix, a client waiting on it (the wait has marked it by now),
   * and a plain connection to the same Redis, playing another party (an older master, a failure).
   */
  async function waitingOnOneTask(t: TestContext, waitMs: number) {
    if (redis === undefined) throw new Error("redis-server has not started");
    const prefix = `shared-${++stores}:`;
    const store = redisStore(t, { ...base, prefix });
    const [submitted] = await store.submit([
      { type: "echo", payload: 1, maxAttempts: 3, timeoutSeconds: 60 },
    ]);
    const id = submitted?.id ?? "";
    const waiting = store.waitForFinish(id, waitMs);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const other = new Redis({ host: redis.host, port: redis.port });
    t.after(() => other.disconnect());
    /** Finishes the task in Redis without telling anyone. */
    const succeed = (result: string) =>
      other.hset(`${prefix}t:${id}`, "status", "succeeded", "result", JSON.stringify(result));
    return { prefix, id, waiting, other, succeed };
  }

  it("answers a wait on a bare finished id, as masters from before views publish it", async (t) => {
    const { prefix, id, waiting, other, succeed } = await waitingOnOneTask(t, 30_000);
    // An older master finishes the task and publishes only its id.
    await succeed("old");
    const started = performance.now();
    await other.publish(`${prefix}finished`, id);
    const task = await waiting;
    assert.ok(performance.now() - started < 1000);
    assert.equal(task?.status, "succeeded");
    assert.equal(task?.result, "old");
  });

  it("answers a wait whose finished message was lost while its subscriber was away, once it is back", async (t) => {
    const { waiting, other, succeed } = await waitingOnOneTask(t, 20_000);
    // The subscriber is cut off, and the task finishes meanwhile: its message would be lost.
    await other.client("KILL", "TYPE", "pubsub");
    await succeed("missed");
    const started = performance.now();
    const task = await waiting;
    const elapsedMs = performance.now() - started;
    assert.ok(elapsedMs < 3000, `answered after ${elapsedMs} ms`);
    assert.deepEqual([task?.status, task?.result], ["succeeded", "missed"]);
  });

  it("hands a submission to the polls waiting on its own store, oldest first, the first in the submit's own script", async (t) => {
    const { a, b } = twoMasters(t);
    const scripts = scriptCounter(t);
    const start = await scripts();
    const first = a.lease("w1", 2, 30_000, { slots: 8 });
    await untilScripts(scripts, start, 1);
    const second = a.lease("w2", 2, 30_000, { slots: 4 });
    await untilScripts(scripts, start, 2);
    const spec = { type: "echo", maxAttempts: 3, timeoutSeconds: 60 };
    const before = await scripts();
    const outcomes = await a.submit(Array.from({ length: 5 }, (_, n) => ({ ...spec, payload: n })));
    const ids = outcomes.map((outcome) => outcome.id);
    assert.deepEqual(
      (await first).map((task) => task.id),
      ids.slice(0, 2),
    );
    assert.deepEqual(
      (await second).map((task) => task.id),
      ids.slice(2, 4),
    );
    // The submit, then one lease script for the second poll (the first was leased in the submit).
    assert.equal((await scripts()) - before, 2);
    const stats = await b.stats();
    assert.deepEqual([stats.queued, stats.running, stats.workerSlots], [1, 4, 12]);
    assert.deepEqual(
      (await b.lease("w3", 5, 0)).map((task) => task.id),
      ids.slice(4),
    );
  });

  it("submits and waits in one script, the task marked watched in it: another store's finish answers the wait", async (t) => {
    const { a, b } = twoMasters(t);
    const scripts = scriptCounter(t);
    const start = await scripts();
    const polling = b.lease("w1", 1, 30_000);
    await untilScripts(scripts, start, 1);
    const before = await scripts();
    const waiting = a.submitAndWait(
      { type: "echo", payload: 1, maxAttempts: 3, timeoutSeconds: 60 },
      30_000,
    );
    const [leased] = await polling;
    // The submit (no `tfWatch` after it), then the lease script of the poll on the other store.
    assert.equal((await scripts()) - before, 2);
    const started = performance.now();
    await b.complete("w1", [
      { id: leased?.id ?? "", leaseId: leased?.leaseId ?? "", ok: true, result: "done" },
    ]);
    const { outcome, task } = await waiting;
    assert.ok(performance.now() - started < 1000, "answered by the finished message");
    assert.deepEqual([outcome.id, task?.result], [leased?.id, "done"]);
  });

  it("completes and leases the next tasks in one script", async (t) => {
    const store = redisStore(t, { ...base, prefix: `own-${++stores}:` });
    const scripts = scriptCounter(t);
    const spec = { type: "echo", maxAttempts: 3, timeoutSeconds: 60 };
    await store.submit(Array.from({ length: 3 }, (_, n) => ({ ...spec, payload: n })));
    const [task] = await store.lease("w1", 1, 0);
    const before = await scripts();
    const outcome = await store.complete(
      "w1",
      [{ id: task?.id ?? "", leaseId: task?.leaseId ?? "", ok: true }],
      { max: 8 },
    );
    assert.equal((await scripts()) - before, 1);
    assert.deepEqual(
      outcome.leased?.map((leased) => leased.payload),
      [1, 2],
    );
  });

  it("hands each queued task to one poll across stores", async (t) => {
    const { a, b } = twoMasters(t);
    const polls = [a, b, a, b].map((store, n) => store.lease(`w${n}`, 2, 500));
    await new Promise((resolve) => setTimeout(resolve, 50));
    const spec = { type: "echo", maxAttempts: 3, timeoutSeconds: 60 };
    await a.submit(Array.from({ length: 5 }, (_, n) => ({ ...spec, payload: n })));
    const leased = (await Promise.all(polls)).flat();
    assert.deepEqual(leased.map((task) => task.payload).sort(), [0, 1, 2, 3, 4]);
  });

  it("counts an expired lease once when several stores sweep at the same time", async (t) => {
    const clock = new FakeClock();
    const prefix = `shared-${++stores}:`;
    const observed = [observe(), observe(), observe()];
    const masters = observed.map(({ observer }) =>
      redisStore(t, { ...base, prefix, now: clock.now, observer }),
    );
    const [a, b] = masters as [RedisTaskStore, RedisTaskStore];
    const spec = { type: "echo", maxAttempts: 2, timeoutSeconds: 60 };
    const outcomes = await a.submit(
      Array.from({ length: 50 }, (_, n) => ({ ...spec, payload: n })),
    );
    await b.lease("w1", 50, 0);
    clock.advance(30_000);
    await Promise.all(masters.flatMap((store) => [store.sweep(), store.sweep()]));
    const expired = observed.flatMap(({ events }) => events.filter((e) => e === "attempt expired"));
    assert.equal(expired.length, 50);
    const stats = await a.stats();
    assert.deepEqual([stats.queued, stats.running], [50, 0]);
    for (const { id } of outcomes) assert.equal((await b.get(id))?.attempts, 1);
    // Each task is queued once: the second attempt of each, then nothing.
    const again = await b.lease("w2", 100, 0);
    assert.equal(again.length, 50);
    assert.ok(again.every((task) => task.attempt === 2));
    // The last attempt runs out too: each task fails once.
    clock.advance(30_000);
    await Promise.all(masters.map((store) => store.sweep()));
    const finished = observed.flatMap(({ events }) =>
      events.filter((e) => e === "finished failed"),
    );
    assert.equal(finished.length, 50);
    assert.equal((await a.stats()).failed, 50);
  });

  it("gives every store on the same Redis the same backlog figures, whichever served the calls", async (t) => {
    const clock = new FakeClock();
    const prefix = `shared-${++stores}:`;
    // One store takes the submissions, another the leases; the third only reads.
    const [a, b, c] = [1, 2, 3].map(() => redisStore(t, { ...base, prefix, now: clock.now }));
    assert.ok(a && b && c);
    const spec = { type: "echo", maxAttempts: 3, timeoutSeconds: 60 };
    await a.submit(Array.from({ length: 5 }, (_, n) => ({ ...spec, payload: n })));
    clock.advance(2000);
    await a.submit([{ ...spec, payload: 5 }]);
    clock.advance(500);
    assert.equal((await b.lease("w1", 2, 0, { slots: 8 })).length, 2);
    // A worker that sends no slots counts the max it asked for.
    assert.equal((await b.lease("w2", 1, 0)).length, 1);
    const [fromA, fromB, fromC] = await Promise.all([a.stats(), b.stats(), c.stats()]);
    assert.deepEqual(fromB, fromA);
    assert.deepEqual(fromC, fromA);
    const { queued, delayed, running, activeWorkers, workerSlots, oldestQueuedSeconds } = fromA;
    assert.deepEqual(
      { queued, delayed, running, activeWorkers, workerSlots, oldestQueuedSeconds },
      {
        queued: 3,
        delayed: 0,
        running: 3,
        activeWorkers: 2,
        workerSlots: 9,
        oldestQueuedSeconds: 2.5,
      },
    );
  });

  it("keeps its keys under its prefix", async (t) => {
    const prefix = `own-${++stores}:`;
    const store = redisStore(t, { ...base, prefix });
    const other = redisStore(t, { ...base, prefix: `other-${stores}:` });
    await store.submit([{ type: "echo", payload: 1, maxAttempts: 1, timeoutSeconds: 60 }]);
    assert.deepEqual(await other.lease("w1", 1, 0), []);
    assert.equal((await store.lease("w1", 1, 0)).length, 1);
  });
});

describe("redis store: Redis away", { skip }, () => {
  /**
   * A port in front of the test's Redis that refuses every connection until `open()`: Redis as a
   * master sees it when it starts before Redis does.
   */
  async function gate(t: TestContext): Promise<{ port: number; open(): void }> {
    if (redis === undefined) throw new Error("redis-server has not started");
    const target = redis;
    let open = false;
    const sockets = new Set<net.Socket>();
    const server = net.createServer((socket) => {
      if (!open) return socket.destroy();
      const upstream = net.connect(target.port, target.host);
      sockets.add(socket).add(upstream);
      socket.pipe(upstream).pipe(socket);
      const end = () => {
        socket.destroy();
        upstream.destroy();
      };
      socket.on("error", end).on("close", end);
      upstream.on("error", end).on("close", end);
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    t.after(() => {
      for (const socket of sockets) socket.destroy();
      server.close();
    });
    return { port: (server.address() as net.AddressInfo).port, open: () => (open = true) };
  }

  it("answers unavailable while Redis cannot be reached, then serves long polls once it can", async (t) => {
    const door = await gate(t);
    const prefix = `late-${++stores}:`;
    const options = {
      leaseSeconds: 30,
      resultTtlSeconds: 3600,
      resultMaxCount: 100_000,
      retryBackoffMs: 1000,
      sweepIntervalMs: 0,
      prefix,
    };
    const store = new RedisTaskStore({ ...options, redis: { host: "127.0.0.1", port: door.port } });
    t.after(() => store.close());
    await assert.rejects(store.lease("w1", 1, 1000), StoreUnavailableError);
    await assert.rejects(store.stats(), StoreUnavailableError);

    door.open();
    // The first subscription failed; the store subscribes again once the connection is back, and
    // a long poll is then woken by a task queued through another store.
    await waitUntil(async () => (await store.stats().catch(() => undefined)) !== undefined);
    const other = redisStore(t, options);
    const polling = store.lease("w1", 1, 10_000);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const [submitted] = await other.submit([
      { type: "echo", payload: 1, maxAttempts: 3, timeoutSeconds: 60 },
    ]);
    const started = performance.now();
    const leased = await polling;
    assert.deepEqual(
      leased.map((task) => task.id),
      [submitted?.id],
    );
    assert.ok(performance.now() - started < 5000, "woken by the submit, not by the timeout");
  });
});

async function waitUntil(check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
