import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { ExistingCluster } from "./cluster/existing";
import { cloudId, GkeCluster } from "./cluster/gke";
import { KindCluster } from "./cluster/kind";
import type { ClusterTarget } from "./cluster/target";
import { projectName, type TaskfleetConfig } from "./config";
import { ServiceImages } from "./images";
import { Master } from "./master";
import { NetworkPolicies } from "./network-policy";
import { Workers } from "./workers";

/** The stack's outputs, exported one by one by `infra/index.ts`. */
export interface TaskfleetOutputs {
  /** `http://<address>` of the master's LoadBalancer; empty while it has none (see docs/infra.md). */
  masterUrl: pulumi.Output<string>;
  /** The master's address inside the cluster, as the workers use it. */
  masterInternalUrl: pulumi.Output<string>;
  /** The master Service's name, for `kubectl port-forward svc/<name>`. */
  masterService: pulumi.Output<string>;
  namespace: pulumi.Output<string>;
  /** Registry digest (GKE) or local image id (kind, existing) of each image. */
  masterImageDigest: pulumi.Output<string>;
  workerImageDigest: pulumi.Output<string>;
  /** The exact `image` the pods run. */
  masterImage: pulumi.Output<string>;
  workerImage: pulumi.Output<string>;
  clusterName: pulumi.Output<string>;
  /** Secret; undefined for an existing kubeconfig context. */
  kubeconfig: pulumi.Output<string> | undefined;
  /** Secret. */
  apiToken: pulumi.Output<string>;
}

function createCluster(config: TaskfleetConfig): ClusterTarget {
  const baseName = cloudId(`${projectName}-${config.stack}`, 40);
  switch (config.cluster) {
    case "gke":
      if (config.gke === undefined) throw new Error("cluster is gke but its settings are missing");
      return new GkeCluster("gke", { gke: config.gke, baseName });
    case "kind":
      return new KindCluster("kind", { clusterName: baseName });
    case "existing":
      return new ExistingCluster("existing", {
        kubeContext: config.kubeContext,
        imageLoadCommand: config.imageLoadCommand,
      });
  }
}

/** A configured token, or one the program generates and keeps in the stack's state. */
function token(name: string, configured: pulumi.Output<string> | undefined): pulumi.Output<string> {
  if (configured !== undefined) return pulumi.secret(configured);
  // No special characters: the value travels in HTTP headers and shell variables.
  return new random.RandomPassword(name, { length: 48, special: false }).result;
}

/** The whole program for one validated stack config. */
export function createTaskfleet(config: TaskfleetConfig): TaskfleetOutputs {
  const cluster = createCluster(config);

  const namespace = new k8s.core.v1.Namespace(
    "namespace",
    {
      metadata: {
        name: config.namespace,
        labels: {
          "app.kubernetes.io/part-of": "taskfleet",
          "app.kubernetes.io/managed-by": "pulumi",
          // Every pod here meets the restricted standard; the label makes the cluster hold us to it.
          "pod-security.kubernetes.io/enforce": "restricted",
          "pod-security.kubernetes.io/enforce-version": "latest",
        },
      },
    },
    { provider: cluster.provider },
  );

  const images = new ServiceImages("images", {
    destination: cluster.images,
    stack: config.stack,
    prebuilt: {
      ...(config.prebuiltImages.master ? { master: config.prebuiltImages.master } : {}),
      ...(config.prebuiltImages.worker ? { worker: config.prebuiltImages.worker } : {}),
    },
  });

  const apiToken = token("api-token", config.apiToken);
  const workerToken = token("worker-token", config.workerToken);

  const master = new Master(
    "master",
    {
      namespace: namespace.metadata.name,
      image: images.master,
      apiToken,
      workerToken,
      leaseSeconds: config.leaseSeconds,
      maxAttempts: config.maxAttempts,
      resultTtlSeconds: config.resultTtlSeconds,
      logLevel: config.logLevel,
      resources: config.master.resources,
      allowedSourceRanges: config.allowedSourceRanges,
      internalLoadBalancer: config.internalLoadBalancer,
      skipAwaitAddress: cluster.externalAddressMayNeverCome,
    },
    { providers: [cluster.provider] },
  );

  const workers = new Workers(
    "workers",
    {
      namespace: namespace.metadata.name,
      image: images.worker,
      masterUrl: master.internalUrl,
      tokenSecretName: master.tokenSecretName,
      concurrency: config.worker.concurrency,
      shutdownGraceSeconds: config.worker.shutdownGraceSeconds,
      logLevel: config.logLevel,
      resources: config.worker.resources,
      minReplicas: config.worker.minReplicas,
      maxReplicas: config.worker.maxReplicas,
      targetCpuUtilization: config.worker.targetCpuUtilization,
    },
    { providers: [cluster.provider] },
  );

  new NetworkPolicies(
    "network",
    {
      namespace: namespace.metadata.name,
      masterSelector: master.podSelector,
      workerSelector: workers.podSelector,
      metricsNamespaces: config.metricsNamespaces,
    },
    { providers: [cluster.provider] },
  );

  return {
    masterUrl: master.url,
    masterInternalUrl: master.internalUrl,
    masterService: master.serviceName,
    namespace: namespace.metadata.name,
    masterImageDigest: images.master.digest,
    workerImageDigest: images.worker.digest,
    masterImage: images.master.ref,
    workerImage: images.worker.ref,
    clusterName: cluster.clusterName,
    kubeconfig: cluster.kubeconfig,
    apiToken: pulumi.secret(apiToken),
  };
}
