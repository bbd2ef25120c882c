import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import * as path from "node:path";
import { fromRepoRoot } from "../infra/service-builds";

/** The services that run as plain Node processes on this machine. */
export type LocalService = "master" | "worker";

/** Each service's built entry point, relative to the repository root. */
export const serviceEntries: Record<LocalService, string> = {
  master: "services/master/dist/server.js",
  worker: "services/worker/dist/main.js",
};

const npm = process.platform === "win32" ? "npm.cmd" : "npm";

/** The protocol package, which every service's build compiles too. */
const protocolFolder = fromRepoRoot("packages/protocol");

/** The files a package's build reads, absolute: its sources and its manifests. */
function buildInputs(folder: string): string[] {
  const walk = (relative: string): string[] =>
    readdirSync(path.join(folder, relative), { withFileTypes: true }).flatMap((entry) => {
      const child = path.join(relative, entry.name);
      return entry.isDirectory() ? walk(child) : [child];
    });
  return [...walk("src"), "package.json", "tsconfig.json"].sort().map((f) => path.join(folder, f));
}

/**
 * A digest of what a service's build reads: its own inputs and the protocol package's. Contents,
 * not timestamps: tsc does not rewrite output that did not change, so a touched source would
 * otherwise look newer than its build forever.
 */
export function buildInputsDigest(folder: string): string {
  const hash = createHash("sha256");
  for (const file of [...buildInputs(folder), ...buildInputs(protocolFolder)]) {
    hash
      .update(`${path.relative(folder, file)}\0`)
      .update(readFileSync(file))
      .update("\0");
  }
  return hash.digest("hex");
}

/** Where a build records the digest of the inputs it was made from. */
const buildStamp = "dist/.build-inputs";

/** True when the service in `folder` has no build of its current sources at `entry`. */
export function needsBuildIn(folder: string, entry: string): boolean {
  const stamp = path.join(folder, buildStamp);
  if (!existsSync(path.join(folder, entry)) || !existsSync(stamp)) return true;
  return readFileSync(stamp, "utf8") !== buildInputsDigest(folder);
}

/** Records that the build in `folder` is of its current sources. */
export function markBuilt(folder: string): void {
  writeFileSync(path.join(folder, buildStamp), buildInputsDigest(folder));
}

/**
 * Builds a service (and the protocol package it uses) if its sources changed since the last
 * build, with the service's own `npm run build`; the workspace's `npm ci` installed what it
 * needs. Throws when the build fails.
 */
export function ensureBuilt(service: LocalService, log: (line: string) => void = () => {}): void {
  const folder = fromRepoRoot(`services/${service}`);
  const steps: string[][] = [];
  const entry = path.relative(folder, fromRepoRoot(serviceEntries[service]));
  if (needsBuildIn(folder, entry)) steps.push(["run", "build"]);
  for (const args of steps) {
    log(`${service}: npm ${args.join(" ")}`);
    const result = spawnSync(npm, args, { cwd: folder, stdio: ["ignore", "pipe", "pipe"] });
    if (result.status !== 0) {
      const output = `${result.stdout?.toString() ?? ""}${result.stderr?.toString() ?? ""}`;
      throw new Error(`${service}: npm ${args.join(" ")} failed\n${output}`);
    }
  }
  if (steps.length > 0) markBuilt(folder);
}

/**
 * How a built service runs, as in its image: the `production` condition makes
 * `@taskfleet/protocol/*` resolve to its compiled output instead of its TypeScript source.
 */
export const productionNodeArgs = ["--conditions=production"];

/** Starts a built service as a child process of this one, with `env` added to this environment. */
export function spawnService(
  service: LocalService,
  env: Record<string, string>,
  options: { stdio?: "inherit" | "pipe"; detached?: boolean } = {},
): ChildProcess {
  return spawn(process.execPath, [...productionNodeArgs, fromRepoRoot(serviceEntries[service])], {
    env: { ...process.env, ...env },
    stdio: ["ignore", options.stdio ?? "pipe", options.stdio ?? "pipe"],
    detached: options.detached ?? false,
  });
}

/**
 * Calls `stop` once for SIGINT or SIGTERM. One Ctrl+C reaches a script several times (from the
 * terminal, and relayed by npm and tsx): repeats within a second are the same press and are
 * dropped; a signal after that is a second press, and calls `stop` again with `force`.
 */
export function onStopSignal(stop: (signal: NodeJS.Signals, force: boolean) => void): void {
  let first = 0;
  const handle = (signal: NodeJS.Signals) => {
    if (first === 0) {
      first = Date.now();
      stop(signal, false);
    } else if (Date.now() - first >= 1000) {
      stop(signal, true);
    }
  };
  process.on("SIGINT", handle);
  process.on("SIGTERM", handle);
}

/** Resolves with the exit code (or 128 + signal number) once `child` has exited. */
export function exited(child: ChildProcess): Promise<number> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  if (child.signalCode !== null) return Promise.resolve(signalExitCode(child.signalCode));
  return new Promise((resolve) => {
    child.once("exit", (code, signal) => resolve(code ?? signalExitCode(signal ?? "SIGKILL")));
  });
}

function signalExitCode(signal: NodeJS.Signals): number {
  const numbers: Partial<Record<NodeJS.Signals, number>> = { SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };
  return 128 + (numbers[signal] ?? 1);
}

/**
 * Whether nothing listens on `host:port` yet. Checked before starting a master: otherwise an
 * earlier master still on the port answers the new one's readiness check while the new one dies.
 */
export function portIsFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once("error", () => resolve(false));
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => resolve(true)));
  });
}

/** Polls `url` until it answers 200, the child exits, or `timeoutMs` passes. */
export async function waitUntilReady(url: string, child: ChildProcess, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  let exitedEarly = false;
  child.once("exit", () => {
    exitedEarly = true;
  });
  while (Date.now() < deadline) {
    if (exitedEarly || child.exitCode !== null) {
      throw new Error(`the process exited (code ${child.exitCode}) before ${url} answered`);
    }
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(1000) });
      await response.arrayBuffer();
      if (response.ok) return;
    } catch {
      // Not listening yet.
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`${url} did not answer 200 within ${timeoutMs} ms`);
}
