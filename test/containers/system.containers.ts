import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import type Docker from "dockerode";
import {
  fromRepoRoot,
  imagePlatform,
  type ServiceName,
  serviceBuilds,
} from "../../infra/service-builds.js";
import {
  ContainerFleet,
  freeLocalPort,
  lockedDownHostConfig,
  removeLeftovers,
  runPrefix,
} from "./containers.js";
import { connectEngine } from "./engine.js";
import {
  buildImage,
  finalBaseImage,
  type ImageGrowth,
  imageGrowth,
  nonRootUser,
  toMB,
} from "./images.js";
import { MasterApi, mapLimited, parseMetrics, type TaskView, waitUntil } from "./master-api.js";
import { expectedResult, mixedTasks } from "./tasks.js";

const taskCount = 500;
const workerCount = 3;
const leaseSeconds = 3;
const workerGraceSeconds = 5;
/** Finished tasks after which one worker is killed, then another stopped: mid-run, with work queued. */
const killAfter = Math.floor(taskCount * 0.2);
const stopAfter = Math.floor(taskCount * 0.4);
const finishedCounter = "taskfleet_tasks_finished_total";

const services = Object.keys(serviceBuilds) as ServiceName[];
const prefix = runPrefix();
const workerToken = randomBytes(16).toString("hex");
const apiToken = randomBytes(16).toString("hex");
const resultsFile = fromRepoRoot("test/containers/results/images.json");

let docker: Docker;
let fleet: ContainerFleet | undefined;
let master: MasterApi;
const users = new Map<ServiceName, string>();
const workers: { name: string; container: Docker.Container }[] = [];

const tag = (service: ServiceName) => `taskfleet-${service}:containers-test`;

async function describeFleet(): Promise<string> {
  if (!fleet) return "(no containers)";
  const names = [`${prefix}-master`, ...workers.map((worker) => worker.name)];
  const tails = await Promise.all(
    names.map(async (name) => `--- ${name} ---\n${await fleet?.logTail(name, 15)}`),
  );
  return tails.join("\n");
}

// Ctrl-C must not leave containers holding ports on the host.
process.once("SIGINT", () => {
  void (fleet?.removeAll() ?? Promise.resolve()).finally(() => process.exit(130));
});

