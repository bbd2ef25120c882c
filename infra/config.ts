import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import * as pulumi from "@pulumi/pulumi";
import type { IntegerVar } from "@taskfleet/protocol/env";
import { type LogLevel, logLevels } from "@taskfleet/protocol/log-levels";
import { masterEnv } from "@taskfleet/protocol/master-env";
import { workerEnv } from "@taskfleet/protocol/worker-env";
import YAML from "yaml";
import { fromRepoRoot } from "./service-builds";

/** The project name, and so the namespace of every project config key (`taskfleet:<key>`). */
export const projectName = "taskfleet";

/** Where the program runs the workloads. */
export type ClusterKind = "kind" | "existing" | "gke";

export const clusterKinds: readonly ClusterKind[] = ["kind", "existing", "gke"];

export const releaseChannels = ["RAPID", "REGULAR", "STABLE", "EXTENDED"] as const;
export type ReleaseChannel = (typeof releaseChannels)[number];

/** Where the masters keep the tasks (config `redis`). */
export const redisKinds = ["inCluster", "memorystore"] as const;
export type RedisKind = (typeof redisKinds)[number];

/**
 * What a key whose declared default is empty (`redis`) or 0 (`masterReplicas`) means on each kind
 * of cluster: in the cloud a managed, replicated Redis and a master to spare; locally what fits
 * on a laptop.
 */
export const clusterDefaults: Readonly<
  Record<ClusterKind, { masterReplicas: number; redis: RedisKind }>
> = {
  gke: { masterReplicas: 2, redis: "memorystore" },
  kind: { masterReplicas: 1, redis: "inCluster" },
  existing: { masterReplicas: 1, redis: "inCluster" },
};

/** What sizes the workers (config `autoscaler`). */
export const autoscalerKinds = ["cpu", "queue"] as const;
export type AutoscalerKind = (typeof autoscalerKinds)[number];

/** Where KEDA comes from when the queue sizes the workers (config `keda`). */
export const kedaSources = ["install", "present"] as const;
export type KedaSource = (typeof kedaSources)[number];

/** Most master pods a stack may run: each holds a few connections to Redis and to the workers. */
export const maxMasterReplicas = 20;

/** How `Pulumi.yaml` declares one config key: its type, default and description. */
export interface ConfigKeySpec {
  type: "string" | "integer" | "boolean";
  default: string | number | boolean;
  description: string;
  /** Read with `requireSecret` and set with `pulumi config set --secret` (see {@link secretKeys}). */
  secret: boolean;
}

const mebibyte = 2 ** 20;

/**
 * What a worker pod holds at most, measured on the built worker (RSS at concurrency 4 and 16): the
 * process itself, one handler thread per concurrency slot, and the results waiting to be sent
 * (passed to the worker as RESULT_BUFFER_BYTES, so the pod gets the value this assumes).
 */
export const workerMemory = {
  processBytes: 96 * mebibyte,
  perSlotBytes: 24 * mebibyte,
  resultBufferBytes: 16 * mebibyte,
} as const;

/**
 * How the master's memory limit is shared, measured on a real master filled to its budget: V8's
 * heap is capped below the limit (without the cap Node sizes its heap from the container and
 * garbage alone grows past it), and the heap holds the task budget plus room for the requests
 * being parsed.
 */
export const masterMemory = {
  outsideHeapBytes: 128 * mebibyte,
  parsingHeadroomBytes: 160 * mebibyte,
  /** The least budget worth running with: a few full-size tasks. */
  minBudgetBytes: 32 * mebibyte,
} as const;

/** The master's heap cap and task budget, derived from its pod's memory limit. */
export function masterMemoryShares(limitBytes: number): { heapBytes: number; budgetBytes: number } {
  const heapBytes = limitBytes - masterMemory.outsideHeapBytes;
  return { heapBytes, budgetBytes: heapBytes - masterMemory.parsingHeadroomBytes };
}

/** The least memory limit a worker pod with `concurrency` slots can run under without an OOM kill. */
export function workerMemoryFloor(concurrency: number): number {
  return (
    workerMemory.processBytes +
    workerMemory.perSlotBytes * concurrency +
    workerMemory.resultBufferBytes
  );
}

