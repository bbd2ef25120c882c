/**
 * The two Redis components on their own, under mocks, with the args written out here: the
 * in-cluster StatefulSet (its settings, its lockdown, where its password goes) and Memorystore
 * (the instance's settings, and what the masters get from it).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { describe, it } from "node:test";
import * as pulumi from "@pulumi/pulumi";
import type { GkeConfig } from "../../config";
import { Memorystore, type MemorystoreArgs } from "../../memorystore";
import {
  InClusterRedis,
  type InClusterRedisArgs,
  redisLivenessScript,
  redisReadinessScript,
  redisStartScript,
} from "../../redis";
import { type ComponentEvaluation, evaluateComponent, promiseOf } from "../../testing/harness";
import { findResource, inputs, type Json, podSpec, resourcesOfType } from "../../testing/resources";

const StatefulSet = "kubernetes:apps/v1:StatefulSet";
const Service = "kubernetes:core/v1:Service";
const Secret = "kubernetes:core/v1:Secret";
const ConfigMap = "kubernetes:core/v1:ConfigMap";
const Pdb = "kubernetes:policy/v1:PodDisruptionBudget";
const Instance = "gcp:redis/instance:Instance";

const mebibyte = 2 ** 20;
const password = "redis-password-for-the-component-test-0123456789";

function inClusterArgs(overrides: Partial<InClusterRedisArgs> = {}): InClusterRedisArgs {
  return {
    namespace: pulumi.output("fleet"),
    image: "redis:8.10.1",
    imageFindings: [{ check: "CKV_K8S_43", reason: "a finding the image brings" }],
    password: pulumi.secret(password),
    storageSize: "2Gi",
    storageClass: undefined,
    resources: { cpuRequest: "100m", cpuLimit: "1", memoryRequest: "256Mi", memoryLimit: "512Mi" },
    ...overrides,
  };
}

function inCluster(
  overrides: Partial<InClusterRedisArgs> = {},
): Promise<ComponentEvaluation<InClusterRedis>> {
  return evaluateComponent(() => new InClusterRedis("redis", inClusterArgs(overrides)));
}

function container(evaluation: ComponentEvaluation<unknown>): Json {
  const [only, ...others] = podSpec(
    inputs(findResource(evaluation, StatefulSet, "redis")),
  ).containers;
  assert.deepEqual(others, []);
  return only;
}

/** redis.conf's settings, one directive a line, as name → rest of the line. */
function directives(conf: string): Map<string, string> {
  return new Map(
    conf
      .split("\n")
      .filter((line) => line.trim() !== "" && !line.startsWith("#"))
      .map((line) => {
        const [name, ...rest] = line.split(" ");
        return [name as string, rest.join(" ")];
      }),
  );
}

