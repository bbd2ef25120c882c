import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
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

function newestMtime(directory: string): number {
  let newest = 0;
  for (const entry of readdirSync(directory, { withFileTypes: true })) {
    const full = path.join(directory, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(full) : statSync(full).mtimeMs);
  }
  return newest;
}

/** True when the entry point is missing or older than a source file or the service's manifests. */
export function needsBuild(service: LocalService): boolean {
  const entry = fromRepoRoot(serviceEntries[service]);
  if (!existsSync(entry)) return true;
  const folder = fromRepoRoot(`services/${service}`);
  const inputs = Math.max(
    newestMtime(path.join(folder, "src")),
    statSync(path.join(folder, "package.json")).mtimeMs,
    statSync(path.join(folder, "tsconfig.json")).mtimeMs,
  );
  return statSync(entry).mtimeMs < inputs;
}

/**
 * Installs a service's dependencies if they are missing and builds it if its sources changed
 * since the last build, with the service's own `npm run build`. Throws when a step fails.
 */
export function ensureBuilt(service: LocalService, log: (line: string) => void = () => {}): void {
  const folder = fromRepoRoot(`services/${service}`);
  const steps: string[][] = [];
  if (!existsSync(path.join(folder, "node_modules"))) steps.push(["ci", "--no-audit", "--no-fund"]);
  if (steps.length > 0 || needsBuild(service)) steps.push(["run", "build"]);
  for (const args of steps) {
    log(`${service}: npm ${args.join(" ")}`);
    const result = spawnSync(npm, args, { cwd: folder, stdio: ["ignore", "pipe", "pipe"] });
    if (result.status !== 0) {
      const output = `${result.stdout?.toString() ?? ""}${result.stderr?.toString() ?? ""}`;
      throw new Error(`${service}: npm ${args.join(" ")} failed\n${output}`);
    }
  }
}

/** Starts a built service as a child process of this one, with `env` added to this environment. */
export function spawnService(
  service: LocalService,
  env: Record<string, string>,
  options: { stdio?: "inherit" | "pipe"; detached?: boolean } = {},
): ChildProcess {
  return spawn(process.execPath, [fromRepoRoot(serviceEntries[service])], {
    env: { ...process.env, ...env },
    stdio: ["ignore", options.stdio ?? "pipe", options.stdio ?? "pipe"],
    detached: options.detached ?? false,
  });
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
