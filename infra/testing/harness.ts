/**
 * Evaluates the Pulumi program of one stack in-process with `pulumi.runtime.setMocks`: no cloud,
 * no Pulumi CLI. Used by the infra tests and by `npm run render`.
 */
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import YAML from "yaml";
import { type ConfigKeySpec, configSpec, loadConfig, projectName } from "../config";
import { repoRoot } from "../service-builds";
import { createTaskfleet } from "../taskfleet";

/** One custom resource the program registered (components are not recorded). */
export interface RecordedResource {
  /** Type token, e.g. `kubernetes:apps/v1:Deployment`. */
  type: string;
  /** Logical (Pulumi) name, e.g. `master`. */
  name: string;
  /** The inputs as the engine received them, fully resolved; secret values are unwrapped. */
  inputs: Record<string, unknown>;
  /**
   * `type::name` of every resource this one waits for before the engine creates it: its
   * `dependsOn` and the resources whose outputs its inputs use (components included).
   */
  dependsOn: string[];
  /** The resource options the engine acts on, as the registration carried them. */
  options: RecordedOptions;
}

/** Resource options that change what the engine does with a resource. */
export interface RecordedOptions {
  protect: boolean;
  deleteBeforeReplace: boolean;
  ignoreChanges: string[];
  additionalSecretOutputs: string[];
}

/** The result of evaluating one stack. */
export interface StackEvaluation {
  /** The stack name, e.g. `dev`. */
  stack: string;
  /** Custom resources in registration order, inputs fully resolved (no Outputs). */
  resources: RecordedResource[];
  /**
   * The stack's exports, resolved. A secret output is a {@link SecretOutput} wrapping its value;
   * an export that is `undefined` for this stack (e.g. `kubeconfig` on an existing cluster) is absent.
   */
  outputs: Record<string, unknown>;
  /** Invoke tokens the program called, in call order. */
  invokes: string[];
}

/** How a secret stack output appears in {@link StackEvaluation.outputs}. */
export interface SecretOutput {
  secret: true;
  value: unknown;
}

export function isSecretOutput(value: unknown): value is SecretOutput {
  return (
    typeof value === "object" &&
    value !== null &&
    (value as { secret?: unknown }).secret === true &&
    "value" in value
  );
}

/** The value a `secure:` stack config entry is replaced by in evaluations. */
export function testSecretValue(key: string): string {
  return `test-secret-${key.replace(/[^a-zA-Z0-9]/g, "-")}`;
}

const declaredSecretKeys = new Set(
  (Object.entries(configSpec) as [string, ConfigKeySpec][])
    .filter(([, spec]) => spec.secret === true)
    .map(([key]) => `${projectName}:${key}`),
);

const stackFilePattern = /^Pulumi\.([^.]+)\.yaml$/;

/** The stacks of the repository, from `Pulumi.<stack>.yaml` at its root, sorted. */
export function listStacks(root: string = repoRoot): string[] {
  return fs
    .readdirSync(root)
    .map((file) => stackFilePattern.exec(file)?.[1])
    .filter((stack): stack is string => stack !== undefined)
    .sort();
}

interface ProjectFile {
  name: string;
  config?: Record<string, unknown>;
}

/** `Pulumi.yaml`, parsed. */
export function readProjectFile(root: string = repoRoot): ProjectFile {
  const project = YAML.parse(fs.readFileSync(path.join(root, "Pulumi.yaml"), "utf8"));
  if (typeof project?.name !== "string") throw new Error("Pulumi.yaml has no project name");
  return project as ProjectFile;
}

function fullKey(projectName: string, key: string): string {
  return key.includes(":") ? key : `${projectName}:${key}`;
}

function configString(key: string, value: unknown): string {
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  throw new Error(
    `config ${key}: only strings, numbers and booleans are supported, got ${JSON.stringify(value)}`,
  );
}

function loadStack(
  stack: string,
  root: string = repoRoot,
): { config: Record<string, string>; secretKeys: string[] } {
  const project = readProjectFile(root);
  const config: Record<string, string> = {};
  const secretKeys: string[] = [];
  // Project defaults first, as the CLI merges them: `default` for project keys, `value` for others.
  for (const [key, declaration] of Object.entries(project.config ?? {})) {
    const full = fullKey(project.name, key);
    if (declaration !== null && typeof declaration === "object") {
      const decl = declaration as { default?: unknown; value?: unknown };
      const value = decl.default ?? decl.value;
      if (value !== undefined) config[full] = configString(full, value);
    } else {
      config[full] = configString(full, declaration);
    }
  }
  const file = path.join(root, `Pulumi.${stack}.yaml`);
  if (!fs.existsSync(file)) throw new Error(`no stack file Pulumi.${stack}.yaml`);
  const stackFile = YAML.parse(fs.readFileSync(file, "utf8")) ?? {};
  for (const [key, value] of Object.entries(stackFile.config ?? {})) {
    const full = fullKey(project.name, key);
    if (value !== null && typeof value === "object" && "secure" in value) {
      config[full] = testSecretValue(full);
      secretKeys.push(full);
    } else {
      config[full] = configString(full, value);
    }
  }
  return { config, secretKeys };
}

