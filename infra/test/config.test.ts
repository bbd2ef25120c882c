import assert from "node:assert/strict";
import { describe, it } from "node:test";
import * as pulumi from "@pulumi/pulumi";
import {
  ConfigError,
  checkRedisPassword,
  clusterDefaults,
  configSpec,
  loadConfig,
  validateConfig,
} from "../config";
import { evaluateStack } from "../testing/harness";

function validate(values: Record<string, string>, stack = "test") {
  return validateConfig({ stack, values });
}

const gke = {
  "taskfleet:cluster": "gke",
  "gcp:project": "my-project",
  "gcp:region": "europe-west1",
};

/** Every rule with the exact message a user sees. */
const rejected: [string, Record<string, string>, string][] = [
  [
    "an unknown cluster kind",
    { "taskfleet:cluster": "eks" },
    'Invalid config taskfleet:cluster = "eks": allowed values are kind, existing, gke.',
  ],
  [
    "min replicas above max",
    { "taskfleet:workerMinReplicas": "5", "taskfleet:workerMaxReplicas": "3" },
    'Invalid config taskfleet:workerMinReplicas = "5": must not exceed taskfleet:workerMaxReplicas (3).',
  ],
  [
    "a replica count that is not a whole number",
    { "taskfleet:workerMaxReplicas": "2.5" },
    'Invalid config taskfleet:workerMaxReplicas = "2.5": must be an integer from 1 to 1000.',
  ],
  [
    "a replica count that is not a number",
    { "taskfleet:workerMinReplicas": "two" },
    'Invalid config taskfleet:workerMinReplicas = "two": must be an integer from 0 to 1000.',
  ],
  [
    "zero minimum replicas with the CPU autoscaler",
    { "taskfleet:workerMinReplicas": "0" },
    'Invalid config taskfleet:workerMinReplicas = "0": must be at least 1 with taskfleet:autoscaler cpu (a CPU autoscaler cannot wake a pod from zero); set taskfleet:autoscaler to queue to scale to zero.',
  ],
  [
    "an unknown autoscaler",
    { "taskfleet:autoscaler": "keda" },
    'Invalid config taskfleet:autoscaler = "keda": allowed values are cpu, queue.',
  ],
  [
    "an unknown source of KEDA",
    { "taskfleet:autoscaler": "queue", "taskfleet:keda": "helm" },
    'Invalid config taskfleet:keda = "helm": allowed values are install, present.',
  ],
  [
    "a KEDA namespace that is not a DNS label",
    { "taskfleet:autoscaler": "queue", "taskfleet:kedaNamespace": "KEDA_system" },
    `Invalid config taskfleet:kedaNamespace = "KEDA_system": must be a namespace name (a DNS label: at most 63 lower-case letters, digits and '-').`,
  ],
  [
    "a queue setting with the CPU autoscaler, which would ignore it",
    { "taskfleet:workerTasksPerSlot": "4" },
    'Invalid config taskfleet:workerTasksPerSlot = "4": only used when taskfleet:autoscaler is queue (it is cpu); unset it or set taskfleet:autoscaler to queue.',
  ],
  [
    "KEDA's source with the CPU autoscaler",
    { "taskfleet:keda": "present" },
    'Invalid config taskfleet:keda = "present": only used when taskfleet:autoscaler is queue (it is cpu); unset it or set taskfleet:autoscaler to queue.',
  ],
  [
    "no tasks per slot",
    { "taskfleet:autoscaler": "queue", "taskfleet:workerTasksPerSlot": "0" },
    'Invalid config taskfleet:workerTasksPerSlot = "0": must be an integer from 1 to 100.',
  ],
  [
    "a polling interval of 0",
    { "taskfleet:autoscaler": "queue", "taskfleet:workerPollingSeconds": "0" },
    'Invalid config taskfleet:workerPollingSeconds = "0": must be an integer from 1 to 300.',
  ],
  [
    "a negative cool-down",
    { "taskfleet:autoscaler": "queue", "taskfleet:workerCooldownSeconds": "-1" },
    'Invalid config taskfleet:workerCooldownSeconds = "-1": must be an integer from 0 to 86400.',
  ],
  [
    "a negative activation",
    { "taskfleet:autoscaler": "queue", "taskfleet:workerActivationTasks": "-5" },
    'Invalid config taskfleet:workerActivationTasks = "-5": must be an integer from 0 to 100000.',
  ],
  [
    "a CPU target of 0",
    { "taskfleet:workerTargetCpuUtilization": "0" },
    'Invalid config taskfleet:workerTargetCpuUtilization = "0": must be an integer from 1 to 100.',
  ],
  [
    "a CPU target above 100",
    { "taskfleet:workerTargetCpuUtilization": "101" },
    'Invalid config taskfleet:workerTargetCpuUtilization = "101": must be an integer from 1 to 100.',
  ],
  [
    "a GKE stack without gcp:project",
    { "taskfleet:cluster": "gke", "gcp:region": "europe-west1" },
    'Missing config gcp:project: taskfleet:cluster = "gke" needs the Google Cloud project id (pulumi config set gcp:project <id>).',
  ],
  [
    "a GKE stack without gcp:region",
    { "taskfleet:cluster": "gke", "gcp:project": "my-project" },
    'Missing config gcp:region: taskfleet:cluster = "gke" needs a region such as europe-west1 (pulumi config set gcp:region <region>).',
  ],
  [
    "a zone where a region belongs",
    { ...gke, "gcp:region": "europe-west1-b" },
    'Invalid config gcp:region = "europe-west1-b": must be a region such as europe-west1 (a regional cluster; zones are not supported).',
  ],
  [
    "a machine type that is not one",
    { ...gke, "taskfleet:nodeMachineType": "4" },
    'Invalid config taskfleet:nodeMachineType = "4": must be a Compute Engine machine type such as e2-standard-2.',
  ],
  [
    "a node count that is not a number",
    { ...gke, "taskfleet:nodeMaxCount": "many" },
    'Invalid config taskfleet:nodeMaxCount = "many": must be an integer from 1 to 100.',
  ],
  [
    "more minimum nodes than maximum",
    { ...gke, "taskfleet:nodeMinCount": "4", "taskfleet:nodeMaxCount": "2" },
    'Invalid config taskfleet:nodeMinCount = "4": must not exceed taskfleet:nodeMaxCount (2).',
  ],
  [
    "an unknown release channel",
    { ...gke, "taskfleet:releaseChannel": "stable" },
    'Invalid config taskfleet:releaseChannel = "stable": allowed values are RAPID, REGULAR, STABLE, EXTENDED.',
  ],
  [
    "deletion protection that is not a boolean",
    { ...gke, "taskfleet:deletionProtection": "yes" },
    'Invalid config taskfleet:deletionProtection = "yes": must be true or false.',
  ],
  [
    "a CPU request above its limit",
    { "taskfleet:workerCpuRequest": "2", "taskfleet:workerCpuLimit": "500m" },
    'Invalid config taskfleet:workerCpuRequest = "2": must not exceed taskfleet:workerCpuLimit (500m).',
  ],
  [
    "a memory request above its limit",
    { "taskfleet:masterMemoryRequest": "1Gi", "taskfleet:masterMemoryLimit": "512Mi" },
    'Invalid config taskfleet:masterMemoryRequest = "1Gi": must not exceed taskfleet:masterMemoryLimit (512Mi).',
  ],
  [
    "a memory quantity without a valid unit",
    { "taskfleet:workerMemoryLimit": "256MB" },
    'Invalid config taskfleet:workerMemoryLimit = "256MB": must be a memory quantity such as 128Mi or 1Gi.',
  ],
  [
    "a lease longer than an hour",
    { "taskfleet:leaseSeconds": "3601" },
    'Invalid config taskfleet:leaseSeconds = "3601": must be an integer from 1 to 3600.',
  ],
  [
    "a worker grace period below zero",
    { "taskfleet:workerShutdownGraceSeconds": "-1" },
    'Invalid config taskfleet:workerShutdownGraceSeconds = "-1": must be an integer from 0 to 3600.',
  ],
  [
    "an unknown log level",
    { "taskfleet:logLevel": "verbose" },
    'Invalid config taskfleet:logLevel = "verbose": allowed values are fatal, error, warn, info, debug, trace, silent.',
  ],
  [
    "a namespace that is not a DNS label",
    { "taskfleet:namespace": "Task_Fleet" },
    "Invalid config taskfleet:namespace = \"Task_Fleet\": must be a DNS label: at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit.",
  ],
  [
    "a kubeconfig context for a cluster the program creates",
    { "taskfleet:cluster": "kind", "taskfleet:kubeContext": "minikube" },
    'Invalid config taskfleet:kubeContext = "minikube": only used when taskfleet:cluster is existing (it is kind); unset it or change the cluster.',
  ],
  [
    "an image load command for GKE",
    { ...gke, "taskfleet:imageLoadCommand": "minikube image load" },
    'Invalid config taskfleet:imageLoadCommand = "minikube image load": only used when taskfleet:cluster is existing (it is gke); unset it or change the cluster.',
  ],
  [
    "a master memory limit with no room for tasks",
    { "taskfleet:masterMemoryLimit": "256Mi", "taskfleet:masterMemoryRequest": "128Mi" },
    'Invalid config taskfleet:masterMemoryLimit = "256Mi": must be at least 320Mi (128Mi outside the heap, 160Mi for requests being parsed, 32Mi of tasks).',
  ],
  [
    "a worker memory limit too small for its handler threads",
    { "taskfleet:workerConcurrency": "16", "taskfleet:workerMemoryLimit": "256Mi" },
    'Invalid config taskfleet:workerMemoryLimit = "256Mi": must be at least 496Mi for taskfleet:workerConcurrency 16 (96Mi for the process, 24Mi per handler thread, 16Mi of results); raise it or lower the concurrency.',
  ],
  [
    "an internal load balancer on a local cluster",
    { "taskfleet:internalLoadBalancer": "true" },
    'Invalid config taskfleet:internalLoadBalancer = "true": only used when taskfleet:cluster is gke (it is kind); unset it or change the cluster.',
  ],
  [
    "a source range that is not a CIDR range",
    { "taskfleet:allowedSourceRanges": "203.0.113.0/24,10.0.0.1" },
    'Invalid config taskfleet:allowedSourceRanges = "203.0.113.0/24,10.0.0.1": "10.0.0.1" is not a CIDR range; use comma-separated ranges such as 203.0.113.0/24 or 2001:db8::/32.',
  ],
  [
    "a source range with a prefix too long for IPv4",
    { "taskfleet:allowedSourceRanges": "203.0.113.0/33" },
    'Invalid config taskfleet:allowedSourceRanges = "203.0.113.0/33": "203.0.113.0/33" is not a CIDR range; use comma-separated ranges such as 203.0.113.0/24 or 2001:db8::/32.',
  ],
  [
    "a metrics namespace that is not a namespace name",
    { "taskfleet:metricsNamespaces": "monitoring,Kube_System" },
    'Invalid config taskfleet:metricsNamespaces = "monitoring,Kube_System": "Kube_System" is not a namespace name (a DNS label); use comma-separated names such as monitoring,gmp-system.',
  ],
  [
    "a node disk too small to boot",
    { ...gke, "taskfleet:nodeDiskSizeGb": "5" },
    'Invalid config taskfleet:nodeDiskSizeGb = "5": must be an integer from 10 to 65536.',
  ],
  [
    "a network given as a URL",
    {
      ...gke,
      "taskfleet:network": "https://www.googleapis.com/compute/v1/projects/p/global/networks/n",
    },
    'Invalid config taskfleet:network = "https://www.googleapis.com/compute/v1/projects/p/global/networks/n": must be a VPC network name such as default, or projects/<project>/global/networks/<name>.',
  ],
  [
    "a subnetwork with upper-case letters",
    { ...gke, "taskfleet:subnetwork": "Nodes" },
    'Invalid config taskfleet:subnetwork = "Nodes": must be empty, a subnetwork name, or projects/<project>/regions/<region>/subnetworks/<name>.',
  ],
  [
    "more masters than the most allowed",
    { "taskfleet:masterReplicas": "21" },
    'Invalid config taskfleet:masterReplicas = "21": must be an integer from 1 to 20, or 0 for the cluster\'s default (1 on kind, 1 on existing, 2 on gke).',
  ],
  [
    "a negative master count",
    { "taskfleet:masterReplicas": "-1" },
    'Invalid config taskfleet:masterReplicas = "-1": must be an integer from 1 to 20, or 0 for the cluster\'s default (1 on kind, 1 on existing, 2 on gke).',
  ],
  [
    "a master count that is not a number",
    { "taskfleet:masterReplicas": "two" },
    'Invalid config taskfleet:masterReplicas = "two": must be an integer from 1 to 20, or 0 for the cluster\'s default (1 on kind, 1 on existing, 2 on gke).',
  ],
  [
    "an unknown kind of Redis",
    { "taskfleet:redis": "elasticache" },
    'Invalid config taskfleet:redis = "elasticache": allowed values are inCluster, memorystore, or empty for the cluster\'s default (inCluster on kind, inCluster on existing, memorystore on gke).',
  ],
  [
    "Memorystore on a local cluster",
    { "taskfleet:redis": "memorystore" },
    'Invalid config taskfleet:redis = "memorystore": Memorystore is only available when taskfleet:cluster is gke (it is kind); use inCluster or leave it empty.',
  ],
  [
    "Memorystore on an existing cluster",
    { "taskfleet:cluster": "existing", "taskfleet:redis": "memorystore" },
    'Invalid config taskfleet:redis = "memorystore": Memorystore is only available when taskfleet:cluster is gke (it is existing); use inCluster or leave it empty.',
  ],
  [
    "a Memorystore size of 0 GB",
    { ...gke, "taskfleet:memorystoreSizeGb": "0" },
    'Invalid config taskfleet:memorystoreSizeGb = "0": must be an integer from 1 to 300.',
  ],
  [
    "a Redis memory limit with no room for its rewrite fork",
    { "taskfleet:redisMemoryLimit": "100Mi", "taskfleet:redisMemoryRequest": "64Mi" },
    'Invalid config taskfleet:redisMemoryLimit = "100Mi": must be at least 128Mi (maxmemory is 50% of it, the rest is room for rewriting the append-only file).',
  ],
  [
    "a Redis CPU request above its limit",
    { "taskfleet:redisCpuRequest": "2", "taskfleet:redisCpuLimit": "1" },
    'Invalid config taskfleet:redisCpuRequest = "2": must not exceed taskfleet:redisCpuLimit (1).',
  ],
  [
    "a Redis CPU limit that is not a quantity",
    { "taskfleet:redisCpuLimit": "fast" },
    'Invalid config taskfleet:redisCpuLimit = "fast": must be a CPU quantity such as 250m or 1.',
  ],
  [
    "a Redis memory request above its limit",
    { "taskfleet:redisMemoryRequest": "1Gi", "taskfleet:redisMemoryLimit": "512Mi" },
    'Invalid config taskfleet:redisMemoryRequest = "1Gi": must not exceed taskfleet:redisMemoryLimit (512Mi).',
  ],
  [
    "a Redis volume size in the wrong unit",
    { "taskfleet:redisStorageSize": "1GB" },
    'Invalid config taskfleet:redisStorageSize = "1GB": must be a storage quantity such as 1Gi or 500Mi.',
  ],
  [
    "an empty Redis volume",
    { "taskfleet:redisStorageSize": "0" },
    'Invalid config taskfleet:redisStorageSize = "0": must be more than 0.',
  ],
  [
    "a StorageClass name that is not one",
    { "taskfleet:redisStorageClass": "Fast_SSD" },
    'Invalid config taskfleet:redisStorageClass = "Fast_SSD": must be empty (the cluster\'s default class) or a StorageClass name such as standard-rwo.',
  ],
  [
    "a Redis image by the moving latest tag",
    { "taskfleet:redisImage": "redis:latest" },
    'Invalid config taskfleet:redisImage = "redis:latest": must be an image reference with a digest (repo@sha256:...) or a tag other than latest (repo:1.2.3).',
  ],
  [
    "a Redis image without a tag",
    { "taskfleet:redisImage": "redis" },
    'Invalid config taskfleet:redisImage = "redis": must be an image reference with a digest (repo@sha256:...) or a tag other than latest (repo:1.2.3).',
  ],
];

