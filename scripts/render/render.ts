import { stringify } from "yaml";
import { configSpec, projectName } from "../../infra/config";
import {
  isSecretOutput,
  type RecordedResource,
  type StackEvaluation,
  testSecretValue,
} from "../../infra/testing/harness";

/**
 * Turns one stack's mock evaluation into the files a reviewer reads in a pull request:
 * `kubernetes.yaml` (every Kubernetes object, as applied) and `cloud.yaml` (everything else, and
 * the stack outputs). Pure and deterministic: the same evaluation gives the same bytes.
 */

/** Stands in for every secret value, in every file. */
export const secretPlaceholder = "<secret>";
/** Stands in for the random suffix Pulumi appends to an auto-named Kubernetes object. */
export const autoNameSuffix = "<random suffix>";
/** Stands in for an address a cloud assigns at deploy time. */
export const addressPlaceholder = "<ip address>";

/** The files of one stack, by path relative to the output folder (`<stack>/<file>`). */
export type RenderedFiles = Map<string, string>;

/**
 * Input keys whose values are credentials wherever they appear (a registry password, a
 * kubeconfig): never rendered, whatever the program marked secret.
 */
const credentialKeys = /^(password|token|accessToken|secret|privateKey|kubeconfig|credentials)$/i;

/** The order objects are applied in, roughly: what others depend on comes first. */
const kindOrder = [
  "Namespace",
  "ResourceQuota",
  "LimitRange",
  "ServiceAccount",
  "Secret",
  "ConfigMap",
  "ClusterRole",
  "ClusterRoleBinding",
  "Role",
  "RoleBinding",
  "NetworkPolicy",
  "PersistentVolumeClaim",
  "Deployment",
  "StatefulSet",
  "DaemonSet",
  "Job",
  "CronJob",
  "Service",
  "Ingress",
  "HorizontalPodAutoscaler",
  // KEDA's: the autoscaler's credentials before the ScaledObject that names them.
  "TriggerAuthentication",
  "ScaledObject",
  "PodDisruptionBudget",
];

/** Keys that Kubernetes readers expect first, in this order; the rest follow alphabetically. */
const leadingKeys: Record<"object" | "metadata" | "any", string[]> = {
  object: ["apiVersion", "kind", "metadata", "type", "spec", "data", "stringData"],
  metadata: ["name", "namespace", "labels", "annotations"],
  any: ["name"],
};

const yamlOptions = {
  indent: 2,
  lineWidth: 0,
  minContentWidth: 0,
  aliasDuplicateObjects: false,
  sortMapEntries: false,
} as const;

// RFC 5737 documentation ranges: never a real address, so in an evaluation always a stand-in
// for one the cloud assigns at deploy time (a load balancer's, a cluster endpoint's).
const documentationAddress = /\b(?:192\.0\.2|198\.51\.100|203\.0\.113)\.\d{1,3}\b/g;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isKubernetesObject(resource: RecordedResource): boolean {
  return (
    resource.type.startsWith("kubernetes:") &&
    !resource.type.startsWith("kubernetes:index") &&
    typeof resource.inputs.kind === "string"
  );
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Deep copy with object keys ordered: the given leading keys first, the rest alphabetically. */
function ordered(value: unknown, leading: string[] = leadingKeys.any): unknown {
  if (Array.isArray(value)) return value.map((item) => ordered(item));
  if (!isRecord(value)) return value;
  const keys = Object.keys(value).sort((a, b) => {
    const ia = leading.indexOf(a);
    const ib = leading.indexOf(b);
    if (ia !== -1 || ib !== -1)
      return (ia === -1 ? leading.length : ia) - (ib === -1 ? leading.length : ib);
    return a < b ? -1 : a > b ? 1 : 0;
  });
  return Object.fromEntries(
    keys.map((key) => [
      key,
      ordered(value[key], key === "metadata" ? leadingKeys.metadata : undefined),
    ]),
  );
}

/** Applies `replace` to every string in a value, keys untouched. */
function mapStrings(value: unknown, replace: (text: string) => string): unknown {
  if (typeof value === "string") return replace(value);
  if (Array.isArray(value)) return value.map((item) => mapStrings(item, replace));
  if (isRecord(value)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, mapStrings(v, replace)]));
  }
  return value;
}

