import { type ChildProcess, type SpawnOptions, spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { readFile } from "node:fs/promises";
import * as net from "node:net";

/** How many of a child's last output lines are kept, to explain a crash. */
const TAIL_LINES = 40;

/** A child process started by the benchmark, with the tail of its output. */
export class Child {
  readonly process: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly tail: string[] = [];
  private exitedFlag = false;

  constructor(
    readonly name: string,
    command: string,
    args: readonly string[],
    options: SpawnOptions,
  ) {
    this.process = spawn(command, args, { ...options, stdio: options.stdio ?? "pipe" });
    this.exited = new Promise((resolve) => {
      this.process.once("exit", (code, signal) => {
        this.exitedFlag = true;
        resolve({ code, signal });
      });
    });
    this.process.once("error", (error) => this.remember(`spawn failed: ${error.message}`));
    for (const stream of [this.process.stdout, this.process.stderr]) {
      stream?.setEncoding("utf8");
      stream?.on("data", (chunk: string) => {
        for (const line of chunk.split("\n")) if (line.trim() !== "") this.remember(line);
      });
    }
  }

  get pid(): number {
    if (this.process.pid === undefined) throw new Error(`${this.name} has no pid (did not start)`);
    return this.process.pid;
  }

  get hasExited(): boolean {
    return this.exitedFlag;
  }

  /** The child's last output lines, for an error message. */
  output(): string {
    return this.tail.join("\n");
  }

  /** Signals the child and waits for it to exit; SIGKILL if it has not after `timeoutMs`. */
  async stop(signal: NodeJS.Signals = "SIGTERM", timeoutMs = 5_000): Promise<void> {
    if (this.exitedFlag) return;
    this.process.kill(signal);
    const timer = setTimeout(() => this.process.kill("SIGKILL"), timeoutMs);
    try {
      await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  private remember(line: string): void {
    this.tail.push(line.length > 500 ? `${line.slice(0, 500)}…` : line);
    if (this.tail.length > TAIL_LINES) this.tail.shift();
  }
}

const running = new Set<Child>();
let hooksInstalled = false;

/**
 * Starts a child that the benchmark owns: whatever happens (an error, Ctrl-C, a normal end), it is
 * stopped before the benchmark exits.
 */
export function startChild(
  name: string,
  command: string,
  args: readonly string[],
  options: SpawnOptions = {},
): Child {
  installExitHooks();
  const child = new Child(name, command, args, options);
  running.add(child);
  void child.exited.then(() => running.delete(child));
  return child;
}

/** Stops every child still running (SIGTERM, then SIGKILL after the timeout). */
export async function stopAllChildren(timeoutMs = 5_000): Promise<void> {
  await Promise.all([...running].map((child) => child.stop("SIGTERM", timeoutMs)));
}

function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  // Last resort when the benchmark exits without stopping its children (an uncaught error).
  process.once("exit", () => {
    for (const child of running) child.process.kill("SIGKILL");
  });
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => {
      process.stderr.write(`\nbench: ${signal}, stopping ${running.size} child process(es)\n`);
      void stopAllChildren(2_000).finally(() => process.exit(130));
    });
  }
}

/** A TCP port on 127.0.0.1 that nothing listens on at the moment of the call. */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  server.close();
  await once(server, "close");
  if (address === null || typeof address === "string") throw new Error("no port from the kernel");
  return address.port;
}

/**
 * Calls `probe` until it returns true, every `intervalMs`, for at most `timeoutMs`; fails with
 * `what` (and the child's output when one is given and has died) when time runs out.
 */
export async function waitFor(
  what: string,
  probe: () => Promise<boolean>,
  {
    timeoutMs = 15_000,
    intervalMs = 20,
    child,
  }: { timeoutMs?: number; intervalMs?: number; child?: Child } = {},
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (child?.hasExited) {
      throw new Error(`${child.name} exited while waiting for ${what}:\n${child.output()}`);
    }
    if (await probe().catch(() => false)) return;
    if (performance.now() > deadline) {
      const tail = child ? `\n${child.name} output:\n${child.output()}` : "";
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${tail}`);
    }
    await sleep(intervalMs);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

let ticksPerSecond: number | undefined;

/**
 * CPU time (user + system) a process has used so far, in seconds, from /proc (Linux). Unlike wall
 * time it barely moves when other programs compete for the CPU, so it compares systems fairly on
 * a busy machine.
 */
export async function cpuSeconds(pid: number): Promise<number> {
  ticksPerSecond ??= Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout) || 100;
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name, which is in parentheses and may itself contain spaces.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
}

/** Resident set size of a process in bytes, from /proc (Linux). */
export async function residentBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
  if (!match) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(match[1]) * 1024;
}