describe("validateConfig", () => {
  for (const [what, values, message] of rejected) {
    it(`rejects ${what}, naming the key, the value and what is allowed`, () => {
      assert.throws(
        () => validate(values),
        (error: unknown) => {
          assert.ok(error instanceof ConfigError);
          assert.equal(error.message, message);
          return true;
        },
      );
    });
  }

  it("takes every default from the one spec that Pulumi.yaml and the docs are checked against", () => {
    const config = validate({});
    assert.equal(config.cluster, configSpec.cluster.default);
    assert.equal(config.leaseSeconds, configSpec.leaseSeconds.default);
    assert.equal(config.worker.minReplicas, configSpec.workerMinReplicas.default);
    assert.equal(config.worker.maxReplicas, configSpec.workerMaxReplicas.default);
    assert.equal(config.worker.targetCpuUtilization, configSpec.workerTargetCpuUtilization.default);
    assert.equal(config.worker.shutdownGraceSeconds, configSpec.workerShutdownGraceSeconds.default);
    assert.equal(config.worker.resources.cpuRequest, configSpec.workerCpuRequest.default);
    assert.equal(config.namespace, "taskfleet-test");
    assert.equal(config.gke, undefined);
  });

  it("keeps a configured zero instead of falling back to the default", () => {
    const config = validate({ "taskfleet:workerShutdownGraceSeconds": "0" });
    assert.equal(config.worker.shutdownGraceSeconds, 0);
  });

  it("accepts equal min and max replicas and reads GKE settings only for GKE", () => {
    const config = validate({
      ...gke,
      "taskfleet:workerMinReplicas": "3",
      "taskfleet:workerMaxReplicas": "3",
    });
    assert.equal(config.worker.minReplicas, 3);
    assert.deepEqual(config.gke, {
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
    });
  });

  it("reads source ranges as a trimmed list, and GKE networks as names or project paths", () => {
    assert.deepEqual(validate({}).allowedSourceRanges, []);
    assert.deepEqual(
      validate({ "taskfleet:allowedSourceRanges": " 203.0.113.0/24 ,2001:db8::/32" })
        .allowedSourceRanges,
      ["203.0.113.0/24", "2001:db8::/32"],
    );
    const custom = validate({
      ...gke,
      "taskfleet:network": "projects/host-project/global/networks/shared",
      "taskfleet:subnetwork": "projects/host-project/regions/europe-west1/subnetworks/nodes",
      "taskfleet:internalLoadBalancer": "true",
    });
    assert.equal(custom.gke?.network, "projects/host-project/global/networks/shared");
    assert.equal(
      custom.gke?.subnetwork,
      "projects/host-project/regions/europe-west1/subnetworks/nodes",
    );
    assert.equal(custom.internalLoadBalancer, true);
  });

  it("runs one master on local clusters and two on GKE unless masterReplicas says otherwise", () => {
    assert.equal(configSpec.masterReplicas.default, 0);
    assert.equal(validate({}).master.replicas, 1);
    assert.equal(validate({ "taskfleet:cluster": "existing" }).master.replicas, 1);
    assert.equal(validate(gke).master.replicas, 2);
    assert.equal(validate({ "taskfleet:masterReplicas": "3" }).master.replicas, 3);
    assert.equal(validate({ ...gke, "taskfleet:masterReplicas": "1" }).master.replicas, 1);
    assert.equal(validate({ "taskfleet:masterReplicas": "20" }).master.replicas, 20);
  });

  it("runs Redis in the cluster locally and Memorystore on GKE unless redis says otherwise", () => {
    assert.equal(configSpec.redis.default, "");
    const local = validate({});
    assert.equal(local.redis.kind, "inCluster");
    if (local.redis.kind !== "inCluster") return;
    assert.equal(local.redis.image, configSpec.redisImage.default);
    assert.equal(local.redis.storageSize, configSpec.redisStorageSize.default);
    assert.equal(local.redis.storageClass, undefined);
    assert.equal(local.redis.resources.memoryLimit, configSpec.redisMemoryLimit.default);
    assert.equal(local.redis.password, undefined);
    assert.deepEqual(validate(gke).redis, {
      kind: "memorystore",
      sizeGb: configSpec.memorystoreSizeGb.default,
    });
    assert.equal(validate({ ...gke, "taskfleet:redis": "inCluster" }).redis.kind, "inCluster");
    const custom = validate({
      "taskfleet:redis": "inCluster",
      "taskfleet:redisStorageClass": "fast-ssd",
      "taskfleet:redisStorageSize": "20Gi",
      "taskfleet:redisImage": "registry.example/redis:8.10.1",
    });
    assert.deepEqual(
      custom.redis.kind === "inCluster" && [
        custom.redis.storageClass,
        custom.redis.storageSize,
        custom.redis.image,
      ],
      ["fast-ssd", "20Gi", "registry.example/redis:8.10.1"],
    );
  });

  it("describes the cluster defaults of masterReplicas and redis in Pulumi.yaml as the program applies them", () => {
    for (const [cluster, defaults] of Object.entries(clusterDefaults)) {
      // "2 on gke, 1 on kind and existing"
      const stated = (value: string | number) =>
        new RegExp(`\\b${value} on ([a-z]+ and )?${cluster}\\b`);
      assert.match(configSpec.masterReplicas.description, stated(defaults.masterReplicas));
      assert.match(configSpec.redis.description, stated(defaults.redis));
    }
  });

  it("refuses a configured Redis password with Memorystore, which makes its own, without showing it", () => {
    assert.throws(
      () =>
        validateConfig({
          stack: "test",
          values: gke,
          redisPassword: pulumi.secret("a-password-for-memorystore-0123"),
        }),
      {
        message:
          "Invalid config taskfleet:redisPassword (value not shown: it is a secret): only used when taskfleet:redis is inCluster (it is memorystore, which makes its own AUTH string); unset it.",
      },
    );
  });

  it("sizes the workers on CPU by default, and on the queue with KEDA's settings when asked, from zero", () => {
    assert.deepEqual(validate({}).worker.autoscaler, { kind: "cpu" });
    const queued = validate({
      "taskfleet:autoscaler": "queue",
      "taskfleet:workerMinReplicas": "0",
      "taskfleet:keda": "present",
      "taskfleet:kedaNamespace": "autoscaling",
      "taskfleet:workerTasksPerSlot": "3",
      "taskfleet:workerActivationTasks": "10",
      "taskfleet:workerPollingSeconds": "5",
      "taskfleet:workerCooldownSeconds": "0",
    });
    assert.equal(queued.worker.minReplicas, 0);
    assert.deepEqual(queued.worker.autoscaler, {
      kind: "queue",
      tasksPerSlot: 3,
      activationTasks: 10,
      pollingSeconds: 5,
      cooldownSeconds: 0,
      keda: { source: "present", namespace: "autoscaling" },
    });
    const defaults = validate({ "taskfleet:autoscaler": "queue" }).worker.autoscaler;
    assert.deepEqual(defaults, {
      kind: "queue",
      tasksPerSlot: configSpec.workerTasksPerSlot?.default,
      activationTasks: configSpec.workerActivationTasks?.default,
      pollingSeconds: configSpec.workerPollingSeconds?.default,
      cooldownSeconds: configSpec.workerCooldownSeconds?.default,
      keda: { source: configSpec.keda?.default, namespace: configSpec.kedaNamespace?.default },
    });
  });

  it("refuses a scaler token without the queue autoscaler, which would ignore it, without showing it", () => {
    assert.throws(
      () =>
        validateConfig({
          stack: "test",
          values: {},
          scalerToken: pulumi.secret("a-scaler-token-0123456789abcdef"),
        }),
      (error: Error) =>
        error instanceof ConfigError &&
        error.message ===
          "Invalid config taskfleet:scalerToken (value not shown: it is a secret): only used when taskfleet:autoscaler is queue (it is cpu); unset it or set taskfleet:autoscaler to queue.",
    );
  });

  it("returns a frozen object", () => {
    assert.ok(Object.isFrozen(validate({})));
  });
});