function stringLeaves(value: unknown): string[] {
  if (typeof value === "string") return [value];
  if (Array.isArray(value)) return value.flatMap(stringLeaves);
  if (isRecord(value)) return Object.values(value).flatMap(stringLeaves);
  return [];
}

/** Replaces the values of credential keys, at any depth, by the secret placeholder. */
function redactCredentials(value: unknown, found: Set<string>): unknown {
  if (Array.isArray(value)) return value.map((item) => redactCredentials(item, found));
  if (!isRecord(value)) return value;
  return Object.fromEntries(
    Object.entries(value).map(([key, inner]) => {
      if (credentialKeys.test(key) && typeof inner === "string") {
        found.add(inner);
        return [key, secretPlaceholder];
      }
      return [key, redactCredentials(inner, found)];
    }),
  );
}

/** A Kubernetes Secret's values, never its keys: a reviewer sees which keys change. */
function redactSecretObject(
  object: Record<string, unknown>,
  found: Set<string>,
): Record<string, unknown> {
  const redacted = { ...object };
  for (const field of ["data", "stringData"] as const) {
    const values = object[field];
    if (!isRecord(values)) continue;
    redacted[field] = Object.fromEntries(
      Object.entries(values).map(([key, value]) => {
        for (const leaf of stringLeaves(value)) {
          // Already redacted as a credential (a `password` key) is not a value to look for.
          if (leaf === secretPlaceholder) continue;
          found.add(leaf);
          if (field === "data") found.add(Buffer.from(leaf, "base64").toString("utf8"));
        }
        return [key, secretPlaceholder];
      }),
    );
  }
  return redacted;
}

/** What a stack's configuration holds secretly: `secure:` entries and the keys declared secret. */
function configuredSecrets(config: Record<string, string>): Set<string> {
  const secrets = new Set<string>();
  const declaredSecret = new Set(
    Object.entries(configSpec)
      .filter(([, spec]) => "secret" in spec && spec.secret)
      .map(([key]) => `${projectName}:${key}`),
  );
  for (const [key, value] of Object.entries(config)) {
    if (value === testSecretValue(key) || (declaredSecret.has(key) && value !== "")) {
      secrets.add(value);
    }
  }
  return secrets;
}

/** "masterImageDigest" → "master image": how a digest is named in its placeholder. */
function digestLabel(outputKey: string): string {
  const words = outputKey
    .replace(/Digest$/, "")
    .replace(/([a-z0-9])([A-Z])/g, "$1 $2")
    .toLowerCase();
  return words.endsWith("image") ? words : `${words} image`;
}

/**
 * Every value the evaluation only knows because the mocks made it up, with what stands in for it:
 * auto-named objects' names, image digests (and tags cut from them), cloud-assigned addresses.
 */
function deployTimeValues(evaluation: StackEvaluation): (text: string) => string {
  const names = new Map<string, string>();
  // Every Kubernetes resource the provider names, Helm releases included, not only plain objects.
  for (const resource of evaluation.resources) {
    if (!resource.type.startsWith("kubernetes:")) continue;
    const metadata = resource.inputs.metadata;
    const name = isRecord(metadata) ? metadata.name : undefined;
    if (typeof name !== "string") continue;
    // The provider names an object `<logical name>-<8 random hex>` unless the program names it.
    if (new RegExp(`^${escapeRegExp(resource.name)}-[0-9a-f]{8}$`).test(name)) {
      names.set(name, `${resource.name}-${autoNameSuffix}`);
    }
  }

  const digests = new Map<string, string>();
  for (const [key, value] of Object.entries(evaluation.outputs).sort(([a], [b]) =>
    a < b ? -1 : 1,
  )) {
    if (typeof value !== "string") continue;
    for (const match of value.matchAll(/sha256:([0-9a-f]{64})/g)) {
      const label = `<digest of ${digestLabel(key)}>`;
      // A key that names the digest itself wins over one that only contains it.
      if (!digests.has(match[1]) || key.endsWith("Digest")) digests.set(match[1], label);
    }
  }

  const longestFirst = [...names.keys()].sort((a, b) => b.length - a.length);
  return (text: string) => {
    let result = text;
    for (const name of longestFirst) result = result.split(name).join(names.get(name) as string);
    result = result.replace(
      /sha256:([0-9a-f]{64})/g,
      (_, hex: string) => digests.get(hex) ?? "<image digest>",
    );
    // Tags cut from a digest (`master:dc0f8ffcde197235`) are as unknown as the digest.
    result = result.replace(/\b[0-9a-f]{12,63}\b/g, (hex) => {
      for (const [digest, label] of digests) if (digest.startsWith(hex)) return label;
      return hex;
    });
    return result.replace(documentationAddress, addressPlaceholder);
  };
}

