import * as command from "@pulumi/command";
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import type { ClusterTarget, LocalDestination } from "./target";

/** The metrics-server Helm chart installed into kind clusters. */
export const metricsServerChartVersion = "3.12.2";

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

    // Progress goes to stderr so that stdout is exactly the kubeconfig.
    const cluster = new command.local.Command(
      `${name}-cluster`,
      {
        create:
          'kind create cluster --name "$KIND_CLUSTER_NAME" --wait 120s >&2 && kind get kubeconfig --name "$KIND_CLUSTER_NAME"',
        delete: 'kind delete cluster --name "$KIND_CLUSTER_NAME"',
        environment: { KIND_CLUSTER_NAME: args.clusterName },
      },
      // The kubeconfig carries the cluster's admin client key.
      { parent: this, additionalSecretOutputs: ["stdout"] },
    );

    this.clusterName = pulumi.output(args.clusterName);
    this.kubeconfig = pulumi.secret(cluster.stdout);
    this.provider = new k8s.Provider(
      `${name}-k8s`,
      { kubeconfig: this.kubeconfig },
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
