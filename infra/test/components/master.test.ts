/**
 * The Master component on its own, under mocks, with the args written out here: what its child
 * resources get from each arg (the stack tests check the same objects for the shipped stacks).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import * as pulumi from "@pulumi/pulumi";
import type { DeployableImage } from "../../images";
import { Master, type MasterArgs } from "../../master";
import type { RedisConnection } from "../../redis";
import { type ComponentEvaluation, evaluateComponent, promiseOf } from "../../testing/harness";
import {
  envOf,
  findResource,
  inputs,
  onlyContainer,
  plainEnv,
  resourcesOfType,
} from "../../testing/resources";

const Deployment = "kubernetes:apps/v1:Deployment";
const Service = "kubernetes:core/v1:Service";
const Secret = "kubernetes:core/v1:Secret";
const Pdb = "kubernetes:policy/v1:PodDisruptionBudget";

const mebibyte = 2 ** 20;
const imageRef = `registry.example/taskfleet/master@sha256:${"ab".repeat(32)}`;
const apiToken = "api-token-for-the-master-test-0123456789";
const workerToken = "worker-token-for-the-master-test-0123456789";

function image(): DeployableImage {
  return {
    ref: pulumi.output(imageRef),
    pullPolicy: "IfNotPresent",
    digest: pulumi.output(`sha256:${"ab".repeat(32)}`),
    acceptedFindings: [{ check: "CKV_K8S_43", reason: "a finding the image brings" }],
  };
}

const redisUrl = "redis://redis-abc.fleet.svc.cluster.local:6379/0";

/** A Redis as the master sees it: a URL, a Secret, and for TLS a CA ConfigMap. */
function redis(overrides: Partial<RedisConnection> = {}): RedisConnection {
  return {
    url: pulumi.output(redisUrl),
    passwordSecretName: pulumi.output("redis-password-0123"),
    caConfigMapName: undefined,
    peer: { kind: "pods", selector: { app: "redis" }, port: 6379 },
    ready: [],
    dataBytes: 256 * mebibyte,
    ...overrides,
  };
}

function args(overrides: Partial<MasterArgs> = {}): MasterArgs {
  return {
    namespace: pulumi.output("fleet"),
    image: image(),
    replicas: 1,
    redis: redis(),
    apiToken: pulumi.secret(apiToken),
    workerToken: pulumi.secret(workerToken),
    scalerToken: undefined,
    leaseSeconds: 45,
    maxAttempts: 5,
    resultTtlSeconds: 7200,
    logLevel: "debug",
    resources: { cpuRequest: "100m", cpuLimit: "1", memoryRequest: "256Mi", memoryLimit: "512Mi" },
    allowedSourceRanges: [],
    internalLoadBalancer: false,
    skipAwaitAddress: false,
    ...overrides,
  };
}

function master(overrides: Partial<MasterArgs> = {}): Promise<ComponentEvaluation<Master>> {
  return evaluateComponent(() => new Master("master", args(overrides)));
}

