import type * as k8s from "@pulumi/kubernetes";
import type * as pulumi from "@pulumi/pulumi";
import type { EnvSpec } from "@taskfleet/protocol/env";
import type { LogLevel } from "@taskfleet/protocol/log-levels";
import type { Resources } from "./config";
import type { DeployableImage } from "./images";

type Pod = k8s.types.input.core.v1.PodSecurityContext;
type Container = k8s.types.input.core.v1.SecurityContext;

/** A finding of checkov (the manifest checker CI runs on `rendered/`) that an object accepts. */
export interface AcceptedFinding {
  check: string;
  reason: string;
}

/**
 * checkov's skip annotations (`checkov.io/skip<n>: <check>=<reason>`): each accepted finding is
 * stated, with its reason, on the object it concerns, where a reviewer sees it.
 */
export function acceptedFindingAnnotations(
  findings: readonly AcceptedFinding[],
): Record<string, string> {
  return Object.fromEntries(
    findings.map((finding, i) => [`checkov.io/skip${i + 1}`, `${finding.check}=${finding.reason}`]),
  );
}

/** Accepted for both services' Deployments. */
export const tokenFromEnvFinding: AcceptedFinding = {
  check: "CKV_K8S_35",
  reason:
    "the services read their tokens from the environment; the values come from a Secret by secretKeyRef, never as plain values",
};

/** The `app.kubernetes.io/*` labels of one component; the selector uses the stable subset. */
export function appLabels(
  component: "master" | "worker" | "redis" | "network",
  instance: string,
): Record<string, string> {
  return {
    "app.kubernetes.io/name": `taskfleet-${component}`,
    "app.kubernetes.io/instance": instance,
    "app.kubernetes.io/component": component,
    "app.kubernetes.io/part-of": "taskfleet",
    "app.kubernetes.io/managed-by": "pulumi",
  };
}

/** Labels that never change for a component: a Deployment's selector is immutable. */
export function selectorLabels(
  component: "master" | "worker" | "redis",
  instance: string,
): Record<string, string> {
  const labels = appLabels(component, instance);
  return {
    "app.kubernetes.io/name": labels["app.kubernetes.io/name"] as string,
    "app.kubernetes.io/instance": instance,
  };
}

/**
 * An explicit numeric user: with only `runAsNonRoot`, a kubelet refuses an image whose USER is a
 * name (`node`) because it cannot prove the name is not root.
 */
const nonRootUser = 10001;

/** Meets the namespace's `restricted` Pod Security Standard. */
export const podSecurityContext: Pod = {
  runAsNonRoot: true,
  runAsUser: nonRootUser,
  runAsGroup: nonRootUser,
  fsGroup: nonRootUser,
  seccompProfile: { type: "RuntimeDefault" },
};

export const containerSecurityContext: Container = {
  runAsNonRoot: true,
  readOnlyRootFilesystem: true,
  allowPrivilegeEscalation: false,
  privileged: false,
  capabilities: { drop: ["ALL"] },
  seccompProfile: { type: "RuntimeDefault" },
};

/** Node writes to /tmp (and so do task handlers); the root file system is read-only. */
export const tmpVolume = { name: "tmp", emptyDir: { sizeLimit: "64Mi" } };
export const tmpMount = { name: "tmp", mountPath: "/tmp" };

export function containerResources(
  resources: Resources,
): k8s.types.input.core.v1.ResourceRequirements {
  return {
    requests: { cpu: resources.cpuRequest, memory: resources.memoryRequest },
    limits: { cpu: resources.cpuLimit, memory: resources.memoryLimit },
  };
}

/** What every service's component takes: where it runs, its image, its logs, its size. */
export interface ServicePodArgs {
  /** Namespace of every object of the component. */
  namespace: pulumi.Input<string>;
  /** The service's image. */
  image: DeployableImage;
  /** LOG_LEVEL. */
  logLevel: LogLevel;
  /** CPU and memory of the service's container. */
  resources: Resources;
}

/**
 * A container's env entry for a variable of the service it runs, named by the service's own
 * declaration (@taskfleet/protocol/master-env, worker-env): a renamed variable fails to compile.
 */
export function envVar<S extends EnvSpec>(
  _spec: S,
  name: keyof S & string,
  value: pulumi.Input<string>,
) {
  return { name, value };
}

/** A secret variable, read by the kubelet from a Secret's key. */
export function secretEnvVar<S extends EnvSpec>(
  _spec: S,
  name: keyof S & string,
  secretName: pulumi.Input<string>,
  key: string,
) {
  return { name, valueFrom: { secretKeyRef: { name: secretName, key } } };
}

/**
 * Seconds between the end of a service's own grace (its SHUTDOWN_GRACE_SECONDS) and the
 * kubelet's SIGKILL: time for a worker to release unfinished leases, for the master to close its
 * connections, and for both to exit.
 */
export const terminationMarginSeconds = 15;