describe("the master and worker images, built from the Pulumi program's Dockerfiles and run as locked-down containers", {
  timeout: 20 * 60_000,
}, () => {
  before(async () => {
    docker = await connectEngine();
    fleet = new ContainerFleet(docker);
    const removed = await removeLeftovers(docker);
    if (removed > 0) console.log(`removed ${removed} container(s) left by an earlier run`);

    await Promise.all(
      services.map(async (service) => {
        const started = Date.now();
        await buildImage(docker, {
          name: service,
          contextDir: fromRepoRoot(serviceBuilds[service].context),
          dockerfilePath: fromRepoRoot(serviceBuilds[service].dockerfile),
          tag: tag(service),
          platform: imagePlatform,
        });
        console.log(`built ${tag(service)} in ${((Date.now() - started) / 1000).toFixed(0)}s`);
        users.set(service, await nonRootUser(docker, tag(service)));
      }),
    );

    const port = await freeLocalPort();
    master = new MasterApi(`http://127.0.0.1:${port}`, apiToken);
    const masterName = `${prefix}-master`;
    await fleet.start({
      name: masterName,
      image: tag("master"),
      user: users.get("master") as string,
      env: {
        PORT: String(port),
        // Host networking shares the host's interfaces: listen on loopback only.
        HOST: "127.0.0.1",
        API_TOKEN: apiToken,
        WORKER_TOKEN: workerToken,
        LEASE_SECONDS: String(leaseSeconds),
        RETRY_BACKOFF_MS: "100",
        SHUTDOWN_GRACE_SECONDS: "5",
        LOG_LEVEL: "warn",
      },
    });
    await waitUntil(
      async () =>
        (await master.raw("GET", "/readyz", undefined, 2_000)).status === 200 ? true : undefined,
      {
        timeoutMs: 30_000,
        describe: async () =>
          `the master never became ready on ${master.baseUrl}\n${await describeFleet()}`,
      },
    );

    for (let index = 1; index <= workerCount; index++) {
      const name = `${prefix}-worker-${index}`;
      const container = await fleet.start({
        name,
        image: tag("worker"),
        user: users.get("worker") as string,
        env: {
          MASTER_URL: master.baseUrl,
          WORKER_TOKEN: workerToken,
          WORKER_ID: name,
          CONCURRENCY: "4",
          SHUTDOWN_GRACE_SECONDS: String(workerGraceSeconds),
          LOG_LEVEL: "warn",
        },
      });
      workers.push({ name, container });
    }
    await waitUntil(
      async () => ((await master.stats()).activeWorkers >= workerCount ? true : undefined),
      {
        timeoutMs: 30_000,
        describe: async () =>
          `fewer than ${workerCount} workers reached the master\n${await describeFleet()}`,
      },
    );
  });

  after(async () => {
    await fleet?.removeAll();
  });

  it("runs every container as the image's non-root numeric user, with a read-only root file system and no capabilities", async () => {
    for (const service of services) assert.match(users.get(service) ?? "", /^[1-9]\d*(:\d+)?$/);
    for (const { container } of workers.slice(0, 1)) {
      const info = await container.inspect();
      assert.equal(info.Config.User, users.get("worker"));
      assert.equal(info.HostConfig.ReadonlyRootfs, true);
      assert.deepEqual(info.HostConfig.CapDrop, lockedDownHostConfig.CapDrop);
      assert.deepEqual(info.HostConfig.SecurityOpt, lockedDownHostConfig.SecurityOpt);
    }
  });

  it("answers /healthz, /readyz and /metrics on the master's port from outside the container", async () => {
    const health = await master.raw("GET", "/healthz");
    assert.equal(health.status, 200, `/healthz: ${health.text}`);
    const ready = await master.raw("GET", "/readyz");
    assert.equal(ready.status, 200, `/readyz: ${ready.text}`);
    const metrics = await master.raw("GET", "/metrics");
    assert.equal(metrics.status, 200);
    assert.match(metrics.contentType, /^text\/plain/);
    assert.ok(
      parseMetrics(metrics.text).has(finishedCounter),
      `/metrics has no ${finishedCounter}`,
    );
  });

  it(`runs ${taskCount} mixed tasks to success, each exactly once, while one worker is killed and another stopped`, async () => {
    const tasks = mixedTasks(taskCount);
    const ids = await mapLimited(tasks, 16, (task) => master.submit(task.type, task.payload));
    assert.equal(new Set(ids).size, taskCount, "the master gave two tasks the same id");

    const [killed, stopped] = workers;
    let finished = 0;
    const progress = async () => {
      const stats = await master.stats();
      finished = stats.succeeded + stats.failed;
      return `${finished} of ${taskCount} finished (${stats.failed} failed, ${stats.running} running, ${stats.queued} queued)`;
    };

    await waitUntil(
      async () => ((await master.stats()).succeeded >= killAfter ? true : undefined),
      {
        timeoutMs: 60_000,
        describe: async () =>
          `waiting for ${killAfter} tasks before killing a worker: ${await progress()}\n${await describeFleet()}`,
      },
    );
    const statsAtKill = await master.stats();
    assert.ok(
      statsAtKill.queued > 0,
      "the run ended before a worker could be killed mid-run: make the tasks longer",
    );
    await killed.container.kill({ signal: "SIGKILL" });

    await waitUntil(
      async () => ((await master.stats()).succeeded >= stopAfter ? true : undefined),
      {
        timeoutMs: 60_000,
        describe: async () =>
          `waiting for ${stopAfter} tasks before stopping a worker: ${await progress()}\n${await describeFleet()}`,
      },
    );
    // As Kubernetes does on scale-down: SIGTERM, then SIGKILL once the grace period is over.
    await stopped.container.stop({ t: workerGraceSeconds + 10 });
    const stoppedState = (await stopped.container.inspect()).State;
    assert.equal(
      stoppedState.ExitCode,
      0,
      `the worker stopped with SIGTERM exited with ${stoppedState.ExitCode}, not 0 (OOMKilled: ${stoppedState.OOMKilled})\n${await describeFleet()}`,
    );

    await waitUntil(
      async () =>
        (await master.stats()).succeeded + (await master.stats()).failed >= taskCount
          ? true
          : undefined,
      {
        timeoutMs: 120_000,
        intervalMs: 500,
        describe: async () =>
          `waiting for all tasks with one worker left: ${await progress()}\n${await describeFleet()}`,
      },
    );

    const views = await mapLimited(ids, 16, (id) => master.task(id));
    const problems: string[] = [];
    views.forEach((view: TaskView, index) => {
      const task = tasks[index];
      if (view.id !== ids[index]) problems.push(`task ${ids[index]} answered as ${view.id}`);
      if (view.status !== "succeeded") {
        problems.push(`${task.type} task ${view.id} ended ${view.status}: ${view.error ?? ""}`);
        return;
      }
      try {
        assert.deepEqual(view.result, expectedResult(task));
      } catch {
        problems.push(
          `${task.type} task ${view.id} ${JSON.stringify(task.payload)} returned ${JSON.stringify(view.result)}`,
        );
      }
    });
    assert.deepEqual(problems.slice(0, 20), [], `${problems.length} task(s) went wrong`);

    // Each task counted once as finished: a result completed twice (a lease that expired on the
    // killed worker and was then run again) would push the counter past the number of tasks.
    const metrics = parseMetrics((await master.raw("GET", "/metrics")).text);
    const finishedTotal = [...metrics]
      .filter(([name]) => name.startsWith(finishedCounter))
      .reduce((sum, [, value]) => sum + value, 0);
    assert.equal(
      finishedTotal,
      taskCount,
      `${finishedCounter} sums to ${finishedTotal}, not ${taskCount}`,
    );
    const stats = await master.stats();
    assert.equal(stats.succeeded, taskCount);
    assert.equal(stats.failed, 0);

    // The killed worker held leases: some task needed a second attempt, so the recovery path ran.
    assert.ok(
      views.some((view) => view.attempts >= 2),
      "no task needed a second attempt: the killed worker held no lease, so nothing was recovered",
    );
  });

  it("reports what each Dockerfile adds on top of its base image, in MB", async () => {
    const growth: ImageGrowth[] = [];
    for (const service of services) {
      const base = await finalBaseImage(fromRepoRoot(serviceBuilds[service].dockerfile));
      growth.push(await imageGrowth(docker, tag(service), base));
    }
    for (const entry of growth) {
      const steps = entry.largestSteps
        .map((step) => `${toMB(step.bytes)} MB ${step.step}`)
        .join("; ");
      console.log(
        `${entry.image}: +${toMB(entry.addedBytes)} MB on ${entry.base} (largest: ${steps})`,
      );
      assert.ok(entry.addedBytes > 0, `${entry.image} adds nothing to ${entry.base}`);
    }
    await mkdir(path.dirname(resultsFile), { recursive: true });
    await writeFile(
      resultsFile,
      `${JSON.stringify(
        growth.map((entry) => ({ ...entry, addedMB: toMB(entry.addedBytes) })),
        null,
        2,
      )}\n`,
    );
  });
});