/**
 * How the in-cluster Redis's memory limit is shared: `maxmemory` (what the data may take before
 * Redis refuses writes) is half of it, because rewriting the append-only file forks Redis, and
 * every page written meanwhile is copied; the rest also holds client buffers.
 */
export const redisMemory = {
  maxmemoryShare: 0.5,
  /** The least limit worth running with. */
  minLimitBytes: 128 * mebibyte,
} as const;

/**
 * With the tasks in Redis, what MEMORY_BUDGET_BYTES lets the queued and running tasks take of
 * Redis's data memory (`maxmemory`, or a Memorystore instance's size): the rest holds the retained
 * results, which the budget does not count, and Redis's own overhead per key. Past the budget a
 * submission gets 503 while Redis still has room for leases, completions and the sweep.
 */
export const redisTaskBudgetShare = 0.5;

/** The master's MEMORY_BUDGET_BYTES for a Redis whose data may take `dataBytes`. */
export function redisTaskBudgetBytes(dataBytes: number): number {
  return Math.floor(dataBytes * redisTaskBudgetShare);
}

/** Redis's `maxmemory` in bytes for a container memory limit. */
export function redisMaxmemoryBytes(limitBytes: number): number {
  return Math.floor(limitBytes * redisMemory.maxmemoryShare);
}

/** The keys the program reads as secrets (`requireSecret`); the stack holds them encrypted. */
export const secretKeys: readonly string[] = [
  "apiToken",
  "workerToken",
  "scalerToken",
  "redisPassword",
];

/**
 * A configured Redis password goes into redis.conf as one token, unquoted: letters, digits and
 * the URL- and base64-safe punctuation only, long enough not to be guessed.
 */
const redisPasswordPattern = /^[A-Za-z0-9\-_.~+/=]{16,128}$/;

/**
 * Checks a configured Redis password; the message names the key and the rule, never the value.
 */
export function checkRedisPassword(text: string): void {
  if (!redisPasswordPattern.test(text)) {
    throw new ConfigError(
      `Invalid config ${projectName}:redisPassword (value not shown: it is a secret): must be 16 to 128 characters, each a letter, a digit or one of - _ . ~ + / =.`,
    );
  }
}

/**
 * Every `taskfleet:` key, as `Pulumi.yaml` declares it: the one place a key's type, default and
 * description are written. The program reads only declared keys (reading another throws), and a
 * test holds every declared key to being read and the README's table to these declarations.
 */
export const configSpec: Readonly<Record<string, ConfigKeySpec>> = readProjectConfig();

function readProjectConfig(): Record<string, ConfigKeySpec> {
  const project = YAML.parse(readFileSync(fromRepoRoot("Pulumi.yaml"), "utf8")) as {
    config: Record<string, Omit<ConfigKeySpec, "secret">>;
  };
  const spec: Record<string, ConfigKeySpec> = {};
  for (const [key, declared] of Object.entries(project.config)) {
    const name = key.slice(`${projectName}:`.length);
    spec[name] = { ...declared, secret: secretKeys.includes(name) };
  }
  return spec;
}

/** A `taskfleet:` key without its prefix. */
export type ConfigKey = string;

/** CPU and memory for one container, as Kubernetes quantities. */
export interface Resources {
  cpuRequest: string;
  cpuLimit: string;
  memoryRequest: string;
  memoryLimit: string;
}

/** GKE settings; present only when `cluster` is `gke`. */
export interface GkeConfig {
  project: string;
  region: string;
  nodeMachineType: string;
  nodeDiskSizeGb: number;
  network: string;
  /** Undefined: the network's subnetwork in the region. */
  subnetwork: string | undefined;
  nodeMinCount: number;
  nodeMaxCount: number;
  releaseChannel: ReleaseChannel;
  deletionProtection: boolean;
}

