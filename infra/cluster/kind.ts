import * as command from "@pulumi/command";
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import type { ClusterTarget, LocalDestination } from "./target";

/** The metrics-server Helm chart installed into kind clusters. */
export const metricsServerChartVersion = "3.12.2";

/**
 * Creates the cluster `$KIND_CLUSTER_NAME` unless it exists (a retried `pulumi up` after a failed
 * one, or a cluster left from an earlier stack), then prints its kubeconfig. kind's progress goes
 * to stderr, so stdout is exactly the kubeconfig.
 */
export const kindCreateScript = `if ! kind get clusters | grep -qx "$KIND_CLUSTER_NAME"; then
  kind create cluster --name "$KIND_CLUSTER_NAME" --wait 120s >&2
fi && kind get kubeconfig --name "$KIND_CLUSTER_NAME"`;

export interface KindClusterArgs {
  /** The kind cluster's name: lower-case letters, digits and '-'. */
  clusterName: string;
}

/**
 * A kind cluster created and deleted with the stack. Needs `kind` and Docker on the machine that
 * runs `pulumi up`; images are loaded into the cluster's nodes with `kind load docker-image`.
 */
export class KindCluster extends pulumi.ComponentResource implements ClusterTarget {
  public readonly provider: k8s.Provider;
  public readonly clusterName: pulumi.Output<string>;
  public readonly kubeconfig: pulumi.Output<string>;
  public readonly images: LocalDestination;
  // kind has no load balancer of its own: an address comes only while cloud-provider-kind runs.
  public readonly externalAddressMayNeverCome = true;

  constructor(name: string, args: KindClusterArgs, opts?: pulumi.ComponentResourceOptions) {
    super("taskfleet:index:KindCluster", name, {}, opts);
    if (!/^[a-z0-9][a-z0-9-]*$/.test(args.clusterName)) {
      throw new Error(
        `kind cluster name "${args.clusterName}" is not allowed: use lower-case letters, digits and '-'.`,
      );
    }

    const cluster = new command.local.Command(
      `${name}-cluster`,
      {
        create: kindCreateScript,
        delete: 'kind delete cluster --name "$KIND_CLUSTER_NAME"',
        environment: { KIND_CLUSTER_NAME: args.clusterName },
        // stdout is the kubeconfig, with the cluster's admin client key: show kind's progress
        // (stderr) on the console, never stdout.
        logging: "stderr",
      },
      { parent: this, additionalSecretOutputs: ["stdout"] },
    );

    this.clusterName = pulumi.output(args.clusterName);
    this.kubeconfig = pulumi.secret(cluster.stdout);
    this.provider = new k8s.Provider(
      `${name}-k8s`,
      {
        kubeconfig: this.kubeconfig,
        // Known at preview, unlike the kubeconfig (unknown whenever the create command changes):
        // the provider, and every object created with it, keeps its identity.
        clusterIdentifier: `kind-${args.clusterName}`,
        // The cluster is the stack's: once it is gone, its objects are gone with it.
        deleteUnreachable: true,
      },
      { parent: this, dependsOn: [cluster] },
    );
    // The worker autoscaler reads CPU use from metrics-server, which kind does not ship. kind's
    // kubelets serve self-signed certificates, hence the insecure kubelet TLS.
    new k8s.helm.v3.Release(
      `${name}-metrics-server`,
      {
        chart: "metrics-server",
        version: metricsServerChartVersion,
        repositoryOpts: { repo: "https://kubernetes-sigs.github.io/metrics-server/" },
        namespace: "kube-system",
        values: { args: ["--kubelet-insecure-tls"] },
      },
      { parent: this, provider: this.provider },
    );

    this.images = {
      kind: "local",
      loadCommand: `kind load docker-image --name ${args.clusterName}`,
      // Nothing in the command's inputs comes from the cluster, so the order must be stated.
      loadAfter: [cluster],
    };

    this.registerOutputs({
      provider: this.provider,
      clusterName: this.clusterName,
      kubeconfig: this.kubeconfig,
    });
  }
}
