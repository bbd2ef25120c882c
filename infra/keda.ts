import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import type { Backlog } from "../services/master/src/backlog";

/**
 * The KEDA release the program installs (`keda: install`): its Helm chart and its CRDs carry the
 * same version, and the tests validate the ScaledObject against the CRDs of this release (taken
 * from the Go module github.com/kedacore/keda/v2 at `v<kedaVersion>`).
 */
export const kedaVersion = "2.21.0";

/** Where KEDA's Helm chart is published. */
export const kedaChartRepository = "https://kedacore.github.io/charts";

/** KEDA's API group and version of ScaledObject and TriggerAuthentication. */
export const kedaApiVersion = "keda.sh/v1alpha1";

/**
 * Set on our CPU HorizontalPodAutoscaler so that KEDA's admission webhook does not refuse a new
 * ScaledObject while it still exists: switching `autoscaler` from cpu to queue creates the
 * ScaledObject before `pulumi up` deletes the old autoscaler (both own the Deployment for those
 * seconds, as in the other direction).
 */
export const kedaIgnoresHpaAnnotation = { "validations.keda.sh/hpa-ownership": "false" };

export interface KedaArgs {
  /** The namespace KEDA runs in; created by the release. */
  namespace: string;
}

/**
 * KEDA, from its Helm chart at {@link kedaVersion}: its operator, its metrics server and its
 * admission webhooks, and the CRDs the chart carries. Cluster-wide: one stack per cluster may
 * install it (the others set `keda: present`).
 */
export class Keda extends pulumi.ComponentResource {
  /** Ready once the chart's objects, its CRDs among them, are in the cluster. */
  public readonly ready: pulumi.Resource;

  constructor(name: string, args: KedaArgs, opts?: pulumi.ComponentResourceOptions) {
    super("taskfleet:index:Keda", name, {}, opts);
    const release = new k8s.helm.v3.Release(
      name,
      {
        chart: "keda",
        version: kedaVersion,
        repositoryOpts: { repo: kedaChartRepository },
        namespace: args.namespace,
        createNamespace: true,
        // The release's objects must be ready before a ScaledObject is created: the webhook
        // that checks it, and the operator that acts on it.
        skipAwait: false,
        timeout: 600,
      },
      { parent: this },
    );
    this.ready = release;
    this.registerOutputs({});
  }
}

export interface QueueScalerArgs {
  namespace: pulumi.Input<string>;
  /** The workers' Deployment. */
  deploymentName: pulumi.Input<string>;
  /** `GET` URL of the master's backlog for the scaler (`/scaler/v1/backlog` on its internal port). */
  backlogUrl: pulumi.Input<string>;
  /** The Secret and key holding SCALER_TOKEN. */
  tokenSecretName: pulumi.Input<string>;
  tokenSecretKey: string;
  /** Tasks one pod runs at once (CONCURRENCY). */
  concurrency: number;
  tasksPerSlot: number;
  activationTasks: number;
  pollingSeconds: number;
  cooldownSeconds: number;
  minReplicas: number;
  maxReplicas: number;
  targetCpuUtilization: number;
  behavior: k8s.types.input.autoscaling.v2.HorizontalPodAutoscalerBehavior;
  /** The workers' labels. */
  labels: Record<string, string>;
}

/** What KEDA reads from the master's backlog answer (docs/api.md); the compiler holds it to the answer's type. */
export const backlogValueLocation: keyof Backlog = "demand";

/**
 * The ScaledObject of the workers and the TriggerAuthentication its backlog trigger presents:
 * KEDA's metrics-api scaler reads `demand` (queued and running tasks) from the master and sizes
 * the Deployment to `demand ÷ (concurrency × tasksPerSlot)` pods, with CPU as a second trigger
 * (the larger wins) and the same scaling behaviour as the CPU autoscaler. With `minReplicas` 0
 * KEDA removes the last pod after `cooldownSeconds` of no demand and starts one when the demand
 * exceeds `activationTasks`.
 */
export function queueScaler(
  name: string,
  args: QueueScalerArgs,
  opts: pulumi.CustomResourceOptions,
): { scaledObject: k8s.apiextensions.CustomResource; auth: k8s.apiextensions.CustomResource } {
  const { labels } = args;
  const auth = new k8s.apiextensions.CustomResource(
    `${name}-scaler`,
    {
      apiVersion: kedaApiVersion,
      kind: "TriggerAuthentication",
      metadata: { namespace: args.namespace, labels },
      spec: {
        secretTargetRef: [
          { parameter: "token", name: args.tokenSecretName, key: args.tokenSecretKey },
        ],
      },
    },
    opts,
  );
  const scaledObject = new k8s.apiextensions.CustomResource(
    name,
    {
      apiVersion: kedaApiVersion,
      kind: "ScaledObject",
      metadata: { namespace: args.namespace, labels },
      spec: {
        scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name: args.deploymentName },
        minReplicaCount: args.minReplicas,
        maxReplicaCount: args.maxReplicas,
        pollingInterval: args.pollingSeconds,
        cooldownPeriod: args.cooldownSeconds,
        advanced: { horizontalPodAutoscalerConfig: { behavior: args.behavior } },
        triggers: [
          {
            type: "metrics-api",
            name: "backlog",
            metadata: {
              url: args.backlogUrl,
              format: "json",
              valueLocation: backlogValueLocation,
              targetValue: String(args.concurrency * args.tasksPerSlot),
              activationTargetValue: String(args.activationTasks),
              authMode: "bearer",
            },
            authenticationRef: { name: auth.metadata.name },
          },
          {
            type: "cpu",
            name: "cpu",
            metricType: "Utilization",
            metadata: { value: String(args.targetCpuUtilization) },
          },
        ],
      },
    },
    opts,
  );
  return { scaledObject, auth };
}
