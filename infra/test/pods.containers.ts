/**
 * Runs the real images with exactly the environment the Pulumi program gives the pods (env values
 * and Secret references resolved from the evaluated stack), under the pods' lockdown, to prove the
 * program and the services agree on the contract in docs/protocol.md. Needs a Docker engine:
 * `npm run test:containers`.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import Docker from "dockerode";
import { Redis } from "ioredis";
import {
  redisUnavailable,
  startRedis,
  type TestRedis,
} from "../../services/master/test/redis-server";
import { ContainerFleet, freeLocalPort, runPrefix } from "../../test/containers/containers";
import { buildImage } from "../../test/containers/images";
import { fromRepoRoot, serviceBuilds } from "../service-builds";
import { evaluateStack, isSecretOutput, type StackEvaluation } from "../testing/harness";
import { findResource, inputs, type Json } from "../testing/resources";

/** The container's env as the kubelet would set it: values, and secretKeyRefs from the Secrets. */
function resolvedEnv(container: Json, secrets: Json[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const entry of container.env ?? []) {
    if (entry.value !== undefined) {
      env[entry.name] = String(entry.value);
      continue;
    }
    const ref = entry.valueFrom?.secretKeyRef;
    assert.ok(ref, `env ${entry.name} is neither a value nor a secretKeyRef`);
    const secret = secrets.find((s) => s.metadata.name === ref.name);
    assert.ok(secret, `env ${entry.name} reads an unknown Secret ${ref.name}`);
    const value = secret.stringData[ref.key];
    assert.equal(typeof value, "string", `Secret has no key ${ref.key}`);
    env[entry.name] = value;
  }
  return env;
}

