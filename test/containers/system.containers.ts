import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import type Docker from "dockerode";
import { fromRepoRoot, type ServiceName, serviceBuilds } from "../../infra/service-builds.js";
import { mapLimited } from "../map-limited.js";
import {
  ContainerFleet,
  freeLocalPort,
  podLockdown,
  removeLeftovers,
  runPrefix,
} from "./containers.js";
import {
  type BuiltImage,
  buildServiceImages,
  ContainerExitedError,
  sourceRoot,
  startMaster,
  startWorker,
} from "./deployment.js";
import { connectEngine } from "./engine.js";
import { finalBaseImage, type ImageGrowth, imageGrowth, toMB } from "./images.js";
import { type MasterApi, parseMetrics, type TaskView, waitUntil } from "./master-api.js";
import { expectedResult, mixedTasks } from "./tasks.js";

const taskCount = 500;
const workerCount = 3;
const leaseSeconds = 3;
const workerGraceSeconds = 5;
/** Tasks succeeded after which one worker is killed, then another stopped: mid-run, work queued. */
const killAfter = Math.floor(taskCount * 0.2);
const stopAfter = Math.floor(taskCount * 0.4);
const finishedCounter = "taskfleet_tasks_finished_total";

const resultsFile = fromRepoRoot("test/containers/results/images.json");

const services = Object.keys(serviceBuilds) as ServiceName[];
const prefix = runPrefix();
const workerToken = randomBytes(16).toString("hex");
const apiToken = randomBytes(16).toString("hex");
const tagOf = (service: ServiceName) => `taskfleet-${service}:containers-test`;

let docker: Docker;
let fleet: ContainerFleet | undefined;
let images: Map<ServiceName, BuiltImage>;
let master: MasterApi;
const masterName = `${prefix}-master`;
const workers: { name: string; container: Docker.Container }[] = [];

const image = (service: ServiceName) => images.get(service) as BuiltImage;

async function fleetLogs(): Promise<string> {
  if (!fleet) return "(no containers)";
  const names = [masterName, ...workers.map((worker) => worker.name)];
  const tails = await Promise.all(
    names.map(async (name) => `--- ${name} ---\n${await fleet?.logTail(name, 15)}`),
  );
  return tails.join("\n");
}

