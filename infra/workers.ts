import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import { workerEnv } from "@taskfleet/protocol/worker-env";
import type { WorkerAutoscalerConfig } from "./config";
import { workerMemory } from "./config";
import { kedaIgnoresHpaAnnotation, queueScaler } from "./keda";
import {
  acceptedFindingAnnotations,
  appLabels,
  containerResources,
  containerSecurityContext,
  envVar,
  podSecurityContext,
  type ServicePodArgs,
  secretEnvVar,
  selectorLabels,
  terminationMarginSeconds,
  tmpMount,
  tmpVolume,
  tokenFromEnvFinding,
} from "./pod";

export interface WorkersArgs extends ServicePodArgs {
  /** MASTER_URL: the master Service's cluster DNS name. */
  masterUrl: pulumi.Input<string>;
  /** The Secret holding `workerToken`, and `scalerToken` for the queue autoscaler (made by the master component). */
  tokenSecretName: pulumi.Input<string>;
  /** CONCURRENCY. */
  concurrency: number;
  /** SHUTDOWN_GRACE_SECONDS; the pod's grace period adds {@link terminationMarginSeconds}. */
  shutdownGraceSeconds: number;
  /** Fewest pods the autoscaler keeps. */
  minReplicas: number;
  /** Most pods the autoscaler runs. */
  maxReplicas: number;
  /** Average CPU use, in percent of the request, the autoscaler aims for. */
  targetCpuUtilization: number;
  /**
   * What sizes the Deployment. For the queue: where KEDA reads the master's backlog, and what
   * must exist before the ScaledObject (KEDA's release, when the program installs it).
   */
  autoscaler:
    | { kind: "cpu" }
    | (Extract<WorkerAutoscalerConfig, { kind: "queue" }> & {
        backlogUrl: pulumi.Input<string>;
        scalerTokenKey: string;
        dependsOn: pulumi.Resource[];
      });
}

/**
 * Scale up at once and steeply (a queue is waiting), scale down slowly and a few pods at a time
 * (a stopping worker hands back its tasks, and a brief lull should not cost capacity).
 */
export const workerScalingBehavior: k8s.types.input.autoscaling.v2.HorizontalPodAutoscalerBehavior =
  {
    scaleUp: {
      stabilizationWindowSeconds: 0,
      selectPolicy: "Max",
      policies: [
        { type: "Percent", value: 100, periodSeconds: 15 },
        { type: "Pods", value: 4, periodSeconds: 15 },
      ],
    },
    scaleDown: {
      stabilizationWindowSeconds: 300,
      selectPolicy: "Min",
      policies: [
        { type: "Percent", value: 20, periodSeconds: 60 },
        { type: "Pods", value: 2, periodSeconds: 60 },
      ],
    },
  };

/** checkov asks every container for probes; a worker has nothing to probe, by design. */
const workerProbeFinding = [
  {
    check: "CKV_K8S_8",
    reason:
      "a worker serves no port; a stuck worker's leases expire on the master, which hands its tasks to another",
  },
  { check: "CKV_K8S_9", reason: "a worker serves no port; it takes work only when it asks for it" },
];

/**
 * The workers: a Deployment sized by exactly one autoscaler, a CPU HorizontalPodAutoscaler or
 * KEDA's ScaledObject on the master's backlog (keda.ts).
 */
export class Workers extends pulumi.ComponentResource {
  public readonly deploymentName: pulumi.Output<string>;
  /** The labels that select the worker pods. */
  public readonly podSelector: Record<string, string>;

  constructor(name: string, args: WorkersArgs, opts?: pulumi.ComponentResourceOptions) {
    super("taskfleet:index:Workers", name, {}, opts);
    const labels = appLabels("worker", name);
    const selector = selectorLabels("worker", name);
    this.podSelector = selector;

    const deployment = new k8s.apps.v1.Deployment(
      `${name}`,
      {
        metadata: {
          namespace: args.namespace,
          labels,
          annotations: acceptedFindingAnnotations([
            tokenFromEnvFinding,
            ...workerProbeFinding,
            ...args.image.acceptedFindings,
          ]),
        },
        spec: {
          // No replicas: the autoscaler owns the count, and a value here would reset it on every update.
          selector: { matchLabels: selector },
          strategy: {
            type: "RollingUpdate",
            rollingUpdate: { maxSurge: "25%", maxUnavailable: 0 },
          },
          template: {
            metadata: { labels },
            spec: {
              securityContext: podSecurityContext,
              automountServiceAccountToken: false,
              terminationGracePeriodSeconds: args.shutdownGraceSeconds + terminationMarginSeconds,
              containers: [
                {
                  name: "worker",
                  image: args.image.ref,
                  imagePullPolicy: args.image.pullPolicy,
                  // No ports and so no probes: a worker only calls out, and a stuck worker's
                  // leases expire on the master, which hands its tasks to another.
                  env: [
                    envVar(workerEnv, "MASTER_URL", args.masterUrl),
                    secretEnvVar(workerEnv, "WORKER_TOKEN", args.tokenSecretName, "workerToken"),
                    envVar(workerEnv, "CONCURRENCY", String(args.concurrency)),
                    // The share of the pod's memory limit that workerMemoryFloor sets aside.
                    envVar(
                      workerEnv,
                      "RESULT_BUFFER_BYTES",
                      String(workerMemory.resultBufferBytes),
                    ),
                    envVar(workerEnv, "SHUTDOWN_GRACE_SECONDS", String(args.shutdownGraceSeconds)),
                    envVar(workerEnv, "LOG_LEVEL", args.logLevel),
                  ],
                  resources: containerResources(args.resources),
                  securityContext: containerSecurityContext,
                  volumeMounts: [tmpMount],
                },
              ],
              volumes: [tmpVolume],
            },
          },
        },
      },
      { parent: this },
    );

    const { autoscaler } = args;
    if (autoscaler.kind === "queue") {
      queueScaler(
        name,
        {
          namespace: args.namespace,
          deploymentName: deployment.metadata.name,
          backlogUrl: autoscaler.backlogUrl,
          tokenSecretName: args.tokenSecretName,
          tokenSecretKey: autoscaler.scalerTokenKey,
          concurrency: args.concurrency,
          tasksPerSlot: autoscaler.tasksPerSlot,
          activationTasks: autoscaler.activationTasks,
          pollingSeconds: autoscaler.pollingSeconds,
          cooldownSeconds: autoscaler.cooldownSeconds,
          minReplicas: args.minReplicas,
          maxReplicas: args.maxReplicas,
          targetCpuUtilization: args.targetCpuUtilization,
          behavior: workerScalingBehavior,
          labels,
        },
        { parent: this, dependsOn: autoscaler.dependsOn },
      );
    } else
      new k8s.autoscaling.v2.HorizontalPodAutoscaler(
        `${name}`,
        {
          metadata: { namespace: args.namespace, labels, annotations: kedaIgnoresHpaAnnotation },
          spec: {
            scaleTargetRef: {
              apiVersion: "apps/v1",
              kind: "Deployment",
              name: deployment.metadata.name,
            },
            minReplicas: args.minReplicas,
            maxReplicas: args.maxReplicas,
            metrics: [
              {
                type: "Resource",
                resource: {
                  name: "cpu",
                  target: { type: "Utilization", averageUtilization: args.targetCpuUtilization },
                },
              },
            ],
            behavior: workerScalingBehavior,
          },
        },
        { parent: this },
      );

    this.deploymentName = deployment.metadata.name;
    this.registerOutputs({ deploymentName: this.deploymentName });
  }
}
