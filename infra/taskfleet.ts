import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { ExistingCluster } from "./cluster/existing";
import { cloudId, GkeCluster } from "./cluster/gke";
import { KindCluster } from "./cluster/kind";
import type { ClusterTarget } from "./cluster/target";
import { configSpec, projectName, type TaskfleetConfig } from "./config";
import { ServiceImages } from "./images";
import { Keda } from "./keda";
import { Master, scalerTokenKey } from "./master";
import { Memorystore } from "./memorystore";
import { NetworkPolicies } from "./network-policy";
import type { AcceptedFinding } from "./pod";
import { InClusterRedis, type RedisConnection } from "./redis";
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

function baseNameOf(config: TaskfleetConfig): string {
  return cloudId(`${projectName}-${config.stack}`, 40);
}

function createCluster(config: TaskfleetConfig): ClusterTarget {
  const baseName = baseNameOf(config);
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

/** What checkov says of the default Redis image, which names an exact release by tag. */
const defaultRedisImageFindings: AcceptedFinding[] = [
  {
    check: "CKV_K8S_43",
    reason:
      "the default is the official image at an exact release tag; set taskfleet:redisImage to image@sha256:<digest> to pin the digest too",
  },
  {
    check: "CKV_K8S_15",
    reason:
      "an exact release tag, kept on the node once pulled; with Always a Redis restart would wait on Docker Hub and its pull limits",
  },
];

/** The Redis the masters keep the tasks in: in the namespace, or Memorystore next to GKE. */
function createRedis(
  config: TaskfleetConfig,
  namespace: pulumi.Input<string>,
  baseName: string,
  provider: k8s.Provider,
): RedisConnection {
  const { redis } = config;
  if (redis.kind === "memorystore") {
    if (config.gke === undefined)
      throw new Error("redis is memorystore but GKE settings are missing");
    return new Memorystore(
      "memorystore",
      { gke: config.gke, baseName, sizeGb: redis.sizeGb, namespace },
      { providers: [provider] },
    );
  }
  return new InClusterRedis(
    "redis",
    {
      namespace,
      image: redis.image,
      // A configured tag is the user's choice; checkov's digest finding stays visible for it.
      imageFindings:
        redis.image === configSpec.redisImage?.default ? defaultRedisImageFindings : [],
      password: token("redis-password", redis.password),
      storageSize: redis.storageSize,
      storageClass: redis.storageClass,
      resources: redis.resources,
    },
    { providers: [provider] },
  );
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

  const redis = createRedis(config, namespace.metadata.name, baseNameOf(config), cluster.provider);

  const { autoscaler } = config.worker;
  // Only KEDA's scaler presents it, so only the queue autoscaler gets one.
  const scalerToken =
    autoscaler.kind === "queue" ? token("scaler-token", config.scalerToken) : undefined;
  const keda =
    autoscaler.kind === "queue" && autoscaler.keda.source === "install"
      ? new Keda(
          "keda",
          { namespace: autoscaler.keda.namespace },
          { providers: [cluster.provider] },
        )
      : undefined;

  const master = new Master(
    "master",
    {
      namespace: namespace.metadata.name,
      image: images.master,
      replicas: config.master.replicas,
      redis,
      apiToken,
      workerToken,
      scalerToken,
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
      autoscaler:
        autoscaler.kind === "queue"
          ? {
              ...autoscaler,
              backlogUrl: master.backlogUrl,
              scalerTokenKey,
              dependsOn: keda === undefined ? [] : [keda.ready],
            }
          : autoscaler,
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
      scalerNamespace: autoscaler.kind === "queue" ? autoscaler.keda.namespace : undefined,
      redis: redis.peer,
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