/** The Redis the program runs in the namespace. */
export interface InClusterRedisConfig {
  kind: "inCluster";
  image: string;
  /** A Kubernetes quantity, e.g. 1Gi. */
  storageSize: string;
  /** Undefined: the cluster's default StorageClass. */
  storageClass: string | undefined;
  resources: Resources;
  /** Undefined: the program generates the password. */
  password: pulumi.Output<string> | undefined;
}

/** Memorystore for Redis, on GKE only. */
export interface MemorystoreConfig {
  kind: "memorystore";
  sizeGb: number;
}

/**
 * How the workers are sized: a CPU HorizontalPodAutoscaler, or KEDA on the master's backlog (with
 * CPU as a second trigger) and where KEDA comes from.
 */
export type WorkerAutoscalerConfig =
  | { kind: "cpu" }
  | {
      kind: "queue";
      /** Queued and running tasks per worker slot the scaler aims for. */
      tasksPerSlot: number;
      /** With no pod, tasks waiting before the first pod starts. */
      activationTasks: number;
      pollingSeconds: number;
      cooldownSeconds: number;
      keda: { source: KedaSource; namespace: string };
    };

/** The whole validated configuration of one stack. */
export interface TaskfleetConfig {
  stack: string;
  cluster: ClusterKind;
  /** cluster=existing: the context, or undefined for the current one. */
  kubeContext: string | undefined;
  /** cluster=existing: the command that loads a local image into the cluster, if one is needed. */
  imageLoadCommand: string | undefined;
  namespace: string;
  /** CIDR ranges allowed to reach the master's load balancer; empty: any source. */
  allowedSourceRanges: string[];
  /** Namespaces whose pods may reach the master's internal port for `/metrics`. */
  metricsNamespaces: string[];
  /** cluster=gke: an internal load balancer instead of an internet-facing one. */
  internalLoadBalancer: boolean;
  /** Images to deploy as they are instead of building them; undefined: built by the program. */
  prebuiltImages: { master: string | undefined; worker: string | undefined };
  /** Undefined: the program generates the token. */
  apiToken: pulumi.Output<string> | undefined;
  workerToken: pulumi.Output<string> | undefined;
  /** autoscaler=queue; undefined: the program generates the token. */
  scalerToken: pulumi.Output<string> | undefined;
  leaseSeconds: number;
  maxAttempts: number;
  resultTtlSeconds: number;
  logLevel: LogLevel;
  master: { resources: Resources; replicas: number };
  /** Where the masters keep the tasks. */
  redis: InClusterRedisConfig | MemorystoreConfig;
  worker: {
    resources: Resources;
    minReplicas: number;
    maxReplicas: number;
    targetCpuUtilization: number;
    concurrency: number;
    shutdownGraceSeconds: number;
    autoscaler: WorkerAutoscalerConfig;
  };
  gke: GkeConfig | undefined;
}

/**
 * The config as Pulumi hands it over: every value a string or absent. Keys are full config keys
 * (`taskfleet:leaseSeconds`, `gcp:project`). Secret keys are not here; they stay Outputs.
 */
export interface RawConfig {
  stack: string;
  values: Readonly<Record<string, string | undefined>>;
  apiToken?: pulumi.Output<string>;
  workerToken?: pulumi.Output<string>;
  scalerToken?: pulumi.Output<string>;
  redisPassword?: pulumi.Output<string>;
}

/** A config value that is not allowed; the message names the key, the value and what is allowed. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

function fullKey(key: string): string {
  return key.includes(":") ? key : `${projectName}:${key}`;
}

function invalid(key: string, value: string, allowed: string): ConfigError {
  return new ConfigError(`Invalid config ${fullKey(key)} = "${value}": ${allowed}.`);
}

/**
 * Reads values as strings and parses them here rather than with `getNumber`/`getBoolean`: those
 * accept `1.5` for a replica count and throw messages that do not say what is allowed.
 */
export class ConfigReader {
  constructor(private readonly values: RawConfig["values"]) {}

  string(key: ConfigKey): string {
    const spec = configSpec[key];
    if (spec === undefined)
      throw new Error(`config key ${fullKey(key)} is not declared in Pulumi.yaml`);
    return this.values[fullKey(key)] ?? String(spec.default);
  }

