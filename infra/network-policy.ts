import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import { masterInternalPort, masterPort } from "./master";
import { appLabels } from "./pod";
import type { RedisPeer } from "./redis";

export interface NetworkPoliciesArgs {
  /** The namespace whose traffic the policies govern. */
  namespace: pulumi.Input<string>;
  /** Selector labels of the master pods. */
  masterSelector: Record<string, string>;
  /** Selector labels of the worker pods. */
  workerSelector: Record<string, string>;
  /** Namespaces whose pods may scrape the master's `/metrics` on its internal port. */
  metricsNamespaces: string[];
  /** The namespace of KEDA, whose scaler reads the backlog on the internal port; undefined: none. */
  scalerNamespace: string | undefined;
  /** The masters' Redis: pods in the namespace, or an address outside the cluster (Memorystore). */
  redis: RedisPeer;
}

/** A NetworkPolicy peer: every pod of the namespace named. */
function namespacePeer(name: string) {
  return { namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": name } } };
}

/** The cluster DNS, which every Service name is resolved by. */
const dnsRule = {
  to: [namespacePeer("kube-system")],
  ports: [
    { protocol: "UDP", port: 53 },
    { protocol: "TCP", port: 53 },
  ],
};

/** An egress rule to Redis: its pods by label, or a Memorystore instance by its one address. */
function redisEgressRule(redis: RedisPeer) {
  if (redis.kind === "pods") {
    return {
      to: [{ podSelector: { matchLabels: redis.selector } }],
      ports: [{ protocol: "TCP", port: redis.port }],
    };
  }
  return {
    to: [{ ipBlock: { cidr: pulumi.interpolate`${redis.host}/32` } }],
    ports: [{ protocol: "TCP", port: redis.port }],
  };
}

/**
 * What may talk to what in the stack's namespace: nothing, except clients (through the load
 * balancer) to the master's public port, workers (and metrics scrapers, from config, and KEDA's
 * scaler) to its internal port, masters to Redis (only masters may reach an in-cluster Redis), and workers and
 * masters to the cluster's DNS. A pod that is compromised cannot reach anything else in or out of
 * the cluster. The kubelet's probes come from the node, which Kubernetes never lets a policy block.
 */
export class NetworkPolicies extends pulumi.ComponentResource {
  constructor(name: string, args: NetworkPoliciesArgs, opts?: pulumi.ComponentResourceOptions) {
    super("taskfleet:index:NetworkPolicies", name, {}, opts);
    const labels = appLabels("network", name);
    const metadata = { namespace: args.namespace, labels };

    // Every pod of the namespace, in and out: whatever the policies below do not allow is refused.
    new k8s.networking.v1.NetworkPolicy(
      `${name}-default-deny`,
      { metadata, spec: { podSelector: {}, policyTypes: ["Ingress", "Egress"] } },
      { parent: this },
    );

    // Clients arrive through the load balancer from addresses that cannot be listed here; the
    // Service's allowedSourceRanges restricts them at the load balancer. The internal port
    // (the worker API and /metrics) takes the workers and the scrapers named in config only.
    new k8s.networking.v1.NetworkPolicy(
      `${name}-master-ingress`,
      {
        metadata,
        spec: {
          podSelector: { matchLabels: args.masterSelector },
          policyTypes: ["Ingress"],
          ingress: [
            { ports: [{ protocol: "TCP", port: masterPort }] },
            {
              from: [
                { podSelector: { matchLabels: args.workerSelector } },
                ...args.metricsNamespaces.map(namespacePeer),
                ...(args.scalerNamespace === undefined
                  ? []
                  : [namespacePeer(args.scalerNamespace)]),
              ],
              ports: [{ protocol: "TCP", port: masterInternalPort }],
            },
          ],
        },
      },
      { parent: this },
    );

    new k8s.networking.v1.NetworkPolicy(
      `${name}-worker-egress`,
      {
        metadata,
        spec: {
          podSelector: { matchLabels: args.workerSelector },
          policyTypes: ["Egress"],
          egress: [
            // The master's internal port, by its pods: a Service's traffic is matched after it
            // reaches a pod.
            {
              to: [{ podSelector: { matchLabels: args.masterSelector } }],
              ports: [{ protocol: "TCP", port: masterInternalPort }],
            },
            // The master Service's name, resolved by the cluster DNS.
            dnsRule,
          ],
        },
      },
      { parent: this },
    );

    new k8s.networking.v1.NetworkPolicy(
      `${name}-master-egress`,
      {
        metadata,
        spec: {
          podSelector: { matchLabels: args.masterSelector },
          policyTypes: ["Egress"],
          // Redis, by its pods or its address, and the DNS that resolves its Service's name.
          egress: [redisEgressRule(args.redis), dnsRule],
        },
      },
      { parent: this },
    );

    if (args.redis.kind === "pods") {
      new k8s.networking.v1.NetworkPolicy(
        `${name}-redis-ingress`,
        {
          metadata,
          spec: {
            podSelector: { matchLabels: args.redis.selector },
            policyTypes: ["Ingress"],
            ingress: [
              {
                from: [{ podSelector: { matchLabels: args.masterSelector } }],
                ports: [{ protocol: "TCP", port: args.redis.port }],
              },
            ],
          },
        },
        { parent: this },
      );
    }

    this.registerOutputs({});
  }
}