/**
 * What `setAllConfig` gets for a stack: `Pulumi.yaml` defaults overlaid with the stack file, every
 * value a string, `secure:` values replaced by {@link testSecretValue}.
 */
export function stackConfig(stack: string): Record<string, string> {
  return loadStack(stack).config;
}

/** {@link stackConfig} for a project in another directory, with the keys marked secret. */
export function stackConfigIn(
  root: string,
  stack: string,
): { config: Record<string, string>; secretKeys: string[] } {
  return loadStack(stack, root);
}

function digestOf(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

const secretSigKey = "4dabf18193072939515e22adb298388d";

/** Replaces the engine's secret wrappers by their values, recursively. */
function unwrapSecrets(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(unwrapSecrets);
  if (value !== null && typeof value === "object") {
    const record = value as Record<string, unknown>;
    if (secretSigKey in record) return unwrapSecrets(record.value);
    return Object.fromEntries(Object.entries(record).map(([k, v]) => [k, unwrapSecrets(v)]));
  }
  return value;
}

/** Invokes the program may make; anything else fails the evaluation. */
const knownInvokes: Record<string, (inputs: Record<string, unknown>) => Record<string, unknown>> = {
  "gcp:organizations/getClientConfig:getClientConfig": () => ({
    accessToken: "test-access-token",
    project: "test-project",
    region: "test-region",
    zone: "test-zone",
    id: "test-client-config",
  }),
};

function isKubernetesObject(type: string): boolean {
  return type.startsWith("kubernetes:") && !type.startsWith("kubernetes:index");
}

/**
 * Names an unnamed Kubernetes object as the provider's check step does (`<name>-<8 characters>`),
 * so recorded inputs carry the names other objects refer to.
 */
function autoName(
  type: string,
  name: string,
  inputs: Record<string, unknown>,
): Record<string, unknown> {
  if (!isKubernetesObject(type)) return inputs;
  const metadata = (inputs.metadata ?? {}) as Record<string, unknown>;
  if (metadata.name !== undefined) return inputs;
  return {
    ...inputs,
    metadata: { ...metadata, name: `${name}-${digestOf(`${type}::${name}`).slice(0, 8)}` },
  };
}

/** Deterministic provider state per type: what the real providers compute at create time. */
function mockState(
  type: string,
  name: string,
  inputs: Record<string, unknown>,
): Record<string, unknown> {
  const hash = digestOf(`${type}::${name}`);
  if (type === "docker:index/image:Image") {
    const imageName = String(inputs.imageName);
    const repository = imageName.replace(/:[^:/]+$/, "");
    // As the provider does: a pushed image's repoDigest names the registry manifest, an
    // unpushed one's is only the local image id.
    const repoDigest = inputs.skipPush ? `sha256:${hash}` : `${repository}@sha256:${hash}`;
    return { ...inputs, repoDigest, baseImageName: imageName, registryServer: "" };
  }
  if (type === "docker:index/tag:Tag") {
    return { ...inputs, sourceImageId: inputs.sourceImage };
  }
  if (type === "command:local:Command") {
    return { ...inputs, stdout: `stdout of ${name}`, stderr: "" };
  }
  if (type === "random:index/randomPassword:RandomPassword") {
    const length = Number(inputs.length ?? 16);
    return { ...inputs, result: hash.repeat(2).slice(0, length), bcryptHash: "" };
  }
  if (type === "gcp:serviceaccount/account:Account") {
    return { ...inputs, email: `${inputs.accountId}@${inputs.project}.iam.gserviceaccount.com` };
  }
  if (type === "gcp:redis/instance:Instance") {
    // What Memorystore assigns: an address in the VPC, the TLS port, an AUTH string, its own CA.
    return {
      ...inputs,
      host: "198.51.100.20",
      port: inputs.transitEncryptionMode === "SERVER_AUTHENTICATION" ? 6378 : 6379,
      authString: `auth-string-of-${name}-${hash.slice(0, 24)}`,
      serverCaCerts: [
        {
          cert: `-----BEGIN CERTIFICATE-----\nCA of ${name}\n-----END CERTIFICATE-----\n`,
        },
      ],
    };
  }
  if (type === "gcp:container/cluster:Cluster") {
    return {
      ...inputs,
      endpoint: "198.51.100.1",
      masterAuth: { clusterCaCertificate: Buffer.from(`ca of ${name}`).toString("base64") },
    };
  }
  if (isKubernetesObject(type)) {
    const metadata = (inputs.metadata ?? {}) as Record<string, unknown>;
    const named = inputs;
    const annotations = (metadata.annotations ?? {}) as Record<string, unknown>;
    const spec = (inputs.spec ?? {}) as Record<string, unknown>;
    // A cloud load balancer answers once Pulumi has waited for it; with skipAwait nothing waits,
    // and a local cluster has no address yet.
    if (type === "kubernetes:core/v1:Service" && spec.type === "LoadBalancer") {
      const skipped = annotations["pulumi.com/skipAwait"] === "true";
      return skipped
        ? named
        : { ...named, status: { loadBalancer: { ingress: [{ ip: "203.0.113.10" }] } } };
    }
    return named;
  }
  return inputs;
}

// The engine's RPC queue: every registration has reached the mocks once it drains.
// `waitForRPCs` is internal to @pulumi/pulumi: imported by path, typed here.
const settings: {
  waitForRPCs(): Promise<void>;
  getMonitor(): MonitorWithRegister;
} = require("@pulumi/pulumi/runtime/settings");

/** The part of Pulumi's mock monitor that sees each registration request. */
interface MonitorWithRegister {
  registerResource(
    request: {
      getType(): string;
      getName(): string;
      getDependenciesList(): string[];
      getProtect(): boolean | undefined;
      getDeletebeforereplace(): boolean | undefined;
      getIgnorechangesList(): string[];
      getAdditionalsecretoutputsList(): string[];
    },
    callback: unknown,
  ): unknown;
}

interface Registration {
  dependsOn: string[];
  options: RecordedOptions;
}

/**
 * Records each registration's dependencies by `type::name`, and its options. The mocks'
 * `newResource` is told neither, but the order in which the engine creates resources (a kind load
 * after the kind cluster) and what it refuses to do (delete a protected cluster) are part of what
 * the program must get right.
 */
function recordRegistrations(into: Map<string, Registration>): void {
  const monitor = settings.getMonitor();
  const register = monitor.registerResource.bind(monitor);
  monitor.registerResource = (request, callback) => {
    // A URN ends `…::<type>::<name>`; the parent chain before the type is not needed here.
    const names = request.getDependenciesList().map((urn) => {
      const parts = urn.split("::");
      const type = (parts[parts.length - 2] ?? "").split("$").pop();
      return `${type}::${parts[parts.length - 1]}`;
    });
    into.set(`${request.getType()}::${request.getName()}`, {
      dependsOn: names,
      options: {
        protect: request.getProtect() === true,
        deleteBeforeReplace: request.getDeletebeforereplace() === true,
        ignoreChanges: request.getIgnorechangesList(),
        additionalSecretOutputs: request.getAdditionalsecretoutputsList(),
      },
    });
    return register(request, callback);
  };
}

/** What the mocks of one evaluation saw. */
export interface RecordingMocks {
  mocks: pulumi.runtime.Mocks;
  resources: RecordedResource[];
  invokes: string[];
  /** Errors thrown to the program (unknown invokes), reported by {@link evaluateStack}. */
  failures: Error[];
}

/**
 * Mocks that record every custom resource with its inputs and every invoke, answer only the
 * invokes the program is known to make, and throw `unexpected invoke <token>` on any other.
 */
export function createRecordingMocks(): RecordingMocks {
  const resources: RecordedResource[] = [];
  const invokes: string[] = [];
  const failures: Error[] = [];
  const mocks: pulumi.runtime.Mocks = {
    newResource(args) {
      const inputs = autoName(
        args.type,
        args.name,
        unwrapSecrets(args.inputs) as Record<string, unknown>,
      );
      if (args.custom !== false) {
        resources.push({
          type: args.type,
          name: args.name,
          inputs,
          dependsOn: [],
          options: {
            protect: false,
            deleteBeforeReplace: false,
            ignoreChanges: [],
            additionalSecretOutputs: [],
          },
        });
      }
      return { id: `${args.name}-id`, state: mockState(args.type, args.name, inputs) };
    },
    call(args) {
      invokes.push(args.token);
      const known = knownInvokes[args.token];
      if (known === undefined) {
        const error = new Error(`unexpected invoke ${args.token}`);
        // The engine passes the program an error without this message, and an invoke whose
        // result nobody awaits fails unseen: evaluateStack reports it.
        failures.push(error);
        throw error;
      }
      return known(args.inputs);
    },
  };
  return { mocks, resources, invokes, failures };
}

let evaluating = false;

/**
 * Runs the program for `stack` against mocks and returns what it registered. Stacks are evaluated
 * one after another in one process; two evaluations must not overlap.
 */
export async function evaluateStack(
  stack: string,
  overrides: Record<string, string> = {},
): Promise<StackEvaluation> {
  if (evaluating) throw new Error("evaluateStack: another evaluation is still running");
  evaluating = true;
  try {
    const project = readProjectFile();
    const { config, secretKeys } = loadStack(stack);
    const recording = createRecordingMocks();
    const { resources, invokes, failures } = recording;

    await pulumi.runtime.setMocks(recording.mocks, project.name, stack, false);
    const registrations = new Map<string, Registration>();
    recordRegistrations(registrations);
    // An override of a key the project declares secret is passed as a secret, as `--secret` would.
    const secretOverrides = Object.keys(overrides).filter((key) => declaredSecretKeys.has(key));
    pulumi.runtime.setAllConfig({ ...config, ...overrides }, [...secretKeys, ...secretOverrides]);

    const exported = createTaskfleet(loadConfig()) as unknown as Record<
      string,
      pulumi.Output<unknown> | undefined
    >;

    const outputs: Record<string, unknown> = {};
    for (const [key, output] of Object.entries(exported)) {
      if (output === undefined) continue;
      const value = await promiseOf(output);
      outputs[key] = (await pulumi.isSecret(output)) ? { secret: true, value } : value;
    }
    await settings.waitForRPCs();
    attachRegistrations(resources, registrations, failures);
    return { stack, resources, outputs, invokes };
  } finally {
    evaluating = false;
  }
}

/**
 * Throws the first failure the mocks saw; otherwise gives each recorded resource the
 * `dependsOn` and options it was registered with.
 */
function attachRegistrations(
  resources: RecordedResource[],
  registrations: Map<string, Registration>,
  failures: unknown[],
): void {
  if (failures.length > 0) throw failures[0];
  for (const resource of resources) {
    const registration = registrations.get(`${resource.type}::${resource.name}`);
    if (registration === undefined) continue;
    resource.dependsOn = registration.dependsOn;
    resource.options = registration.options;
  }
}

/** What constructing one component under mocks registered. */
export interface ComponentEvaluation<T> {
  /** The mocks' stack name. */
  stack: string;
  /** What the construct function returned: the component, to read its outputs. */
  component: T;
  /** Custom resources in registration order, inputs fully resolved (no Outputs). */
  resources: RecordedResource[];
  /** Invoke tokens called, in call order. */
  invokes: string[];
}

/**
 * Runs `construct` (typically `new SomeComponent(name, args)`) against fresh mocks, with no stack
 * config, and returns every custom resource it registered once all registrations have reached
 * the mocks: a component tested on its own with the args a test writes out, where
 * {@link evaluateStack} tests the whole program for a stack. Unknown invokes fail as in
 * {@link createRecordingMocks}. Shares {@link evaluateStack}'s rule: one evaluation at a time.
 */
export async function evaluateComponent<T>(
  construct: () => T,
  stack = "test",
): Promise<ComponentEvaluation<T>> {
  if (evaluating) throw new Error("evaluateComponent: another evaluation is still running");
  evaluating = true;
  try {
    const recording = createRecordingMocks();
    const { resources, invokes, failures } = recording;
    await pulumi.runtime.setMocks(recording.mocks, projectName, stack, false);
    const registrations = new Map<string, Registration>();
    recordRegistrations(registrations);
    pulumi.runtime.setAllConfig({}, []);

    const component = construct();

    await registrationsDone();
    attachRegistrations(resources, registrations, failures);
    return { stack, component, resources, invokes };
  } finally {
    evaluating = false;
  }
}

/**
 * Waits until every registration has reached the mocks. A registration that fails (an input that
 * cannot be serialized, an apply that throws) never signals its end: its error surfaces only as
 * an unhandled rejection, which is thrown here instead, so that the evaluation ends and the next
 * one can start.
 */
async function registrationsDone(): Promise<void> {
  let fail: (reason: unknown) => void = () => {};
  const failed = new Promise<never>((_, reject) => {
    fail = reject;
  });
  process.on("unhandledRejection", fail);
  try {
    await Promise.race([settings.waitForRPCs(), failed]);
  } finally {
    process.off("unhandledRejection", fail);
  }
}

/** An Output's value; Outputs expose it only internally. */
export function promiseOf<T>(output: pulumi.Output<T>): Promise<T> {
  return (output as unknown as { promise(): Promise<T> }).promise();
}