async function poll<T>(
  what: string,
  attempts: number,
  intervalMs: number,
  probe: () => Promise<T | undefined>,
): Promise<T> {
  for (let attempt = 0; attempt < attempts; attempt++) {
    const result = await probe().catch(() => undefined);
    if (result !== undefined) return result;
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  throw new Error(`gave up waiting for ${what}`);
}

describe("the program's pods, run as containers", { skip: redisUnavailable() }, () => {
  const docker = new Docker();
  const fleet = new ContainerFleet(docker);
  const prefix = runPrefix();
  const tags = { master: `taskfleet-master:${prefix}`, worker: `taskfleet-worker:${prefix}` };
  let evaluation: StackEvaluation;
  let master: Json;
  let workers: Json;
  let secret: Json;
  let redisSecret: Json;
  /** Plays the stack's Redis, with the password the stack generated for it. */
  let redis: TestRedis;
  let port: number;
  let internalPort: number;

  before(async () => {
    // Sized by the queue, so the master also gets the scaler's token and KEDA's trigger is declared.
    evaluation = await evaluateStack("dev", { "taskfleet:autoscaler": "queue" });
    master = inputs(findResource(evaluation, "kubernetes:apps/v1:Deployment", "master"));
    workers = inputs(findResource(evaluation, "kubernetes:apps/v1:Deployment", "workers"));
    secret = inputs(findResource(evaluation, "kubernetes:core/v1:Secret", "master-tokens"));
    redisSecret = inputs(findResource(evaluation, "kubernetes:core/v1:Secret", "redis-password"));
    redis = await startRedis({ appendOnly: true });
    const admin = new Redis({ host: redis.host, port: redis.port });
    await admin.config("SET", "requirepass", redisSecret.stringData.password);
    admin.disconnect();
    for (const service of ["master", "worker"] as const) {
      await buildImage({
        name: service,
        contextDir: fromRepoRoot(serviceBuilds[service].context),
        dockerfilePath: fromRepoRoot(serviceBuilds[service].dockerfile),
        args: serviceBuilds[service].args,
        tag: tags[service],
      });
    }
    port = await freeLocalPort();
    internalPort = await freeLocalPort();
  });

  after(async () => {
    await fleet.removeAll();
    await redis?.stop();
    for (const tag of Object.values(tags)) {
      await docker
        .getImage(tag)
        .remove({ force: true })
        .catch(() => undefined);
    }
  });

  it("starts the master with the program's environment and passes both of its probes", async () => {
    const container = master.spec.template.spec.containers[0];
    const env = resolvedEnv(container, [secret, redisSecret]);
    // The changes: host networking here, so each container port becomes a free host port, and
    // the in-cluster Redis Service's name becomes the address of the redis-server playing it.
    const redisUrl = new URL(env.REDIS_URL ?? "");
    assert.match(redisUrl.hostname, /\.svc\.cluster\.local$/);
    env.REDIS_URL = `redis://127.0.0.1:${redis.port}${redisUrl.pathname}`;
    const hostPorts = new Map<string, number>([
      ["http", port],
      ["internal", internalPort],
    ]);
    const named = new Map<string, number>(
      container.ports.map((p: Json) => [p.name, p.containerPort]),
    );
    assert.deepEqual([...named.keys()], [...hostPorts.keys()]);
    assert.equal(env.PORT, String(named.get("http")));
    assert.equal(env.INTERNAL_PORT, String(named.get("internal")));
    env.PORT = String(port);
    env.INTERNAL_PORT = String(internalPort);
    await fleet.start({ name: `${prefix}-master`, image: tags.master, env });
    for (const probe of [container.readinessProbe, container.livenessProbe]) {
      const probePort = hostPorts.get(probe.httpGet.port);
      assert.ok(probePort, `the probe's port ${probe.httpGet.port} is not a container port`);
      await poll(`GET ${probe.httpGet.path}`, 50, 200, async () => {
        const response = await fetch(`http://127.0.0.1:${probePort}${probe.httpGet.path}`, {
          signal: AbortSignal.timeout(2000),
        });
        return response.status === 200 ? true : undefined;
      });
    }
  });

  it("keeps the worker API and /metrics off the port the load balancer exposes", async () => {
    const services = evaluation.resources
      .filter((r) => r.type === "kubernetes:core/v1:Service")
      .map((r) => inputs(r));
    const exposed = services.find((s: Json) => s.spec.type === "LoadBalancer");
    assert.deepEqual(
      exposed.spec.ports.map((p: Json) => p.targetPort),
      ["http"],
    );
    const workerToken = secret.stringData.workerToken as string;
    const lease = await fetch(`http://127.0.0.1:${port}/worker/v1/lease`, {
      method: "POST",
      headers: { authorization: `Bearer ${workerToken}`, "content-type": "application/json" },
      body: JSON.stringify({ workerId: "outsider", max: 1 }),
      signal: AbortSignal.timeout(2000),
    });
    assert.equal(lease.status, 404);
    const metrics = await fetch(`http://127.0.0.1:${port}/metrics`, {
      signal: AbortSignal.timeout(2000),
    });
    assert.equal(metrics.status, 404);
    const internalMetrics = await fetch(`http://127.0.0.1:${internalPort}/metrics`, {
      signal: AbortSignal.timeout(2000),
    });
    assert.equal(internalMetrics.status, 200);
  });

  it("runs a task through a worker started with the program's environment, using the apiToken output", async () => {
    const container = workers.spec.template.spec.containers[0];
    const env = resolvedEnv(container, [secret]);
    // The cluster DNS name resolves only inside the cluster.
    assert.match(
      env.MASTER_URL ?? "",
      /^http:\/\/master-internal-[a-z0-9]+\.taskfleet-dev\.svc\.cluster\.local:80$/,
    );
    env.MASTER_URL = `http://127.0.0.1:${internalPort}`;
    await fleet.start({ name: `${prefix}-worker`, image: tags.worker, env });

    const apiToken = evaluation.outputs.apiToken;
    assert.ok(isSecretOutput(apiToken));
    const headers = {
      authorization: `Bearer ${apiToken.value}`,
      "content-type": "application/json",
    };
    const created = await fetch(`http://127.0.0.1:${port}/v1/tasks`, {
      method: "POST",
      headers,
      body: JSON.stringify({ type: "echo", payload: { from: "infra" } }),
      signal: AbortSignal.timeout(5000),
    });
    assert.equal(created.status, 202, await created.clone().text());
    const { id } = (await created.json()) as { id: string };
    const task = await poll("the task to finish", 75, 200, async () => {
      const response = await fetch(`http://127.0.0.1:${port}/v1/tasks/${id}`, {
        headers,
        signal: AbortSignal.timeout(2000),
      });
      const body = (await response.json()) as { status: string; result?: unknown };
      return body.status === "succeeded" || body.status === "failed" ? body : undefined;
    });
    assert.deepEqual(task, { ...task, status: "succeeded", result: { from: "infra" } });
  });

  it("answers KEDA's backlog trigger as the ScaledObject declares it: path, port, token and value", async () => {
    const scaled = inputs(
      findResource(evaluation, "kubernetes:keda.sh/v1alpha1:ScaledObject", "workers"),
    );
    const auth = inputs(
      findResource(
        evaluation,
        "kubernetes:keda.sh/v1alpha1:TriggerAuthentication",
        "workers-scaler",
      ),
    );
    const trigger = scaled.spec.triggers.find((t: Json) => t.type === "metrics-api");
    assert.equal(trigger.metadata.authMode, "bearer");
    assert.equal(trigger.metadata.format, "json");
    const url = new URL(trigger.metadata.url);
    // The internal Service, whose port 80 leads to the container's port named internal.
    assert.match(url.hostname, /^master-internal-[a-z0-9]+\.taskfleet-dev\.svc\.cluster\.local$/);
    const [ref] = auth.spec.secretTargetRef;
    assert.equal(ref.parameter, "token");
    assert.equal(ref.name, secret.metadata.name);
    const token = secret.stringData[ref.key] as string;
    const concurrency = Number(
      resolvedEnv(workers.spec.template.spec.containers[0], [secret]).CONCURRENCY,
    );
    const read = (base: number, bearer: string) =>
      fetch(`http://127.0.0.1:${base}${url.pathname}`, {
        headers: { authorization: `Bearer ${bearer}` },
        signal: AbortSignal.timeout(2000),
      });
    // The worker container of the test before reports its slots with its long polls.
    const backlog = await poll("the worker's slots in the backlog", 50, 200, async () => {
      const response = await read(internalPort, token);
      if (response.status !== 200) return undefined;
      const body = (await response.json()) as Record<string, unknown>;
      return body.workerSlots === concurrency ? body : undefined;
    });
    assert.equal(backlog[trigger.metadata.valueLocation], 0, "the task has finished: no demand");
    assert.equal((await read(port, token)).status, 404, "not on the load balancer's port");
    assert.equal(
      (await read(internalPort, secret.stringData.workerToken as string)).status,
      401,
      "the workers' token does not open it",
    );
  });

  it("stops an idle worker on SIGTERM well inside the pod's grace period", async () => {
    const grace = workers.spec.template.spec.terminationGracePeriodSeconds as number;
    const container = docker.getContainer(`${prefix}-worker`);
    const started = Date.now();
    await container.stop({ t: grace });
    const seconds = (Date.now() - started) / 1000;
    const state = (await container.inspect()).State;
    assert.equal(state.ExitCode, 0);
    assert.ok(seconds < grace, `took ${seconds}s of ${grace}s`);
  });
});
