import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import * as path from "node:path";
import type { TestContext } from "node:test";

const repoRoot = path.resolve(import.meta.dirname, "../../..");
const serverSource = path.join(repoRoot, "services/master/src/server.ts");

export async function freePort(): Promise<number> {
  const probe = createServer();
  probe.listen(0, "127.0.0.1");
  await once(probe, "listening");
  const address = probe.address();
  probe.close();
  if (address === null || typeof address === "string") throw new Error("no port");
  return address.port;
}

/** A master process started from its TypeScript source, with its output kept. */
export interface MasterProcess {
  child: ChildProcess;
  /** `http://127.0.0.1:<port>`; set when started by {@link runMaster}. */
  base: string;
  port: number;
  lines: () => Record<string, unknown>[];
  stderr: () => string;
}

export function startMaster(env: Record<string, string>): MasterProcess {
  const child = spawn(process.execPath, ["--import", "tsx", serverSource], {
    cwd: repoRoot,
    env: { PATH: process.env.PATH ?? "", LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout?.on("data", (chunk) => {
    out += chunk;
  });
  child.stderr?.on("data", (chunk) => {
    err += chunk;
  });
  const port = Number(env.PORT ?? 8080);
  return {
    child,
    port,
    base: `http://127.0.0.1:${port}`,
    lines: () =>
      out
        .split("\n")
        .filter((line) => line.startsWith("{"))
        .map((line) => JSON.parse(line) as Record<string, unknown>),
    stderr: () => err,
  };
}

export async function waitFor(
  check: () => boolean,
  what: string,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** A master on a free loopback port, ready to serve, killed when the test ends. */
export async function runMaster(
  t: TestContext,
  env: Record<string, string>,
): Promise<MasterProcess> {
  const port = await freePort();
  const master = startMaster({ HOST: "127.0.0.1", ...env, PORT: String(port) });
  t.after(() => {
    master.child.kill("SIGKILL");
  });
  await waitFor(
    () =>
      master.lines().some((line) => line.msg === "master ready") || master.child.exitCode !== null,
    "the master to be ready",
  );
  if (master.child.exitCode !== null) {
    throw new Error(`the master exited with ${master.child.exitCode}: ${master.stderr()}`);
  }
  return master;
}

/** The resident set of a process in bytes, from /proc (Linux). */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  if (match === null) throw new Error(`no VmRSS for process ${pid}`);
  return Number(match[1]) * 1024;
}
