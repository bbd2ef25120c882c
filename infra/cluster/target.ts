import type * as k8s from "@pulumi/kubernetes";
import type * as pulumi from "@pulumi/pulumi";

/** A registry the images are pushed to, with credentials the build can use. */
export interface RegistryDestination {
  kind: "registry";
  /** Images are named `<repositoryUrl>/<service>`. */
  repositoryUrl: pulumi.Output<string>;
  /** Registry host for `docker login`-style credentials. */
  server: pulumi.Output<string>;
  username: string;
  /** Short-lived token; a secret. */
  password: pulumi.Output<string>;
}

/** Images stay in the local Docker engine and are handed to the cluster by a command, if any. */
export interface LocalDestination {
  kind: "local";
  /** Run with the image reference appended; undefined when the cluster shares the engine. */
  loadCommand: string | undefined;
  /** What must exist before the load command can run (the cluster it loads into). */
  loadAfter: pulumi.Resource[];
}

/** What every cluster module yields: how to reach the cluster and where its images go. */
export interface ClusterTarget {
  /** The provider every Kubernetes object of the stack is created with. */
  provider: k8s.Provider;
  /** The cluster's name (for an existing cluster: its kubeconfig context). */
  clusterName: pulumi.Output<string>;
  /** A kubeconfig for the cluster, as a secret; undefined for an existing context. */
  kubeconfig: pulumi.Output<string> | undefined;
  images: RegistryDestination | LocalDestination;
  /**
   * True when a LoadBalancer address is given by something outside the cluster's control plane
   * (cloud-provider-kind, `minikube tunnel`) or never, so `pulumi up` must not wait for one.
   */
  externalAddressMayNeverCome: boolean;
}
