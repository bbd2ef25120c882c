/**
 * The real Pulumi engine against a real Kubernetes API server, for `npm run test:e2e`.
 *
 * Two ways to get them:
 * - `toolchain` (the default; CI): the Pulumi CLI, its language host, the provider plugins and a
 *   control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok as the
 *   kubelet of a fake node) built from the Go module proxy by `test/e2e/toolchain/build.sh` and
 *   started by `test/e2e/cluster.sh`. Plugins go into a PULUMI_HOME of the run's own, installed
 *   from those binaries at exactly the version each npm package asks for; nothing is downloaded.
 * - `kind` (`TASKFLEET_E2E_CLUSTER=kind`): the machine's own `pulumi`, `kind` and Docker (a
 *   laptop, GitHub's runners); the engine fetches its plugins as it does for users, and pods run
 *   for real on a kind cluster made for the run.
 *
 * Either way the program runs from a copy of the repository (so a test can change a service's
 * source), with a local file backend and a stack of its own that deploys to the cluster as an
 * `existing` kubeconfig context.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { repoRoot } from "../../infra/service-builds";

export type ClusterMode = "toolchain" | "kind";

/** One step of `pulumi preview --json`, as far as the tests read it. */
export interface PreviewStep {
  op: string;
  urn: string;
  /** `type` of the resource, e.g. `kubernetes:apps/v1:Deployment`. */
  type: string;
  /** The logical name, the last part of the URN. */
  name: string;
}

/** What a test needs to drive the engine and look at the cluster. */
export interface E2eEnvironment {
  mode: ClusterMode;
  /** The repository copy the program runs from. */
  projectDir: string;
  /** The stack's name (its file is `Pulumi.<stack>.yaml` in the copy). */
  stack: string;
  /** The namespace the stack deploys into. */
  namespace: string;
  /** Environment for every `pulumi` and `kubectl` run. */
  env: NodeJS.ProcessEnv;
  /** `pulumi …` in the project copy; throws with the command's output when it fails. */
  pulumi(args: string[], options?: { allowFailure?: boolean }): CommandResult;
  /** `kubectl …` against the cluster. */
  kubectl(args: string[], options?: { allowFailure?: boolean; input?: string }): CommandResult;
  /** The steps `pulumi preview` would take, with `same` steps left out. */
  previewChanges(): PreviewStep[];
  /** Stops what `setUp` started and removes every temporary file. */
  tearDown(): void;
}

export interface CommandResult {
  status: number;
  stdout: string;
  stderr: string;
}

function run(
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  options: { cwd?: string; allowFailure?: boolean; input?: string; timeoutMs?: number } = {},
): CommandResult {
  const started = Date.now();
  const result = spawnSync(command, args, {
    cwd: options.cwd,
    env,
    input: options.input,
    encoding: "utf8",
    maxBuffer: 256 * 1024 * 1024,
    timeout: options.timeoutMs ?? 15 * 60_000,
  });
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  // `config set --secret <key> <value>`: the value stays out of the log.
  const shown = args.map((arg, i) => (args[i - 2] === "--secret" ? "[secret]" : arg));
  const line = `${path.basename(command)} ${shown.join(" ")}`;
  if (result.error) throw new Error(`${line}: ${result.error.message}`);
  const status = result.status ?? 128;
  process.stderr.write(`# e2e: ${line} → ${status} (${seconds}s)\n`);
  if (status !== 0 && !options.allowFailure) {
    throw new Error(`${line} exited ${status}\n${result.stdout}\n${result.stderr}`);
  }
  return { status, stdout: result.stdout, stderr: result.stderr };
}

