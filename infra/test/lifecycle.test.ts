/**
 * What a second `pulumi up` or a `pulumi destroy` does with the stack: which changes replace
 * what, what is refused, and whether the kind cluster's create step can run again.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { describe, it } from "node:test";
import { kindCreateScript } from "../cluster/kind";
import { evaluateStack, type RecordedResource } from "../testing/harness";
import { findResource, inputs } from "../testing/resources";

const NodePool = "gcp:container/nodePool:NodePool";
const Cluster = "gcp:container/cluster:Cluster";

/** The top-level inputs whose values differ between two registrations of one resource. */
function changedInputs(before: RecordedResource, after: RecordedResource): string[] {
  const keys = new Set([...Object.keys(before.inputs), ...Object.keys(after.inputs)]);
  return [...keys]
    .filter((key) => JSON.stringify(before.inputs[key]) !== JSON.stringify(after.inputs[key]))
    .sort();
}

describe("a later pulumi up", () => {
  it("changes the node pool's bounds in place: the only create-time input, initialNodeCount, is ignored", async () => {
    const before = findResource(await evaluateStack("prod"), NodePool, "gke-pool");
    const after = findResource(
      await evaluateStack("prod", { "taskfleet:nodeMinCount": "2", "taskfleet:nodeMaxCount": "4" }),
      NodePool,
      "gke-pool",
    );
    // initialNodeCount forces a new pool (every node replaced) unless the engine ignores it.
    const effective = changedInputs(before, after).filter(
      (key) => !after.options.ignoreChanges.includes(key),
    );
    assert.deepEqual(effective, ["autoscaling"]);
    assert.deepEqual(inputs(after).autoscaling, { minNodeCount: 2, maxNodeCount: 4 });
  });

  it("changes the node disk size without replacing the cluster", async () => {
    const before = findResource(await evaluateStack("prod"), Cluster, "gke-cluster");
    const after = findResource(
      await evaluateStack("prod", { "taskfleet:nodeDiskSizeGb": "100" }),
      Cluster,
      "gke-cluster",
    );
    const effective = changedInputs(before, after).filter(
      (key) => !after.options.ignoreChanges.includes(key),
    );
    assert.deepEqual(effective, []);
  });
});

describe("pulumi destroy", () => {
  it("is refused for a GKE cluster under deletion protection, and allowed once it is turned off", async () => {
    const on = findResource(await evaluateStack("prod"), Cluster, "gke-cluster");
    assert.equal(on.options.protect, true);
    const off = findResource(
      await evaluateStack("prod", { "taskfleet:deletionProtection": "false" }),
      Cluster,
      "gke-cluster",
    );
    assert.equal(off.options.protect, false);
    assert.equal(inputs(off).deletionProtection, false);
  });
});

describe("the master's load balancer", () => {
  it("takes the configured source ranges and, on GKE, an internal address", async () => {
    const service = inputs(
      findResource(
        await evaluateStack("prod", {
          "taskfleet:allowedSourceRanges": "203.0.113.0/24, 2001:db8::/32",
          "taskfleet:internalLoadBalancer": "true",
        }),
        "kubernetes:core/v1:Service",
        "master",
      ),
    );
    assert.deepEqual(service.spec.loadBalancerSourceRanges, ["203.0.113.0/24", "2001:db8::/32"]);
    assert.equal(service.metadata.annotations["networking.gke.io/load-balancer-type"], "Internal");
  });
});

describe("the master's internal port", () => {
  it("is open to the pods of the configured metrics namespaces, and to the workers", async () => {
    const policy = inputs(
      findResource(
        await evaluateStack("prod", {
          "taskfleet:metricsNamespaces": "monitoring, gmp-system",
          // Without KEDA's scaler, whose namespace the queue autoscaler adds (stacks.test.ts).
          "taskfleet:autoscaler": "cpu",
        }),
        "kubernetes:networking.k8s.io/v1:NetworkPolicy",
        "network-master-ingress",
      ),
    );
    const internal = policy.spec.ingress.find(
      (rule: { ports: { port: number }[] }) => rule.ports[0]?.port === 8081,
    );
    assert.deepEqual(
      internal.from.map((peer: Record<string, unknown>) => Object.keys(peer)[0]),
      ["podSelector", "namespaceSelector", "namespaceSelector"],
    );
    assert.deepEqual(
      internal.from
        .slice(1)
        .map(
          (peer: { namespaceSelector: { matchLabels: Record<string, string> } }) =>
            peer.namespaceSelector.matchLabels["kubernetes.io/metadata.name"],
        ),
      ["monitoring", "gmp-system"],
    );
  });
});

describe("the kind cluster's create step", () => {
  /** Runs the create script with a fake `kind` that keeps its clusters in a file. */
  function runCreate(dir: string) {
    return spawnSync("sh", ["-c", kindCreateScript], {
      env: {
        ...process.env,
        PATH: `${dir}:${process.env.PATH}`,
        KIND_CLUSTER_NAME: "taskfleet-dev",
        STATE: dir,
      },
      encoding: "utf8",
    });
  }

  it("creates the cluster once, prints only the kubeconfig on stdout, and can run again", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "fake-kind-"));
    try {
      const fakeKind = path.join(dir, "kind");
      writeFileSync(
        fakeKind,
        `#!/bin/sh
echo "kind $*" >> "$STATE/calls"
case "$1 $2" in
  "get clusters") cat "$STATE/clusters" 2>/dev/null || echo "No kind clusters found." >&2 ;;
  "create cluster")
    if grep -qx "$4" "$STATE/clusters" 2>/dev/null; then
      echo "ERROR: failed to create cluster: node(s) already exist for a cluster with the name \\"$4\\"" >&2; exit 1
    fi
    echo "Creating cluster \\"$4\\" ..."; echo "$4" >> "$STATE/clusters" ;;
  "get kubeconfig") echo "apiVersion: v1 # of $4" ;;
esac
`,
      );
      chmodSync(fakeKind, 0o755);
      // A cluster with a name that merely starts with ours is another cluster.
      writeFileSync(path.join(dir, "clusters"), "taskfleet-dev-old\n");

      const first = runCreate(dir);
      assert.equal(first.status, 0, first.stderr);
      assert.equal(first.stdout, "apiVersion: v1 # of taskfleet-dev\n");
      assert.match(first.stderr, /Creating cluster "taskfleet-dev"/);

      // Again, as after a `pulumi up` that failed later on, or with a cluster left from before.
      const second = runCreate(dir);
      assert.equal(second.status, 0, second.stderr);
      assert.equal(second.stdout, "apiVersion: v1 # of taskfleet-dev\n");
      const creates = readFileSync(path.join(dir, "calls"), "utf8")
        .split("\n")
        .filter((line) => line.startsWith("kind create"));
      assert.equal(creates.length, 1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("fails, printing no kubeconfig, when kind cannot create the cluster", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "fake-kind-"));
    try {
      writeFileSync(
        path.join(dir, "kind"),
        `#!/bin/sh
case "$1 $2" in
  "get clusters") exit 0 ;;
  "create cluster") echo "ERROR: failed to create cluster: docker is not running" >&2; exit 1 ;;
  "get kubeconfig") echo "apiVersion: v1" ;;
esac
`,
      );
      chmodSync(path.join(dir, "kind"), 0o755);
      const run = runCreate(dir);
      assert.notEqual(run.status, 0);
      assert.equal(run.stdout, "");
      assert.match(run.stderr, /docker is not running/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