  integer(key: ConfigKey, min: number, max: number): number {
    const text = this.string(key);
    const value = /^-?\d+$/.test(text.trim()) ? Number(text.trim()) : Number.NaN;
    if (!Number.isSafeInteger(value) || value < min || value > max) {
      throw invalid(key, text, `must be an integer from ${min} to ${max}`);
    }
    return value;
  }

  /** An integer in the range the service's variable allows: the two cannot drift. */
  integerOf(key: ConfigKey, variable: IntegerVar): number {
    return this.integer(key, variable.min, variable.max);
  }

  boolean(key: ConfigKey): boolean {
    const text = this.string(key);
    if (text !== "true" && text !== "false") {
      throw invalid(key, text, "must be true or false");
    }
    return text === "true";
  }

  oneOf<T extends string>(key: ConfigKey, allowed: readonly T[]): T {
    const text = this.string(key);
    if (!(allowed as readonly string[]).includes(text)) {
      throw invalid(key, text, `allowed values are ${allowed.join(", ")}`);
    }
    return text as T;
  }

  /** A comma-separated list, each item trimmed and checked; empty text is an empty list. */
  list(key: ConfigKey, valid: (item: string) => boolean, expected: string): string[] {
    const text = this.string(key);
    if (text.trim() === "") return [];
    const items = text.split(",").map((item) => item.trim());
    for (const item of items) {
      if (!valid(item)) throw invalid(key, text, `"${item}" is not ${expected}`);
    }
    return items;
  }

  matching(key: ConfigKey, pattern: RegExp, allowed: string): string {
    const text = this.string(key);
    if (!pattern.test(text)) {
      throw invalid(key, text, allowed);
    }
    return text;
  }
}

/** `<IPv4>/<0-32>` or `<IPv6>/<0-128>`. */
export function isCidr(text: string): boolean {
  const match = /^([^/]+)\/(\d{1,3})$/.exec(text);
  if (!match) return false;
  const version = isIP(match[1] ?? "");
  const prefix = Number(match[2]);
  return (version === 4 && prefix <= 32) || (version === 6 && prefix <= 128);
}

const cpuPattern = /^(\d+m|\d+(\.\d{1,3})?)$/;
const memoryPattern = /^\d+(Ki|Mi|Gi|Ti|k|M|G|T)?$/;
const memoryUnits: Record<string, number> = {
  "": 1,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
};

/** A CPU quantity in millicores. */
export function parseCpu(quantity: string): number {
  return quantity.endsWith("m") ? Number(quantity.slice(0, -1)) : Number(quantity) * 1000;
}

/** A memory quantity in bytes. */
export function parseMemory(quantity: string): number {
  const match = /^(\d+)(\D*)$/.exec(quantity);
  if (!match) return Number.NaN;
  return Number(match[1]) * (memoryUnits[match[2] ?? ""] ?? Number.NaN);
}

function readResources(read: ConfigReader, prefix: "master" | "worker" | "redis"): Resources {
  const cpu = "a CPU quantity such as 250m or 1";
  const memory = "a memory quantity such as 128Mi or 1Gi";
  const resources: Resources = {
    cpuRequest: read.matching(`${prefix}CpuRequest`, cpuPattern, `must be ${cpu}`),
    cpuLimit: read.matching(`${prefix}CpuLimit`, cpuPattern, `must be ${cpu}`),
    memoryRequest: read.matching(`${prefix}MemoryRequest`, memoryPattern, `must be ${memory}`),
    memoryLimit: read.matching(`${prefix}MemoryLimit`, memoryPattern, `must be ${memory}`),
  };
  if (parseCpu(resources.cpuRequest) <= 0) {
    throw invalid(`${prefix}CpuRequest`, resources.cpuRequest, "must be more than 0");
  }
  if (parseMemory(resources.memoryRequest) <= 0) {
    throw invalid(`${prefix}MemoryRequest`, resources.memoryRequest, "must be more than 0");
  }
  // Kubernetes rejects a request above its limit, but only at deploy time, half-way through an update.
  if (parseCpu(resources.cpuRequest) > parseCpu(resources.cpuLimit)) {
    throw invalid(
      `${prefix}CpuRequest`,
      resources.cpuRequest,
      `must not exceed ${fullKey(`${prefix}CpuLimit`)} (${resources.cpuLimit})`,
    );
  }
  if (parseMemory(resources.memoryRequest) > parseMemory(resources.memoryLimit)) {
    throw invalid(
      `${prefix}MemoryRequest`,
      resources.memoryRequest,
      `must not exceed ${fullKey(`${prefix}MemoryLimit`)} (${resources.memoryLimit})`,
    );
  }
  return resources;
}

