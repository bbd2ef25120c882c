import assert from "node:assert/strict";
import { describe, it } from "node:test";
import * as pulumi from "@pulumi/pulumi";
import { ConfigError, configSpec, loadConfig, validateConfig } from "../config";
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
    'Invalid config taskfleet:workerMinReplicas = "two": must be an integer from 1 to 1000.',
  ],
  [
    "zero minimum replicas",
    { "taskfleet:workerMinReplicas": "0" },
    'Invalid config taskfleet:workerMinReplicas = "0": must be an integer from 1 to 1000.',
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

  it("returns a frozen object", () => {
    assert.ok(Object.isFrozen(validate({})));
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
