import { Deployment, StatefulSet } from "kubernetes-models/apps/v1";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import { ConfigMap, Namespace, Secret, Service } from "kubernetes-models/v1";
import type { RecordedResource, StackEvaluation } from "./harness";
import { type KedaKind, kedaValidator } from "./keda-crds";

/** A stack's evaluation, or a component's (`evaluateComponent`): what the lookups below read. */
type Evaluated = Pick<StackEvaluation, "stack" | "resources">;

/** The one resource of this type and name; fails when there is none or more than one. */
export function findResource(evaluation: Evaluated, type: string, name: string): RecordedResource {
  const found = evaluation.resources.filter((r) => r.type === type && r.name === name);
  if (found.length !== 1) {
    throw new Error(
      `expected one ${type} named ${name} in stack ${evaluation.stack}, found ${found.length}`,
    );
  }
  return found[0] as RecordedResource;
}

export function resourcesOfType(evaluation: Evaluated, type: string): RecordedResource[] {
  return evaluation.resources.filter((r) => r.type === type);
}

/** A Helm release is not an object of its own: its chart's objects are rendered by Helm. */
const helmRelease = "kubernetes:helm.sh/v3:Release";

/** Kubernetes objects the program declares itself (not the provider, not Helm releases). */
export function kubernetesObjects(evaluation: StackEvaluation): RecordedResource[] {
  return evaluation.resources.filter(
    (r) => r.type.startsWith("kubernetes:") && r.type !== helmRelease,
  );
}

type Validate = (data: Record<string, unknown>) => void;
const model =
  (Model: new (data: never) => { validate(): void }): Validate =>
  (data) =>
    new Model(data as never).validate();

/** A KEDA kind, validated against its CRD (fetched on first use). */
const keda = (kind: KedaKind): Validate => {
  let validate: Validate | undefined;
  return (data) => {
    validate ??= kedaValidator(kind);
    validate(data);
  };
};

/**
 * The OpenAPI model for every Kubernetes type the program may declare. A type missing here fails
 * the validation test, so a new kind of object cannot slip through unvalidated.
 */
export const kubernetesModels: Record<string, Validate> = {
  "kubernetes:core/v1:Namespace": model(Namespace),
  "kubernetes:core/v1:Secret": model(Secret),
  "kubernetes:core/v1:ConfigMap": model(ConfigMap),
  "kubernetes:core/v1:Service": model(Service),
  "kubernetes:apps/v1:Deployment": model(Deployment),
  "kubernetes:apps/v1:StatefulSet": model(StatefulSet),
  "kubernetes:autoscaling/v2:HorizontalPodAutoscaler": model(HorizontalPodAutoscaler),
  "kubernetes:policy/v1:PodDisruptionBudget": model(PodDisruptionBudget),
  "kubernetes:networking.k8s.io/v1:NetworkPolicy": model(NetworkPolicy),
  "kubernetes:keda.sh/v1alpha1:ScaledObject": keda("ScaledObject"),
  "kubernetes:keda.sh/v1alpha1:TriggerAuthentication": keda("TriggerAuthentication"),
};

// Loose views of the recorded inputs, for reading them in tests.
// biome-ignore lint/suspicious/noExplicitAny: recorded inputs are untyped JSON.
export type Json = any;

export function inputs(resource: RecordedResource): Json {
  return resource.inputs;
}

/** A Deployment's pod spec. */
export function podSpec(deployment: Json): Json {
  return deployment.spec.template.spec;
}

/** The one container of a Deployment's pods; fails when there is not exactly one. */
export function onlyContainer(deployment: Json): Json {
  const containers = podSpec(deployment).containers;
  if (containers.length !== 1) throw new Error(`${containers.length} containers, not one`);
  return containers[0];
}

/** A container's plain env values by name (entries read from a Secret left out). */
export function plainEnv(container: Json): Record<string, string> {
  return Object.fromEntries(
    (container.env ?? [])
      .filter((entry: Json) => entry.valueFrom === undefined)
      .map((entry: Json) => [entry.name, entry.value]),
  );
}

/** The env entry `name` of a container; fails when absent. */
export function envOf(container: Json, name: string): Json {
  const entry = (container.env ?? []).find((e: Json) => e.name === name);
  if (entry === undefined) throw new Error(`container ${container.name} has no env ${name}`);
  return entry;
}