describe("the master and worker images, built from the Pulumi program's Dockerfiles and run as locked-down containers", {
  timeout: 30 * 60_000,
}, () => {
  before(async () => {
    docker = await connectEngine();
    fleet = new ContainerFleet(docker);
    const removed = await removeLeftovers(docker);
    if (removed > 0) console.log(`removed ${removed} container(s) left by an earlier run`);
    images = await buildServiceImages(docker, sourceRoot, tagOf, services);

    master = await startMaster(fleet, {
      name: masterName,
      image: image("master"),
      port: await freeLocalPort(),
      apiToken,
      workerToken,
      env: {
        LEASE_SECONDS: String(leaseSeconds),
        RETRY_BACKOFF_MS: "100",
        SHUTDOWN_GRACE_SECONDS: "5",
        LOG_LEVEL: "warn",
      },
    });
    for (let index = 1; index <= workerCount; index++) {
      const name = `${prefix}-worker-${index}`;
      const container = await startWorker(fleet, {
        name,
        image: image("worker"),
        masterUrl: master.baseUrl,
        workerToken,
        env: {
          CONCURRENCY: "4",
          SHUTDOWN_GRACE_SECONDS: String(workerGraceSeconds),
          LOG_LEVEL: "warn",
        },
      });
      workers.push({ name, container });
    }
    await waitUntil(
      async () => {
        for (const worker of workers) {
          const exited = await fleet?.exited(worker.name);
          if (exited)
            throw new ContainerExitedError(`${exited}\n${await fleet?.logTail(worker.name)}`);
        }
        return (await master.stats()).activeWorkers >= workerCount ? true : undefined;
      },
      {
        timeoutMs: 30_000,
        describe: async () =>
          `fewer than ${workerCount} workers reached the master\n${await fleetLogs()}`,
      },
    );
  });

  after(async () => {
    await fleet?.removeAll();
  });

  it("runs every container locked down as the pods are: their non-root user, read-only root, no capabilities", async () => {
    const pod = fleet?.lockdown ?? podLockdown();
    const [podUid] = pod.user.split(":");
    for (const service of services) {
      // The image's own USER must be the pods' user, or files the image gives its user are not
      // the pods' to read.
      assert.equal(
        image(service).user.split(":")[0],
        podUid,
        `the ${service} image declares USER ${image(service).user}; the pods run as ${pod.user}`,
      );
    }
    for (const name of [masterName, ...workers.map((worker) => worker.name)]) {
      const info = await docker.getContainer(name).inspect();
      assert.equal(info.Config.User, pod.user, name);
      assert.match(info.Config.User, /^[1-9]\d*:\d+$/, name);
      assert.equal(info.HostConfig.ReadonlyRootfs, true, name);
      assert.deepEqual(info.HostConfig.CapDrop, ["ALL"], name);
      assert.deepEqual(info.HostConfig.SecurityOpt, ["no-new-privileges"], name);
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
    assert.match(metrics.text, new RegExp(`^# TYPE ${finishedCounter} counter$`, "m"));
    assert.equal(parseMetrics(metrics.text).get("taskfleet_active_workers"), workerCount);
  });

  it(`runs ${taskCount} mixed tasks to success, each exactly once, while one worker is killed and another stopped`, async () => {
    const tasks = mixedTasks(taskCount);
    const ids = await mapLimited(tasks, 16, (task) => master.submit(task.type, task.payload));
    assert.equal(new Set(ids).size, taskCount, "the master gave two tasks the same id");

    const [killed, stopped] = workers;
    const progress = async () => {
      const stats = await master.stats();
      return `${stats.succeeded + stats.failed} of ${taskCount} finished (${stats.failed} failed, ${stats.running} running, ${stats.queued} queued)`;
    };
    const succeededAtLeast = (count: number) => async () =>
      (await master.stats()).succeeded >= count ? true : undefined;

    await waitUntil(succeededAtLeast(killAfter), {
      timeoutMs: 60_000,
      describe: async () =>
        `waiting for ${killAfter} tasks before killing a worker: ${await progress()}\n${await fleetLogs()}`,
    });
    assert.ok(
      (await master.stats()).queued > 0,
      "the run ended before a worker could be killed mid-run",
    );
    await killed.container.kill({ signal: "SIGKILL" });

    await waitUntil(succeededAtLeast(stopAfter), {
      timeoutMs: 60_000,
      describe: async () =>
        `waiting for ${stopAfter} tasks before stopping a worker: ${await progress()}\n${await fleetLogs()}`,
    });
    // As Kubernetes does on scale-down: SIGTERM, then SIGKILL only once the grace period is over.
    await stopped.container.stop({ t: workerGraceSeconds + 10 });
    const stoppedState = (await stopped.container.inspect()).State;
    assert.equal(
      stoppedState.ExitCode,
      0,
      `the worker stopped with SIGTERM exited with ${stoppedState.ExitCode}, not 0\n${await fleet?.logTail(stopped.name)}`,
    );

    await waitUntil(
      async () => {
        const stats = await master.stats();
        return stats.succeeded + stats.failed >= taskCount ? true : undefined;
      },
      {
        timeoutMs: 120_000,
        intervalMs: 500,
        describe: async () =>
          `waiting for every task with one worker left: ${await progress()}\n${await fleetLogs()}`,
      },
    );

    const views = await mapLimited(ids, 16, (id) => master.task(id));
    const problems: string[] = [];
    views.forEach((view: TaskView, index) => {
      const task = tasks[index];
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

    // Each task finished once: a completion accepted twice (from the killed worker's expired
    // lease and from the attempt that replaced it) would push the counter past the task count.
    const metrics = parseMetrics((await master.raw("GET", "/metrics")).text);
    const finishedTotal = [...metrics]
      .filter(([name]) => name.startsWith(`${finishedCounter}{`))
      .reduce((sum, [, value]) => sum + value, 0);
    assert.equal(
      finishedTotal,
      taskCount,
      `${finishedCounter} sums to ${finishedTotal}, not ${taskCount}`,
    );
    assert.equal(metrics.get(`${finishedCounter}{status="succeeded"}`), taskCount);
    const stats = await master.stats();
    assert.equal(stats.succeeded, taskCount);
    assert.equal(stats.failed, 0);

    // The killed worker held leases that had to run out before their tasks ran again: without
    // that, the kill proved nothing about recovery.
    const expirations = metrics.get("taskfleet_lease_expirations_total") ?? 0;
    assert.ok(
      expirations > 0,
      "no lease expired: the killed worker held no task, so nothing was recovered",
    );
    assert.ok(
      views.some((view) => view.attempts >= 2),
      "no task needed a second attempt although a worker was killed holding leases",
    );
    console.log(
      `${taskCount} tasks succeeded; ${expirations} lease(s) expired on the killed worker; ` +
        `${views.filter((view) => view.attempts >= 2).length} task(s) ran a second time`,
    );
  });

  it("reports what each Dockerfile adds on top of its base image, in MB", async () => {
    const growth: ImageGrowth[] = [];
    for (const service of services) {
      const base = await finalBaseImage(
        path.resolve(sourceRoot, serviceBuilds[service].dockerfile),
      );
      growth.push(await imageGrowth(docker, tagOf(service), base));
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
    const report = growth.map((entry) => ({ ...entry, addedMB: toMB(entry.addedBytes) }));
    await writeFile(resultsFile, `${JSON.stringify(report, null, 2)}\n`);
  });
});
