import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import type { ClusterTarget, LocalDestination } from "./target";

export interface ExistingClusterArgs {
  /** The kubeconfig context to deploy to; undefined: the current context. */
  kubeContext: string | undefined;
  /**
   * Run with an image reference appended to make a local image available to the cluster
   * (`minikube image load`, `k3d image import -c <cluster>`); undefined when the cluster uses the
   * local Docker engine's images directly (Docker Desktop).
   */
  imageLoadCommand: string | undefined;
}

/**
 * A cluster the stack does not own (Docker Desktop, minikube, k3d), reached through a context of
 * the user's kubeconfig. Nothing is created for it but the provider.
 */
export class ExistingCluster extends pulumi.ComponentResource implements ClusterTarget {
  public readonly provider: k8s.Provider;
  public readonly clusterName: pulumi.Output<string>;
  public readonly kubeconfig = undefined;
  public readonly images: LocalDestination;
  // Docker Desktop answers at once with localhost; minikube only while `minikube tunnel` runs.
  public readonly externalAddressMayNeverCome = true;

  constructor(name: string, args: ExistingClusterArgs, opts?: pulumi.ComponentResourceOptions) {
    super("taskfleet:index:ExistingCluster", name, {}, opts);
    this.provider = new k8s.Provider(
      `${name}-k8s`,
      {
        context: args.kubeContext,
        // The provider is replaced, with every object of the stack, only when the configured
        // context changes. An unreachable cluster is not deleted from the state: it is not ours.
        clusterIdentifier: `context:${args.kubeContext ?? "(current)"}`,
      },
      { parent: this },
    );
    this.clusterName = pulumi.output(args.kubeContext ?? "(current kubeconfig context)");
    this.images = { kind: "local", loadCommand: args.imageLoadCommand, loadAfter: [] };
    this.registerOutputs({ provider: this.provider, clusterName: this.clusterName });
  }
}
