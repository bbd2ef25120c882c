/**
 * The NetworkPolicies component on its own, under mocks, with the args written out here: which
 * traffic its policies let through for the selectors and scraper namespaces it is given.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import * as pulumi from "@pulumi/pulumi";
import { NetworkPolicies, type NetworkPoliciesArgs } from "../../network-policy";
import { type ComponentEvaluation, evaluateComponent } from "../../testing/harness";
import { findResource, inputs, type Json, resourcesOfType } from "../../testing/resources";

const NetworkPolicy = "kubernetes:networking.k8s.io/v1:NetworkPolicy";

const masterSelector = { "app.kubernetes.io/name": "taskfleet-master", tier: "m" };
const workerSelector = { "app.kubernetes.io/name": "taskfleet-worker", tier: "w" };
const redisSelector = { "app.kubernetes.io/name": "taskfleet-redis", tier: "r" };
const masterPeer = { podSelector: { matchLabels: masterSelector } };
const workerPeer = { podSelector: { matchLabels: workerSelector } };

function namespacePeer(name: string) {
  return { namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": name } } };
}

function args(overrides: Partial<NetworkPoliciesArgs> = {}): NetworkPoliciesArgs {
  return {
    namespace: pulumi.output("fleet"),
    masterSelector,
    workerSelector,
    metricsNamespaces: ["monitoring", "gmp-system"],
    scalerNamespace: undefined,
    redis: { kind: "pods", selector: redisSelector, port: 6379 },
    ...overrides,
  };
}

function policies(
  overrides: Partial<NetworkPoliciesArgs> = {},
): Promise<ComponentEvaluation<NetworkPolicies>> {
  return evaluateComponent(() => new NetworkPolicies("network", args(overrides)));
}

function policy(evaluation: ComponentEvaluation<unknown>, name: string): Json {
  return inputs(findResource(evaluation, NetworkPolicy, name));
}

describe("NetworkPolicies", () => {
  it("declares exactly a default deny, the master's ingress and egress, Redis's ingress and the workers' egress, in the namespace", async () => {
    const evaluation = await policies();
    const declared = resourcesOfType(evaluation, NetworkPolicy);
    assert.deepEqual(declared.map((r) => r.name).sort(), [
      "network-default-deny",
      "network-master-egress",
      "network-master-ingress",
      "network-redis-ingress",
      "network-worker-egress",
    ]);
    assert.equal(evaluation.resources.length, declared.length, "nothing but NetworkPolicies");
    for (const resource of declared) {
      assert.equal(inputs(resource).metadata.namespace, "fleet", resource.name);
    }
  });

  it("denies all traffic in and out of every pod of the namespace by default", async () => {
    const deny = policy(await policies(), "network-default-deny");
    assert.deepEqual(deny.spec, { podSelector: {}, policyTypes: ["Ingress", "Egress"] });
  });

  it("opens the master's public port to any source, and its internal port to the workers and each metrics namespace only", async () => {
    const ingress = policy(await policies(), "network-master-ingress");
    assert.deepEqual(ingress.spec.podSelector, { matchLabels: masterSelector });
    // Ingress only: the master's own egress stays denied by the default.
    assert.deepEqual(ingress.spec.policyTypes, ["Ingress"]);
    assert.deepEqual(ingress.spec.ingress, [
      { ports: [{ protocol: "TCP", port: 8080 }] },
      {
        from: [workerPeer, namespacePeer("monitoring"), namespacePeer("gmp-system")],
        ports: [{ protocol: "TCP", port: 8081 }],
      },
    ]);
  });

  it("opens the internal port to the workers alone when no metrics namespace is given", async () => {
    const ingress = policy(await policies({ metricsNamespaces: [] }), "network-master-ingress");
    assert.deepEqual(ingress.spec.ingress[1], {
      from: [workerPeer],
      ports: [{ protocol: "TCP", port: 8081 }],
    });
  });

  it("lets the workers out only to the master's internal port and to the cluster DNS", async () => {
    const egress = policy(await policies(), "network-worker-egress");
    assert.deepEqual(egress.spec.podSelector, { matchLabels: workerSelector });
    assert.deepEqual(egress.spec.policyTypes, ["Egress"]);
    assert.deepEqual(egress.spec.egress, [
      { to: [masterPeer], ports: [{ protocol: "TCP", port: 8081 }] },
      {
        to: [namespacePeer("kube-system")],
        ports: [
          { protocol: "UDP", port: 53 },
          { protocol: "TCP", port: 53 },
        ],
      },
    ]);
  });

  const dns = {
    to: [namespacePeer("kube-system")],
    ports: [
      { protocol: "UDP", port: 53 },
      { protocol: "TCP", port: 53 },
    ],
  };

  it("lets Redis pods in the namespace be reached by the masters alone, on Redis's port", async () => {
    const ingress = policy(await policies(), "network-redis-ingress");
    assert.deepEqual(ingress.spec, {
      podSelector: { matchLabels: redisSelector },
      policyTypes: ["Ingress"],
      ingress: [{ from: [masterPeer], ports: [{ protocol: "TCP", port: 6379 }] }],
    });
  });

  it("lets the masters out only to the Redis pods and to the cluster DNS", async () => {
    const egress = policy(await policies(), "network-master-egress");
    assert.deepEqual(egress.spec, {
      podSelector: { matchLabels: masterSelector },
      policyTypes: ["Egress"],
      egress: [
        {
          to: [{ podSelector: { matchLabels: redisSelector } }],
          ports: [{ protocol: "TCP", port: 6379 }],
        },
        dns,
      ],
    });
  });

  it("lets the masters out to a Memorystore instance by its one address and port, and declares no Redis ingress", async () => {
    const evaluation = await policies({
      redis: { kind: "address", host: pulumi.output("10.20.30.40"), port: pulumi.output(6378) },
    });
    assert.deepEqual(
      resourcesOfType(evaluation, NetworkPolicy)
        .map((r) => r.name)
        .sort(),
      [
        "network-default-deny",
        "network-master-egress",
        "network-master-ingress",
        "network-worker-egress",
      ],
    );
    assert.deepEqual(policy(evaluation, "network-master-egress").spec.egress, [
      { to: [{ ipBlock: { cidr: "10.20.30.40/32" } }], ports: [{ protocol: "TCP", port: 6378 }] },
      dns,
    ]);
  });
});