describe("InClusterRedis", () => {
  it("runs one Redis pod from the given image, with a volume claim of the given size and the cluster's default class", async () => {
    const evaluation = await inCluster();
    const statefulSet = inputs(findResource(evaluation, StatefulSet, "redis"));
    assert.equal(statefulSet.spec.replicas, 1);
    assert.equal(statefulSet.metadata.namespace, "fleet");
    assert.equal(container(evaluation).image, "redis:8.10.1");
    const [claim, ...more] = statefulSet.spec.volumeClaimTemplates;
    assert.deepEqual(more, []);
    // No storageClassName at all: an empty one would ask for a volume of no class.
    assert.deepEqual(claim.spec, {
      accessModes: ["ReadWriteOnce"],
      resources: { requests: { storage: "2Gi" } },
    });
    const mount = container(evaluation).volumeMounts.find(
      (m: Json) => m.name === claim.metadata.name,
    );
    assert.equal(mount.mountPath, "/data");

    const classed = await inCluster({ storageClass: "fast-ssd" });
    assert.equal(
      inputs(findResource(classed, StatefulSet, "redis")).spec.volumeClaimTemplates[0].spec
        .storageClassName,
      "fast-ssd",
    );
  });

  it("logs every write to an append-only file synced each second, refuses writes past maxmemory instead of evicting, and keeps maxmemory below the container's limit", async () => {
    const evaluation = await inCluster();
    const statefulSet = inputs(findResource(evaluation, StatefulSet, "redis"));
    const configMap = inputs(findResource(evaluation, ConfigMap, "redis-config"));
    const volume = podSpec(statefulSet).volumes.find(
      (v: Json) => v.configMap?.name === configMap.metadata.name,
    );
    assert.ok(volume, "redis.conf's ConfigMap is a volume of the pod");
    const conf = directives(configMap.data["redis.conf"]);
    assert.equal(conf.get("appendonly"), "yes");
    assert.equal(conf.get("appendfsync"), "everysec");
    assert.equal(conf.get("maxmemory-policy"), "noeviction");
    assert.equal(conf.get("dir"), "/data");
    assert.equal(conf.get("port"), "6379");
    assert.equal(Number(conf.get("maxmemory")), 256 * mebibyte, "half of the 512Mi limit");

    const larger = await inCluster({
      resources: { cpuRequest: "100m", cpuLimit: "1", memoryRequest: "1Gi", memoryLimit: "2Gi" },
    });
    const largerConf = directives(
      inputs(findResource(larger, ConfigMap, "redis-config")).data["redis.conf"],
    );
    assert.equal(Number(largerConf.get("maxmemory")), 1024 * mebibyte);
    assert.deepEqual(container(larger).resources, {
      requests: { cpu: "100m", memory: "1Gi" },
      limits: { cpu: "1", memory: "2Gi" },
    });
  });

  it("keeps the password in a Secret, hands it over only by secretKeyRef, and writes it to a memory volume at start", async () => {
    const evaluation = await inCluster();
    const secret = inputs(findResource(evaluation, Secret, "redis-password"));
    assert.deepEqual(secret.stringData, { password });
    const redis = container(evaluation);
    for (const name of ["REDIS_PASSWORD", "REDISCLI_AUTH"]) {
      const entry = redis.env.find((e: Json) => e.name === name);
      assert.deepEqual(entry, {
        name,
        valueFrom: { secretKeyRef: { name: secret.metadata.name, key: "password" } },
      });
    }
    // The config line is written where the include points, on a volume in memory.
    const conf = directives(
      inputs(findResource(evaluation, ConfigMap, "redis-config")).data["redis.conf"],
    );
    const included = conf.get("include") as string;
    assert.match(redisStartScript, new RegExp(`> ${included}\\n`));
    const run = redis.volumeMounts.find((m: Json) => included.startsWith(`${m.mountPath}/`));
    const volume = podSpec(inputs(findResource(evaluation, StatefulSet, "redis"))).volumes.find(
      (v: Json) => v.name === run.name,
    );
    assert.equal(volume.emptyDir.medium, "Memory");
    for (const resource of evaluation.resources.filter((r) => r.type !== Secret)) {
      assert.ok(!JSON.stringify(resource.inputs).includes(password), resource.name);
    }
    assert.equal(await promiseOf(evaluation.component.passwordSecretName), secret.metadata.name);
  });

  it("writes the password with no command but the shell's own, and starts Redis with it in neither its arguments nor its environment", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "redis-start-"));
    try {
      // The only command on PATH: a redis-server that reports its arguments and environment. Any
      // other command the script ran (one that could show the password in a process list) would
      // not be found, and the script would fail.
      writeFileSync(
        path.join(dir, "redis-server"),
        '#!/bin/sh\nprintf "argv %s\\n" "$*"\nexport -p\n',
        { mode: 0o755 },
      );
      const script = redisStartScript.replaceAll("/run/redis", dir);
      const run = spawnSync("/bin/sh", ["-c", script], {
        env: { PATH: dir, REDIS_PASSWORD: password },
        encoding: "utf8",
      });
      assert.equal(run.status, 0, run.stderr);
      assert.equal(readFileSync(path.join(dir, "auth.conf"), "utf8"), `requirepass ${password}\n`);
      assert.match(run.stdout, /^argv \/etc\/redis\/redis\.conf$/m);
      assert.ok(!run.stdout.includes(password), "the password reaches redis-server");
      assert.ok(!script.includes(password));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("probes with redis-cli authenticated by REDISCLI_AUTH: ready on PONG only, alive while loading", async () => {
    const redis = container(await inCluster());
    assert.deepEqual(redis.readinessProbe.exec.command, ["sh", "-c", redisReadinessScript]);
    assert.deepEqual(redis.livenessProbe.exec.command, ["sh", "-c", redisLivenessScript]);
    const probe = (script: string, reply: string) => {
      // A stand-in redis-cli that answers what a real one would print.
      const dir = fakeCli(reply);
      try {
        return spawnSync("sh", ["-c", script], { env: { PATH: `${dir}:${process.env.PATH}` } })
          .status;
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    };
    assert.equal(probe(redisReadinessScript, "PONG"), 0);
    assert.notEqual(
      probe(redisReadinessScript, "LOADING Redis is loading the dataset in memory"),
      0,
    );
    assert.notEqual(probe(redisReadinessScript, "NOAUTH Authentication required."), 0);
    assert.equal(probe(redisLivenessScript, "PONG"), 0);
    assert.equal(probe(redisLivenessScript, "LOADING Redis is loading the dataset in memory"), 0);
    assert.notEqual(probe(redisLivenessScript, "Could not connect to Redis at 127.0.0.1:6379"), 0);
    for (const script of [redisReadinessScript, redisLivenessScript]) {
      assert.doesNotMatch(script, / -a /, "no password on redis-cli's command line");
    }
  });

  it("runs as the image's redis user under the restricted standard, writable only where it must write", async () => {
    const evaluation = await inCluster();
    const pod = podSpec(inputs(findResource(evaluation, StatefulSet, "redis")));
    assert.deepEqual(
      {
        runAsNonRoot: pod.securityContext.runAsNonRoot,
        runAsUser: pod.securityContext.runAsUser,
        runAsGroup: pod.securityContext.runAsGroup,
        fsGroup: pod.securityContext.fsGroup,
        seccomp: pod.securityContext.seccompProfile.type,
      },
      {
        runAsNonRoot: true,
        runAsUser: 999,
        runAsGroup: 999,
        fsGroup: 999,
        seccomp: "RuntimeDefault",
      },
    );
    assert.equal(pod.automountServiceAccountToken, false);
    const redis = container(evaluation);
    assert.equal(redis.securityContext.readOnlyRootFilesystem, true);
    assert.equal(redis.securityContext.allowPrivilegeEscalation, false);
    assert.deepEqual(redis.securityContext.capabilities, { drop: ["ALL"] });
    assert.deepEqual(
      redis.volumeMounts
        .filter((m: Json) => !m.readOnly)
        .map((m: Json) => m.mountPath)
        .sort(),
      ["/data", "/run/redis"],
    );
  });

  it("serves Redis's port through a ClusterIP Service, gives the masters its URL, and declares no PodDisruptionBudget for its single pod", async () => {
    const evaluation = await inCluster();
    const service = inputs(findResource(evaluation, Service, "redis"));
    const statefulSet = inputs(findResource(evaluation, StatefulSet, "redis"));
    assert.equal(service.spec.type, "ClusterIP");
    assert.deepEqual(service.spec.ports, [
      { name: "redis", port: 6379, targetPort: "redis", protocol: "TCP" },
    ]);
    assert.deepEqual(service.spec.selector, statefulSet.spec.selector.matchLabels);
    assert.deepEqual(evaluation.component.peer, {
      kind: "pods",
      selector: statefulSet.spec.selector.matchLabels,
      port: 6379,
    });
    assert.equal(
      await promiseOf(evaluation.component.url),
      `redis://${service.metadata.name}.fleet.svc.cluster.local:6379/0`,
    );
    assert.equal(evaluation.component.caConfigMapName, undefined);
    assert.deepEqual(resourcesOfType(evaluation, Pdb), []);
  });

  it("keeps its name through a replacement, deleting the old StatefulSet first, so the volume claim is found again", async () => {
    const resource = findResource(await inCluster(), StatefulSet, "redis");
    assert.equal(inputs(resource).metadata.name, "redis");
    assert.equal(inputs(resource).spec.volumeClaimTemplates[0].metadata.name, "data");
    assert.equal(resource.options.deleteBeforeReplace, true);
  });

  it("states its accepted manifest findings, then the image's, on the StatefulSet", async () => {
    const statefulSet = inputs(findResource(await inCluster(), StatefulSet, "redis"));
    const annotations = Object.values(statefulSet.metadata.annotations) as string[];
    assert.deepEqual(
      annotations.map((a) => a.split("=")[0]),
      ["CKV_K8S_35", "CKV_K8S_40", "CKV_K8S_43"],
    );
    assert.equal(annotations[2], "CKV_K8S_43=a finding the image brings");
  });
});

/** A directory with a `redis-cli` that prints `reply`. */
function fakeCli(reply: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), "redis-cli-"));
  writeFileSync(path.join(dir, "redis-cli"), `#!/bin/sh\necho '${reply}'\n`);
  chmodSync(path.join(dir, "redis-cli"), 0o755);
  return dir;
}