describe("checkRedisPassword", () => {
  it("takes 16 to 128 letters, digits and URL- or base64-safe punctuation", () => {
    for (const good of ["abcdefghijklmnop", "A0-_.~+/=A0-_.~+/=", "x".repeat(128)]) {
      assert.doesNotThrow(() => checkRedisPassword(good), good);
    }
  });

  it("refuses a short one, or one with a space, a quote or a newline that redis.conf would split, without quoting it", () => {
    for (const bad of [
      "short-password",
      "with a space in it!",
      'quote"in-the-password',
      "line\nbreak-in-the-password",
      "x".repeat(129),
    ]) {
      assert.throws(
        () => checkRedisPassword(bad),
        (error: unknown) => {
          assert.ok(error instanceof ConfigError);
          assert.equal(
            error.message,
            "Invalid config taskfleet:redisPassword (value not shown: it is a secret): must be 16 to 128 characters, each a letter, a digit or one of - _ . ~ + / =.",
          );
          return true;
        },
      );
    }
  });
});

describe("loadConfig", () => {
  it("stops the program before any resource is registered", async () => {
    let registered = 0;
    await pulumi.runtime.setMocks(
      {
        newResource: (args) => {
          registered += 1;
          return { id: `${args.name}-id`, state: args.inputs };
        },
        call: (args) => {
          throw new Error(`unexpected invoke ${args.token}`);
        },
      },
      "taskfleet",
      "broken",
    );
    pulumi.runtime.setAllConfig({ "taskfleet:workerTargetCpuUtilization": "150" });
    assert.throws(() => loadConfig(), {
      message:
        'Invalid config taskfleet:workerTargetCpuUtilization = "150": must be an integer from 1 to 100.',
    });
    assert.equal(registered, 0);
  });

  it("fails a stack evaluation with the same message", async () => {
    await assert.rejects(evaluateStack("dev", { "taskfleet:cluster": "eks" }), {
      message: 'Invalid config taskfleet:cluster = "eks": allowed values are kind, existing, gke.',
    });
  });

  it("checks a configured Redis password before anything is registered, and never shows it", async () => {
    await assert.rejects(
      evaluateStack("dev", { "taskfleet:redisPassword": "too short !" }),
      (error: unknown) => {
        assert.ok(error instanceof Error);
        assert.match(error.message, /^Invalid config taskfleet:redisPassword \(value not shown/);
        assert.ok(!error.message.includes("too short !"));
        return true;
      },
    );
  });

  it("treats an empty token as unset and a configured one as a secret", async () => {
    await pulumi.runtime.setMocks(
      {
        newResource: (args) => ({ id: `${args.name}-id`, state: args.inputs }),
        call: (args) => {
          throw new Error(`unexpected invoke ${args.token}`);
        },
      },
      "taskfleet",
      "tokens",
    );
    pulumi.runtime.setAllConfig(
      { "taskfleet:apiToken": "", "taskfleet:workerToken": "configured-worker-token" },
      ["taskfleet:apiToken", "taskfleet:workerToken"],
    );
    const config = loadConfig();
    assert.equal(config.apiToken, undefined);
    assert.ok(config.workerToken);
    assert.equal(await pulumi.isSecret(config.workerToken), true);
  });
});