describe("Master", () => {
  it("passes its settings to the container by the master's variable names, and the pod a grace above the master's own", async () => {
    const evaluation = await master();
    const deployment = inputs(findResource(evaluation, Deployment, "master"));
    const container = onlyContainer(deployment);
    const plain = plainEnv(container);
    assert.deepEqual(plain, {
      PORT: "8080",
      INTERNAL_PORT: "8081",
      HOST: "0.0.0.0",
      LEASE_SECONDS: "45",
      MAX_ATTEMPTS: "5",
      RESULT_TTL_SECONDS: "7200",
      SHUTDOWN_GRACE_SECONDS: "25",
      // Half of the 256Mi Redis holds: the rest is for retained results and Redis's overhead.
      MEMORY_BUDGET_BYTES: String(128 * mebibyte),
      NODE_OPTIONS: "--max-old-space-size=384",
      LOG_LEVEL: "debug",
      STORE: "redis",
      REDIS_URL: redisUrl,
    });
    assert.equal(deployment.spec.template.spec.terminationGracePeriodSeconds, 25 + 15);
    assert.equal(container.image, imageRef);
    assert.equal(container.imagePullPolicy, "IfNotPresent");
    assert.deepEqual(container.resources, {
      requests: { cpu: "100m", memory: "256Mi" },
      limits: { cpu: "1", memory: "512Mi" },
    });
    assert.equal(deployment.metadata.namespace, "fleet");
  });

  it("runs the configured number of masters, rolled one new pod at a time, each Ready before an old one stops", async () => {
    for (const replicas of [1, 3]) {
      const deployment = inputs(findResource(await master({ replicas }), Deployment, "master"));
      assert.equal(deployment.spec.replicas, replicas);
      assert.deepEqual(deployment.spec.strategy, {
        type: "RollingUpdate",
        rollingUpdate: { maxSurge: 1, maxUnavailable: 0 },
      });
    }
  });

  it("keeps all masters but one through a drain when it runs two or more, and declares no budget for a single one", async () => {
    assert.deepEqual(resourcesOfType(await master({ replicas: 1 }), Pdb), []);
    const evaluation = await master({ replicas: 2 });
    const pdb = inputs(findResource(evaluation, Pdb, "master"));
    const deployment = inputs(findResource(evaluation, Deployment, "master"));
    assert.deepEqual(pdb.spec, {
      maxUnavailable: 1,
      selector: { matchLabels: deployment.spec.selector.matchLabels },
    });
    assert.equal(pdb.metadata.namespace, "fleet");
  });

  it("keeps the tasks in the Redis it is given, its password only by secretKeyRef, and mounts no CA for plain redis://", async () => {
    const evaluation = await master();
    const deployment = inputs(findResource(evaluation, Deployment, "master"));
    const container = onlyContainer(deployment);
    assert.equal(envOf(container, "STORE").value, "redis");
    assert.equal(envOf(container, "REDIS_URL").value, redisUrl);
    assert.deepEqual(envOf(container, "REDIS_PASSWORD"), {
      name: "REDIS_PASSWORD",
      valueFrom: { secretKeyRef: { name: "redis-password-0123", key: "password" } },
    });
    assert.equal(plainEnv(container).REDIS_CA_FILE, undefined);
    assert.deepEqual(
      deployment.spec.template.spec.volumes.map((v: { name: string }) => v.name),
      ["tmp"],
    );
  });

  it("points REDIS_CA_FILE at the CA ConfigMap it mounts, for a TLS Redis", async () => {
    const evaluation = await master({
      redis: redis({
        url: pulumi.output("rediss://10.1.2.3:6378/0"),
        caConfigMapName: pulumi.output("memorystore-ca-0123"),
      }),
    });
    const deployment = inputs(findResource(evaluation, Deployment, "master"));
    const container = onlyContainer(deployment);
    assert.equal(envOf(container, "REDIS_URL").value, "rediss://10.1.2.3:6378/0");
    const file = envOf(container, "REDIS_CA_FILE").value;
    const volume = deployment.spec.template.spec.volumes.find(
      (v: { configMap?: { name: string } }) => v.configMap?.name === "memorystore-ca-0123",
    );
    assert.ok(volume, "the CA ConfigMap is a volume of the pod");
    const mount = container.volumeMounts.find((m: { name: string }) => m.name === volume.name);
    assert.equal(mount.readOnly, true);
    assert.equal(file, `${mount.mountPath}/ca.pem`);
  });

  it("waits for Redis before it creates the masters", async () => {
    // A stand-in for Redis's StatefulSet or Memorystore's instance.
    class Redis extends pulumi.CustomResource {
      constructor(name: string) {
        super("test:index:Redis", name, {});
      }
    }
    const ready = new Redis("the-redis");
    const evaluation = await master({ redis: redis({ ready: [ready] }) });
    assert.ok(
      findResource(evaluation, Deployment, "master").dependsOn.includes(
        "test:index:Redis::the-redis",
      ),
    );
  });

  it("sizes the heap from its memory limit and the task budget from Redis's memory", async () => {
    const evaluation = await master({
      resources: { cpuRequest: "1", cpuLimit: "2", memoryRequest: "768Mi", memoryLimit: "1Gi" },
      redis: redis({ dataBytes: 2 * 2 ** 30 }),
    });
    const container = onlyContainer(inputs(findResource(evaluation, Deployment, "master")));
    assert.equal(envOf(container, "NODE_OPTIONS").value, "--max-old-space-size=896");
    assert.equal(envOf(container, "MEMORY_BUDGET_BYTES").value, String(1024 * mebibyte));
  });

  it("states the image's accepted manifest findings on the Deployment, after its own", async () => {
    const evaluation = await master();
    const deployment = inputs(findResource(evaluation, Deployment, "master"));
    assert.deepEqual(Object.keys(deployment.metadata.annotations), [
      "checkov.io/skip1",
      "checkov.io/skip2",
    ]);
    assert.match(deployment.metadata.annotations["checkov.io/skip1"], /^CKV_K8S_35=/);
    assert.equal(
      deployment.metadata.annotations["checkov.io/skip2"],
      "CKV_K8S_43=a finding the image brings",
    );
  });

  it("keeps both tokens in a Secret it creates and hands them to the container only by secretKeyRef", async () => {
    const evaluation = await master();
    const secret = inputs(findResource(evaluation, Secret, "master-tokens"));
    assert.deepEqual(secret.stringData, { apiToken, workerToken });
    assert.equal(secret.metadata.namespace, "fleet");
    const container = onlyContainer(inputs(findResource(evaluation, Deployment, "master")));
    for (const [env, key] of [
      ["API_TOKEN", "apiToken"],
      ["WORKER_TOKEN", "workerToken"],
    ]) {
      const entry = envOf(container, env as string);
      assert.equal(entry.value, undefined, `${env} must not be a plain value`);
      assert.deepEqual(entry.valueFrom, { secretKeyRef: { name: secret.metadata.name, key } });
    }
    for (const resource of evaluation.resources.filter((r) => r.type !== Secret)) {
      const text = JSON.stringify(resource.inputs);
      assert.ok(!text.includes(apiToken) && !text.includes(workerToken), resource.name);
    }
    assert.equal(await promiseOf(evaluation.component.tokenSecretName), secret.metadata.name);
  });

  it("serves the public port through a LoadBalancer and the internal one through a ClusterIP Service, both selecting its pod", async () => {
    const evaluation = await master();
    assert.deepEqual(
      resourcesOfType(evaluation, Service)
        .map((r) => r.name)
        .sort(),
      ["master", "master-internal"],
    );
    const selector = inputs(findResource(evaluation, Deployment, "master")).spec.selector
      .matchLabels;
    assert.deepEqual(evaluation.component.podSelector, selector);

    const service = inputs(findResource(evaluation, Service, "master"));
    assert.equal(service.spec.type, "LoadBalancer");
    assert.deepEqual(service.spec.ports, [
      { name: "http", port: 80, targetPort: "http", protocol: "TCP" },
    ]);
    assert.deepEqual(service.spec.selector, selector);

    const internal = inputs(findResource(evaluation, Service, "master-internal"));
    assert.equal(internal.spec.type, "ClusterIP");
    assert.deepEqual(internal.spec.ports, [
      { name: "internal", port: 80, targetPort: "internal", protocol: "TCP" },
    ]);
    assert.deepEqual(internal.spec.selector, selector);
    assert.equal(internal.metadata.namespace, "fleet");

    assert.equal(
      await promiseOf(evaluation.component.internalUrl),
      `http://${internal.metadata.name}.fleet.svc.cluster.local:80`,
    );
    assert.equal(await promiseOf(evaluation.component.serviceName), service.metadata.name);
  });

  it("lets only the allowed source ranges through the load balancer, and every source when none are given", async () => {
    const ranges = ["203.0.113.0/24", "198.51.100.7/32"];
    const limited = await master({ allowedSourceRanges: ranges });
    const service = inputs(findResource(limited, Service, "master"));
    assert.deepEqual(service.spec.loadBalancerSourceRanges, ranges);
    assert.equal(
      inputs(findResource(limited, Service, "master-internal")).spec.loadBalancerSourceRanges,
      undefined,
    );

    const open = await master({ allowedSourceRanges: [] });
    assert.equal(
      inputs(findResource(open, Service, "master")).spec.loadBalancerSourceRanges,
      undefined,
    );
  });

  it("asks GKE for an internal load balancer only when told to", async () => {
    const annotation = "networking.gke.io/load-balancer-type";
    const internal = await master({ internalLoadBalancer: true });
    assert.equal(
      inputs(findResource(internal, Service, "master")).metadata.annotations[annotation],
      "Internal",
    );
    const external = await master({ internalLoadBalancer: false });
    assert.equal(
      inputs(findResource(external, Service, "master")).metadata.annotations[annotation],
      undefined,
    );
  });

  it("waits for the load balancer's address unless skipAwaitAddress, and reports it as url", async () => {
    const waiting = await master({ skipAwaitAddress: false });
    const waited = inputs(findResource(waiting, Service, "master"));
    assert.equal(waited.metadata.annotations["pulumi.com/skipAwait"], undefined);
    // The mocks give a LoadBalancer that is waited for the address 203.0.113.10.
    assert.equal(await promiseOf(waiting.component.url), "http://203.0.113.10");

    const skipping = await master({ skipAwaitAddress: true });
    const skipped = inputs(findResource(skipping, Service, "master"));
    assert.equal(skipped.metadata.annotations["pulumi.com/skipAwait"], "true");
    assert.equal(await promiseOf(skipping.component.url), "");
  });
});