const gke: GkeConfig = {
  project: "my-project",
  region: "europe-west1",
  nodeMachineType: "e2-standard-2",
  nodeDiskSizeGb: 50,
  network: "default",
  subnetwork: undefined,
  nodeMinCount: 1,
  nodeMaxCount: 3,
  releaseChannel: "REGULAR",
  deletionProtection: true,
};

function memorystore(
  overrides: Partial<MemorystoreArgs> = {},
): Promise<ComponentEvaluation<Memorystore>> {
  return evaluateComponent(
    () =>
      new Memorystore("memorystore", {
        gke,
        baseName: "taskfleet-prod",
        sizeGb: 4,
        namespace: pulumi.output("fleet"),
        ...overrides,
      }),
  );
}

describe("Memorystore", () => {
  it("creates a highly available instance with one replica, RDB snapshots, AUTH, TLS and no eviction, in the cluster's network", async () => {
    const evaluation = await memorystore();
    const instance = inputs(findResource(evaluation, Instance, "memorystore"));
    assert.equal(instance.tier, "STANDARD_HA");
    assert.equal(instance.replicaCount, 1);
    assert.deepEqual(instance.persistenceConfig, {
      persistenceMode: "RDB",
      rdbSnapshotPeriod: "ONE_HOUR",
    });
    assert.equal(instance.authEnabled, true);
    assert.equal(instance.transitEncryptionMode, "SERVER_AUTHENTICATION");
    assert.deepEqual(instance.redisConfigs, { "maxmemory-policy": "noeviction" });
    assert.equal(instance.authorizedNetwork, "projects/my-project/global/networks/default");
    assert.equal(instance.memorySizeGb, 4);
    assert.equal(instance.region, "europe-west1");
    assert.equal(instance.project, "my-project");
    assert.match(instance.redisVersion, /^REDIS_\d+_\d+$/);
  });

  it("takes a shared VPC's network by its full path as it is", async () => {
    const evaluation = await memorystore({
      gke: { ...gke, network: "projects/host-project/global/networks/shared" },
    });
    assert.equal(
      inputs(findResource(evaluation, Instance, "memorystore")).authorizedNetwork,
      "projects/host-project/global/networks/shared",
    );
  });

  it("enables the Memorystore API before it creates the instance, and leaves it enabled on destroy", async () => {
    const evaluation = await memorystore();
    const api = inputs(findResource(evaluation, "gcp:projects/service:Service", "memorystore-api"));
    assert.deepEqual(api, {
      project: "my-project",
      service: "redis.googleapis.com",
      disableOnDestroy: false,
    });
    assert.ok(
      findResource(evaluation, Instance, "memorystore").dependsOn.includes(
        "gcp:projects/service:Service::memorystore-api",
      ),
    );
  });

  it("gives the masters a rediss:// URL, the AUTH string in a Secret and the server CA in a ConfigMap", async () => {
    const evaluation = await memorystore();
    const component = evaluation.component;
    // The mocks' instance: host 198.51.100.20, TLS port 6378.
    assert.equal(await promiseOf(component.url), "rediss://198.51.100.20:6378/0");
    const secret = inputs(findResource(evaluation, Secret, "memorystore-password"));
    assert.match(secret.stringData.password, /^auth-string-of-memorystore-/);
    assert.equal(secret.metadata.namespace, "fleet");
    assert.equal(await promiseOf(component.passwordSecretName), secret.metadata.name);
    const ca = inputs(findResource(evaluation, ConfigMap, "memorystore-ca"));
    assert.match(ca.data["ca.pem"], /^-----BEGIN CERTIFICATE-----\n/);
    assert.equal(await promiseOf(component.caConfigMapName), ca.metadata.name);
    for (const resource of evaluation.resources.filter((r) => r.type !== Secret)) {
      assert.ok(
        !JSON.stringify(resource.inputs).includes(secret.stringData.password),
        resource.name,
      );
    }
  });

  it("names the instance's address and port for the masters' egress policy", async () => {
    const { component } = await memorystore();
    assert.equal(component.peer.kind, "address");
    if (component.peer.kind !== "address") return;
    assert.equal(await promiseOf(pulumi.output(component.peer.host)), "198.51.100.20");
    assert.equal(await promiseOf(pulumi.output(component.peer.port)), 6378);
  });
});