function header(stack: string): string {
  return `# Rendered by npm run render from Pulumi.${stack}.yaml — do not edit\n`;
}

function kindRank(kind: string): number {
  const index = kindOrder.indexOf(kind);
  return index === -1 ? kindOrder.length : index;
}

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function renderKubernetes(
  stack: string,
  resources: RecordedResource[],
  substitute: (text: string) => string,
  found: Set<string>,
): string {
  const objects = resources
    .filter(isKubernetesObject)
    .map((resource) => {
      const kind = String(resource.inputs.kind);
      const metadata = isRecord(resource.inputs.metadata) ? resource.inputs.metadata : {};
      const namespace = typeof metadata.namespace === "string" ? metadata.namespace : "";
      let object = redactCredentials(resource.inputs, found) as Record<string, unknown>;
      if (kind === "Secret") object = redactSecretObject(object, found);
      return { resource, kind, namespace, object };
    })
    .sort(
      (a, b) =>
        kindRank(a.kind) - kindRank(b.kind) ||
        compareText(a.kind, b.kind) ||
        compareText(a.namespace, b.namespace) ||
        compareText(a.resource.name, b.resource.name),
    );
  const documents = objects.map(({ resource, object }) => {
    const body = stringify(
      ordered(mapStrings(object, substitute), leadingKeys.object),
      yamlOptions,
    );
    return `---\n# ${resource.type} ${resource.name}\n${body}`;
  });
  return header(stack) + documents.join("");
}

function renderCloud(
  evaluation: StackEvaluation,
  substitute: (text: string) => string,
  found: Set<string>,
): string {
  const resources = evaluation.resources
    .filter((resource) => !isKubernetesObject(resource))
    .sort((a, b) => compareText(a.type, b.type) || compareText(a.name, b.name))
    .map((resource) => ({
      type: resource.type,
      name: resource.name,
      // What the engine does differently with it (refuses to delete it, ignores a change),
      // reviewed like a setting.
      ...(resource.options.protect ? { protect: true } : {}),
      ...(resource.options.ignoreChanges.length > 0
        ? { ignoreChanges: [...resource.options.ignoreChanges].sort(compareText) }
        : {}),
      settings: ordered(mapStrings(redactCredentials(resource.inputs, found), substitute)),
    }));
  const outputs: Record<string, unknown> = {};
  for (const key of Object.keys(evaluation.outputs).sort(compareText)) {
    const value = evaluation.outputs[key];
    if (isSecretOutput(value)) {
      for (const leaf of stringLeaves(value.value)) found.add(leaf);
      outputs[key] = secretPlaceholder;
    } else {
      outputs[key] = ordered(mapStrings(value, substitute));
    }
  }
  const body = stringify({ resources, outputs }, yamlOptions);
  return `${header(evaluation.stack)}# Everything the stack creates besides Kubernetes objects, with its settings, and the stack's outputs.\n${body}`;
}

/** Values shorter than this are too common to be told apart from ordinary text. */
const minimumSecretLength = 6;

/**
 * Renders one stack. `config` is what the evaluation ran with (`stackConfig` plus overrides):
 * its secret values, like every other secret the evaluation saw, must appear in no file, and
 * rendering fails rather than write one.
 */
export function renderStack(
  evaluation: StackEvaluation,
  config: Record<string, string>,
): RenderedFiles {
  const substitute = deployTimeValues(evaluation);
  const secrets = configuredSecrets(config);
  const files: RenderedFiles = new Map([
    [
      `${evaluation.stack}/kubernetes.yaml`,
      renderKubernetes(evaluation.stack, evaluation.resources, substitute, secrets),
    ],
    [`${evaluation.stack}/cloud.yaml`, renderCloud(evaluation, substitute, secrets)],
  ]);
  for (const [file, text] of files) {
    for (const secret of secrets) {
      if (secret.length >= minimumSecretLength && text.includes(secret)) {
        const line = text.slice(0, text.indexOf(secret)).split("\n").length;
        throw new Error(`rendering ${file} would write a secret value (line ${line}); refusing`);
      }
    }
  }
  return files;
}