/**
 * `[registry[:port]/]path[:tag][@sha256:digest]` with a digest or a tag; `latest` is refused
 * because a moving tag would never roll the pods.
 */
const imageReferencePattern =
  /^[a-z0-9]+([._-][a-z0-9]+)*(:\d+)?(\/[a-z0-9]+([._-]{1,2}[a-z0-9]+)*)*(:[\w][\w.-]{0,127})?(@sha256:[0-9a-f]{64})?$/;

function imageReference(
  read: ConfigReader,
  key: "masterImage" | "workerImage" | "redisImage",
): string | undefined {
  const text = read.string(key);
  if (text === "") return undefined;
  const tag = /:([\w][\w.-]*)(@|$)/.exec(text.replace(/^[^/]*\//, ""))?.[1];
  const pinned = text.includes("@sha256:") || (tag !== undefined && tag !== "latest");
  if (!imageReferencePattern.test(text) || !pinned) {
    throw invalid(
      key,
      text,
      "must be an image reference with a digest (repo@sha256:...) or a tag other than latest (repo:1.2.3)",
    );
  }
  return text;
}

function optional(text: string): string | undefined {
  return text === "" ? undefined : text;
}

const dnsLabel = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

function readMasterReplicas(read: ConfigReader, cluster: ClusterKind): number {
  const text = read.string("masterReplicas");
  const value = /^\d+$/.test(text.trim()) ? Number(text.trim()) : Number.NaN;
  if (!Number.isSafeInteger(value) || value > maxMasterReplicas) {
    throw invalid(
      "masterReplicas",
      text,
      `must be an integer from 1 to ${maxMasterReplicas}, or 0 for the cluster's default (${clusterKinds.map((kind) => `${clusterDefaults[kind].masterReplicas} on ${kind}`).join(", ")})`,
    );
  }
  return value === 0 ? clusterDefaults[cluster].masterReplicas : value;
}

function readRedis(
  raw: RawConfig,
  read: ConfigReader,
  cluster: ClusterKind,
): InClusterRedisConfig | MemorystoreConfig {
  const chosen = read.string("redis");
  if (chosen !== "" && !(redisKinds as readonly string[]).includes(chosen)) {
    throw invalid(
      "redis",
      chosen,
      `allowed values are ${redisKinds.join(", ")}, or empty for the cluster's default (${clusterKinds.map((kind) => `${clusterDefaults[kind].redis} on ${kind}`).join(", ")})`,
    );
  }
  const kind = chosen === "" ? clusterDefaults[cluster].redis : (chosen as RedisKind);
  if (kind === "memorystore") {
    if (cluster !== "gke") {
      throw invalid(
        "redis",
        chosen,
        `Memorystore is only available when taskfleet:cluster is gke (it is ${cluster}); use inCluster or leave it empty`,
      );
    }
    if (raw.redisPassword !== undefined) {
      throw new ConfigError(
        `Invalid config ${projectName}:redisPassword (value not shown: it is a secret): only used when taskfleet:redis is inCluster (it is memorystore, which makes its own AUTH string); unset it.`,
      );
    }
    return { kind, sizeGb: read.integer("memorystoreSizeGb", 1, 300) };
  }
  const resources = readResources(read, "redis");
  if (parseMemory(resources.memoryLimit) < redisMemory.minLimitBytes) {
    throw invalid(
      "redisMemoryLimit",
      resources.memoryLimit,
      `must be at least ${redisMemory.minLimitBytes / mebibyte}Mi (maxmemory is ${redisMemory.maxmemoryShare * 100}% of it, the rest is room for rewriting the append-only file)`,
    );
  }
  const storageSize = read.matching(
    "redisStorageSize",
    memoryPattern,
    "must be a storage quantity such as 1Gi or 500Mi",
  );
  if (parseMemory(storageSize) <= 0) {
    throw invalid("redisStorageSize", storageSize, "must be more than 0");
  }
  return {
    kind,
    image: imageReference(read, "redisImage") as string,
    storageSize,
    storageClass: optional(
      read.matching(
        "redisStorageClass",
        /^$|^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/,
        "must be empty (the cluster's default class) or a StorageClass name such as standard-rwo",
      ),
    ),
    resources,
    password: raw.redisPassword,
  };
}

/**
 * Validates raw config into the typed object the program uses, or throws a {@link ConfigError}
 * naming the key, the value and what is allowed. Pure: tests call it directly.
 */
export function validateConfig(raw: RawConfig): TaskfleetConfig {
  const read = new ConfigReader(raw.values);
  const cluster = read.oneOf("cluster", clusterKinds);

  const namespaceText = read.string("namespace");
  const namespace = namespaceText === "" ? `${projectName}-${raw.stack}` : namespaceText;
  if (!dnsLabel.test(namespace)) {
    throw invalid(
      "namespace",
      namespaceText === "" ? namespace : namespaceText,
      "must be a DNS label: at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit",
    );
  }

  const autoscaler = readWorkerAutoscaler(read);
  if (raw.scalerToken !== undefined && autoscaler.kind !== "queue") {
    throw new ConfigError(
      `Invalid config ${projectName}:scalerToken (value not shown: it is a secret): only used when taskfleet:autoscaler is queue (it is ${autoscaler.kind}); unset it or set taskfleet:autoscaler to queue.`,
    );
  }
  const minReplicas = read.integer("workerMinReplicas", 0, 1000);
  if (minReplicas === 0 && autoscaler.kind !== "queue") {
    throw invalid(
      "workerMinReplicas",
      "0",
      `must be at least 1 with taskfleet:autoscaler ${autoscaler.kind} (a CPU autoscaler cannot wake a pod from zero); set taskfleet:autoscaler to queue to scale to zero`,
    );
  }
  const maxReplicas = read.integer("workerMaxReplicas", 1, 1000);
  if (minReplicas > maxReplicas) {
    throw invalid(
      "workerMinReplicas",
      String(minReplicas),
      `must not exceed taskfleet:workerMaxReplicas (${maxReplicas})`,
    );
  }

  const kubeContext = read.string("kubeContext");
  const imageLoadCommand = read.string("imageLoadCommand").trim();
  const internalLoadBalancer = read.boolean("internalLoadBalancer");
  // Set for another cluster kind they would be ignored without a word; most likely the cluster is wrong.
  for (const [key, value, only] of [
    ["kubeContext", kubeContext, "existing"],
    ["imageLoadCommand", imageLoadCommand, "existing"],
    ["internalLoadBalancer", internalLoadBalancer ? "true" : "", "gke"],
  ] as const) {
    if (value !== "" && cluster !== only) {
      throw invalid(
        key,
        value,
        `only used when taskfleet:cluster is ${only} (it is ${cluster}); unset it or change the cluster`,
      );
    }
  }

  const masterResources = readResources(read, "master");
  const masterFloor =
    masterMemory.outsideHeapBytes + masterMemory.parsingHeadroomBytes + masterMemory.minBudgetBytes;
  if (parseMemory(masterResources.memoryLimit) < masterFloor) {
    throw invalid(
      "masterMemoryLimit",
      masterResources.memoryLimit,
      `must be at least ${masterFloor / mebibyte}Mi (${masterMemory.outsideHeapBytes / mebibyte}Mi outside the heap, ${masterMemory.parsingHeadroomBytes / mebibyte}Mi for requests being parsed, ${masterMemory.minBudgetBytes / mebibyte}Mi of tasks)`,
    );
  }
  const workerResources = readResources(read, "worker");
  const concurrency = read.integerOf("workerConcurrency", workerEnv.CONCURRENCY);
  const floor = workerMemoryFloor(concurrency);
  if (parseMemory(workerResources.memoryLimit) < floor) {
    throw invalid(
      "workerMemoryLimit",
      workerResources.memoryLimit,
      `must be at least ${Math.ceil(floor / mebibyte)}Mi for taskfleet:workerConcurrency ${concurrency} (${workerMemory.processBytes / mebibyte}Mi for the process, ${workerMemory.perSlotBytes / mebibyte}Mi per handler thread, ${workerMemory.resultBufferBytes / mebibyte}Mi of results); raise it or lower the concurrency`,
    );
  }

  return Object.freeze({
    stack: raw.stack,
    cluster,
    kubeContext: optional(kubeContext),
    imageLoadCommand: optional(imageLoadCommand),
    namespace,
    allowedSourceRanges: read.list(
      "allowedSourceRanges",
      isCidr,
      "a CIDR range; use comma-separated ranges such as 203.0.113.0/24 or 2001:db8::/32",
    ),
    metricsNamespaces: read.list(
      "metricsNamespaces",
      (name) => dnsLabel.test(name),
      "a namespace name (a DNS label); use comma-separated names such as monitoring,gmp-system",
    ),
    internalLoadBalancer,
    prebuiltImages: {
      master: imageReference(read, "masterImage"),
      worker: imageReference(read, "workerImage"),
    },
    apiToken: raw.apiToken,
    workerToken: raw.workerToken,
    scalerToken: raw.scalerToken,
    leaseSeconds: read.integerOf("leaseSeconds", masterEnv.LEASE_SECONDS),
    maxAttempts: read.integerOf("maxAttempts", masterEnv.MAX_ATTEMPTS),
    resultTtlSeconds: read.integerOf("resultTtlSeconds", masterEnv.RESULT_TTL_SECONDS),
    logLevel: read.oneOf("logLevel", logLevels),
    master: { resources: masterResources, replicas: readMasterReplicas(read, cluster) },
    redis: readRedis(raw, read, cluster),
    worker: {
      resources: workerResources,
      minReplicas,
      maxReplicas,
      targetCpuUtilization: read.integer("workerTargetCpuUtilization", 1, 100),
      concurrency,
      shutdownGraceSeconds: read.integerOf(
        "workerShutdownGraceSeconds",
        workerEnv.SHUTDOWN_GRACE_SECONDS,
      ),
      autoscaler,
    },
    gke: cluster === "gke" ? validateGke(raw, read) : undefined,
  });
}

/** Read only with autoscaler=queue: changed from its default with cpu, one would be ignored, so it is refused. */
const queueOnlyKeys = [
  "keda",
  "kedaNamespace",
  "workerTasksPerSlot",
  "workerActivationTasks",
  "workerPollingSeconds",
  "workerCooldownSeconds",
] as const;

function readWorkerAutoscaler(read: ConfigReader): WorkerAutoscalerConfig {
  const kind = read.oneOf("autoscaler", autoscalerKinds);
  if (kind === "cpu") {
    for (const key of queueOnlyKeys) {
      if (read.string(key) !== String(configSpec[key]?.default)) {
        throw invalid(
          key,
          read.string(key),
          "only used when taskfleet:autoscaler is queue (it is cpu); unset it or set taskfleet:autoscaler to queue",
        );
      }
    }
    return { kind };
  }
  const namespace = read.string("kedaNamespace");
  if (!dnsLabel.test(namespace)) {
    throw invalid(
      "kedaNamespace",
      namespace,
      "must be a namespace name (a DNS label: at most 63 lower-case letters, digits and '-')",
    );
  }
  return {
    kind,
    tasksPerSlot: read.integer("workerTasksPerSlot", 1, 100),
    activationTasks: read.integer("workerActivationTasks", 0, 100_000),
    pollingSeconds: read.integer("workerPollingSeconds", 1, 300),
    cooldownSeconds: read.integer("workerCooldownSeconds", 0, 86_400),
    keda: { source: read.oneOf("keda", kedaSources), namespace },
  };
}

function validateGke(raw: RawConfig, read: ConfigReader): GkeConfig {
  const project = raw.values["gcp:project"];
  if (project === undefined || project === "") {
    throw new ConfigError(
      'Missing config gcp:project: taskfleet:cluster = "gke" needs the Google Cloud project id (pulumi config set gcp:project <id>).',
    );
  }
  const region = raw.values["gcp:region"];
  if (region === undefined || region === "") {
    throw new ConfigError(
      'Missing config gcp:region: taskfleet:cluster = "gke" needs a region such as europe-west1 (pulumi config set gcp:region <region>).',
    );
  }
  if (!/^[a-z]+-[a-z]+\d+$/.test(region)) {
    throw invalid(
      "gcp:region",
      region,
      "must be a region such as europe-west1 (a regional cluster; zones are not supported)",
    );
  }
  const nodeMinCount = read.integer("nodeMinCount", 0, 100);
  const nodeMaxCount = read.integer("nodeMaxCount", 1, 100);
  if (nodeMinCount > nodeMaxCount) {
    throw invalid(
      "nodeMinCount",
      String(nodeMinCount),
      `must not exceed taskfleet:nodeMaxCount (${nodeMaxCount})`,
    );
  }
  return {
    project,
    region,
    nodeMachineType: read.matching(
      "nodeMachineType",
      /^[a-z][a-z0-9]*-[a-z0-9-]*[a-z0-9]$/,
      "must be a Compute Engine machine type such as e2-standard-2",
    ),
    nodeDiskSizeGb: read.integer("nodeDiskSizeGb", 10, 65536),
    network: read.matching(
      "network",
      /^(projects\/[a-z][-a-z0-9.:]*[a-z0-9]\/global\/networks\/)?[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/,
      "must be a VPC network name such as default, or projects/<project>/global/networks/<name>",
    ),
    subnetwork: optional(
      read.matching(
        "subnetwork",
        /^((projects\/[a-z][-a-z0-9.:]*[a-z0-9]\/regions\/[a-z]+-[a-z]+\d+\/subnetworks\/)?[a-z]([-a-z0-9]{0,61}[a-z0-9])?)?$/,
        "must be empty, a subnetwork name, or projects/<project>/regions/<region>/subnetworks/<name>",
      ),
    ),
    nodeMinCount,
    nodeMaxCount,
    releaseChannel: read.oneOf("releaseChannel", releaseChannels),
    deletionProtection: read.boolean("deletionProtection"),
  };
}

/**
 * Reads the stack's config once and validates it. The only function in the program that touches
 * `pulumi.Config`; a bad value throws before any resource is registered.
 */
export function loadConfig(): TaskfleetConfig {
  const project = new pulumi.Config(projectName);
  const gcp = new pulumi.Config("gcp");
  const values: Record<string, string | undefined> = {
    "gcp:project": gcp.get("project"),
    "gcp:region": gcp.get("region"),
  };
  for (const [key, spec] of Object.entries(configSpec) as [ConfigKey, ConfigKeySpec][]) {
    if (!spec.secret) values[fullKey(key)] = project.get(key);
  }
  return validateConfig({
    stack: pulumi.getStack(),
    values,
    apiToken: configuredSecret(project, "apiToken"),
    workerToken: configuredSecret(project, "workerToken"),
    scalerToken: configuredSecret(project, "scalerToken"),
    redisPassword: configuredSecret(project, "redisPassword", checkRedisPassword),
  });
}

/**
 * `Pulumi.yaml` declares the secrets with an empty default, meaning "generate one"; the plain read
 * only tests for that empty default (and, given `check`, the value's form, in a message that never
 * shows it), and the value itself stays a secret Output.
 */
function configuredSecret(
  project: pulumi.Config,
  key: "apiToken" | "workerToken" | "scalerToken" | "redisPassword",
  check?: (plain: string) => void,
): pulumi.Output<string> | undefined {
  const plain = project.get(key);
  if (plain === undefined || plain === "") return undefined;
  check?.(plain);
  return project.requireSecret(key);
}