function onPath(command: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${command}`], { stdio: "ignore" }).status === 0;
}

/**
 * The provider plugins the program's packages ask the engine for: `name` and `version` from each
 * installed `@pulumi/*` package's own `pulumi` field or install script, the one source of truth.
 */
export function requestedPlugins(packages: readonly string[]): { name: string; version: string }[] {
  return packages.map((pkg) => {
    const manifest = JSON.parse(
      readFileSync(path.join(repoRoot, "node_modules", pkg, "package.json"), "utf8"),
    ) as { name: string; version: string; pulumi?: { name?: string; version?: string } };
    return {
      name: manifest.pulumi?.name ?? pkg.replace(/^@pulumi\//, ""),
      version: (manifest.pulumi?.version ?? manifest.version).replace(/^v/, ""),
    };
  });
}

/**
 * The packages whose plugins the toolchain builds from the Go module proxy. The local stacks also
 * register resources of `@pulumi/random` (generated tokens), `@pulumi/docker` (image builds) and
 * `@pulumi/command` (kind and image loading), whose providers the proxy does not serve (the
 * README's Testing section names each module and error), so a toolchain run configures what
 * avoids them: tokens set as secrets, prebuilt image references, an `existing` cluster.
 */
export const toolchainPluginPackages = ["@pulumi/kubernetes"] as const;

/** Copies what git tracks (and new files it does not ignore) into `into`, and links node_modules. */
function copyProject(into: string): void {
  const files = execFileSync(
    "git",
    ["ls-files", "-z", "--cached", "--others", "--exclude-standard"],
    {
      cwd: repoRoot,
      encoding: "utf8",
    },
  )
    .split("\0")
    .filter((file) => file !== "" && existsSync(path.join(repoRoot, file)));
  for (const file of files) {
    mkdirSync(path.dirname(path.join(into, file)), { recursive: true });
    cpSync(path.join(repoRoot, file), path.join(into, file));
  }
  symlinkSync(path.join(repoRoot, "node_modules"), path.join(into, "node_modules"));
}

/** Which of the two ways this run uses: `TASKFLEET_E2E_CLUSTER=kind`, or the toolchain. */
export const clusterMode: ClusterMode =
  process.env.TASKFLEET_E2E_CLUSTER === "kind" ? "kind" : "toolchain";

/**
 * Starts the cluster, prepares the engine and the stack. `stackConfig` holds the stack file's
 * `taskfleet:` keys besides `cluster` and `kubeContext`, which this sets; `secrets` are set with
 * `pulumi config set --secret`, as a user sets them.
 */
export function setUp(
  stackConfig: Record<string, string>,
  secrets: Record<string, string> = {},
): E2eEnvironment {
  const mode = clusterMode;
  const work = mkdtempSync(path.join(tmpdir(), "taskfleet-e2e-"));
  const projectDir = path.join(work, "project");
  const stack = "e2e";
  const namespace = "taskfleet-e2e";
  const cleanups: (() => void)[] = [() => rmSync(work, { recursive: true, force: true })];
  const tearDown = () => {
    for (const cleanup of cleanups.reverse()) {
      try {
        cleanup();
      } catch (error) {
        process.stderr.write(`# e2e: clean-up: ${String(error)}\n`);
      }
    }
  };

  try {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      PULUMI_SKIP_UPDATE_CHECK: "true",
      PULUMI_CONFIG_PASSPHRASE: randomBytes(16).toString("hex"),
      // No browser, no prompts, no colour codes in what the tests read.
      PULUMI_NON_INTERACTIVE: "true",
      NO_COLOR: "1",
    };
    let kubeContext: string;
    let imageLoadCommand = "";

    if (mode === "toolchain") {
      const bin = run(path.join(__dirname, "toolchain", "build.sh"), [], env, {
        timeoutMs: 80 * 60_000,
      })
        .stdout.trim()
        .split("\n")
        .pop() as string;
      env.PATH = `${bin}:${env.PATH}`;
      env.TASKFLEET_TOOLCHAIN_BIN = bin;
      // Plugins only from the binaries built here: a missing one fails instead of downloading.
      env.PULUMI_HOME = path.join(work, "pulumi-home");
      env.PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION = "true";
      for (const plugin of requestedPlugins(toolchainPluginPackages)) {
        const binary = path.join(bin, `pulumi-resource-${plugin.name}`);
        run(
          "pulumi",
          ["plugin", "install", "resource", plugin.name, plugin.version, "--file", binary],
          env,
        );
      }
      const clusterDir = path.join(work, "cluster");
      const kubeconfig = run(path.join(__dirname, "cluster.sh"), ["up", clusterDir], env, {
        timeoutMs: 5 * 60_000,
      })
        .stdout.trim()
        .split("\n")
        .pop() as string;
      cleanups.push(() => run(path.join(__dirname, "cluster.sh"), ["down", clusterDir], env));
      env.KUBECONFIG = kubeconfig;
      kubeContext = "kwok-taskfleet-e2e";
    } else {
      for (const command of ["pulumi", "kind", "docker", "kubectl"]) {
        if (!onPath(command))
          throw new Error(`TASKFLEET_E2E_CLUSTER=kind needs ${command} on PATH`);
      }
      const cluster = "taskfleet-e2e";
      env.KUBECONFIG = path.join(work, "kubeconfig");
      run(
        "kind",
        ["create", "cluster", "--name", cluster, "--kubeconfig", env.KUBECONFIG, "--wait", "120s"],
        env,
      );
      cleanups.push(() => run("kind", ["delete", "cluster", "--name", cluster], env));
      kubeContext = `kind-${cluster}`;
      imageLoadCommand = `kind load docker-image --name ${cluster}`;
    }

    copyProject(projectDir);
    const config: Record<string, string> = {
      "taskfleet:cluster": "existing",
      "taskfleet:kubeContext": kubeContext,
      "taskfleet:namespace": namespace,
      ...(imageLoadCommand ? { "taskfleet:imageLoadCommand": imageLoadCommand } : {}),
      ...stackConfig,
    };
    writeFileSync(
      path.join(projectDir, `Pulumi.${stack}.yaml`),
      `config:\n${Object.entries(config)
        .map(([key, value]) => `  ${key}: ${JSON.stringify(value)}`)
        .join("\n")}\n`,
    );

    const pulumi = (args: string[], options: { allowFailure?: boolean } = {}) =>
      run("pulumi", [...args, "--non-interactive"], env, { cwd: projectDir, ...options });
    const kubectl = (args: string[], options: { allowFailure?: boolean; input?: string } = {}) =>
      run("kubectl", ["--context", kubeContext, ...args], env, options);

    mkdirSync(path.join(work, "state"));
    pulumi(["login", `file://${path.join(work, "state")}`]);
    pulumi(["stack", "init", stack]);
    for (const [key, value] of Object.entries(secrets)) {
      pulumi(["config", "set", "--secret", key, value, "--stack", stack]);
    }
    process.stderr.write(`# e2e: ${pulumi(["version"]).stdout.trim()} against ${kubeContext}\n`);

    return {
      mode,
      projectDir,
      stack,
      namespace,
      env,
      pulumi,
      kubectl,
      previewChanges() {
        const out = pulumi(["preview", "--stack", stack, "--json"]).stdout;
        const steps = (JSON.parse(out) as { steps?: { op: string; urn: string }[] }).steps ?? [];
        return steps
          .filter((step) => step.op !== "same")
          .map((step) => {
            const parts = step.urn.split("::");
            return {
              op: step.op,
              urn: step.urn,
              type: (parts[parts.length - 2] ?? "").split("$").pop() as string,
              name: parts[parts.length - 1] as string,
            };
          });
      },
      tearDown,
    };
  } catch (error) {
    tearDown();
    throw error;
  }
}
