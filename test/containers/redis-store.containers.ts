import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import type Docker from "dockerode";
import { Redis } from "ioredis";
import type { ServiceName } from "../../infra/service-builds.js";
import {
  redisUnavailable,
  startRedis,
  type TestRedis,
} from "../../services/master/test/redis-server.js";
import { LoadBalancer } from "../integration/load-balancer.js";
import { mapLimited } from "../map-limited.js";
import { ContainerFleet, freeLocalPort, removeLeftovers, runPrefix } from "./containers.js";
import {
  type BuiltImage,
  buildServiceImages,
  sourceRoot,
  startMaster,
  startWorker,
} from "./deployment.js";
import { connectEngine } from "./engine.js";
import { MasterApi, waitUntil } from "./master-api.js";
import { expectedResult, mixedTasks } from "./tasks.js";

const taskCount = 300;
const masterCount = 2;
const workerCount = 2;
/** Tasks succeeded after which one master container gets SIGKILL, with work still queued. */
const killAfter = 100;

const services: ServiceName[] = ["master", "worker"];
const prefix = runPrefix();
const workerToken = randomBytes(16).toString("hex");
const apiToken = randomBytes(16).toString("hex");
// The same tags as system.containers.ts: whichever file runs second finds the build cached.
const tagOf = (service: ServiceName) => `taskfleet-${service}:containers-test`;

let docker: Docker;
let fleet: ContainerFleet | undefined;
let redis: TestRedis | undefined;
let balancer: LoadBalancer | undefined;
let images: Map<ServiceName, BuiltImage>;
const masterNames = Array.from({ length: masterCount }, (_, i) => `${prefix}-master-${i + 1}`);
const workerNames = Array.from({ length: workerCount }, (_, i) => `${prefix}-worker-${i + 1}`);

async function fleetLogs(): Promise<string> {
  const tails = await Promise.all(
    [...masterNames, ...workerNames].map(
      async (name) => `--- ${name} ---\n${await fleet?.logTail(name, 10)}`,
    ),
  );
  return tails.join("\n");
}

describe("the master image on STORE=redis: two master containers sharing a host redis-server behind a load balancer", {
  skip: redisUnavailable(),
  timeout: 30 * 60_000,
}, () => {
  let api: MasterApi;

  before(async () => {
    docker = await connectEngine();
    fleet = new ContainerFleet(docker);
    const removed = await removeLeftovers(docker);
    if (removed > 0) console.log(`removed ${removed} container(s) left by an earlier run`);
    images = await buildServiceImages(docker, sourceRoot, tagOf, services);
    // redis-server runs on the host, on 127.0.0.1: the containers reach it by host networking.
    redis = await startRedis();
    balancer = await LoadBalancer.start();
    for (const name of masterNames) {
      const port = await freeLocalPort();
      await startMaster(fleet, {
        name,
        image: images.get("master") as BuiltImage,
        port,
        apiToken,
        workerToken,
        env: {
          STORE: "redis",
          REDIS_URL: redis.url,
          LEASE_SECONDS: "3",
          RETRY_BACKOFF_MS: "100",
          LOG_LEVEL: "warn",
        },
      });
      balancer.add(name, port);
    }
    api = new MasterApi(balancer.url, apiToken);
    for (const name of workerNames) {
      await startWorker(fleet, {
        name,
        image: images.get("worker") as BuiltImage,
        masterUrl: balancer.url,
        workerToken,
        env: { CONCURRENCY: "4", LOG_LEVEL: "warn" },
      });
    }
    await waitUntil(
      async () => ((await api.stats()).activeWorkers >= workerCount ? true : undefined),
      {
        timeoutMs: 30_000,
        describe: async () =>
          `fewer than ${workerCount} workers reached the masters\n${await fleetLogs()}`,
      },
    );
  });

  after(async () => {
    await fleet?.removeAll();
    await balancer?.close();
    await redis?.stop();
  });

  it(`runs ${taskCount} tasks to success, each recorded once, while one master container is killed`, async () => {
    assert.deepEqual(balancer?.inRotation().sort(), [...masterNames].sort());
    const tasks = mixedTasks(taskCount);
    const ids = await mapLimited(tasks, 16, (task) => api.submit(task.type, task.payload));
    assert.equal(new Set(ids).size, taskCount, "two tasks were given the same id");

    await waitUntil(async () => ((await api.stats()).succeeded >= killAfter ? true : undefined), {
      timeoutMs: 60_000,
      describe: async () => `fewer than ${killAfter} tasks succeeded\n${await fleetLogs()}`,
    });
    assert.ok((await api.stats()).queued > 0, "the run ended before a master could be killed");
    const [doomed] = masterNames as [string];
    await docker.getContainer(doomed).kill({ signal: "SIGKILL" });
    // The survivor finishes the work: every task is in Redis, none in the dead master.
    await waitUntil(
      async () => {
        const stats = await api.stats();
        return stats.succeeded + stats.failed >= taskCount ? true : undefined;
      },
      {
        timeoutMs: 120_000,
        intervalMs: 500,
        describe: async () =>
          `not every task finished: ${JSON.stringify(await api.stats())}\n${await fleetLogs()}`,
      },
    );

    const views = await mapLimited(ids, 16, (id) => api.task(id));
    const wrong = views.filter(
      (view, i) =>
        view.status !== "succeeded" ||
        JSON.stringify(view.result) !== JSON.stringify(expectedResult(tasks[i])),
    );
    assert.deepEqual(wrong.slice(0, 10), [], `${wrong.length} task(s) went wrong`);
    const stats = await api.stats();
    assert.equal(stats.succeeded, taskCount);
    assert.equal(stats.failed, 0);

    // One accepted result per task: each is appended once to the store's list of finished tasks.
    const direct = new Redis({ host: redis?.host, port: redis?.port });
    try {
      const finished = await direct.lrange("taskfleet:finished", 0, -1);
      assert.equal(finished.length, taskCount, "a result was accepted twice");
      assert.deepEqual([...new Set(finished)].sort(), [...ids].sort());
    } finally {
      direct.disconnect();
    }
    const connections = balancer?.connectionCounts() ?? {};
    for (const name of masterNames) {
      assert.ok((connections[name] ?? 0) > 0, `${name} was never sent a connection`);
    }
    console.log(
      `${taskCount} tasks succeeded through ${masterCount} masters on one Redis; connections: ${JSON.stringify(connections)}; ` +
        `${views.filter((view) => view.attempts >= 2).length} task(s) ran a second time`,
    );
  });
});
