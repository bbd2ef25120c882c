import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as net from "node:net";
import { createInterface } from "node:readline";
import {
  ensureBuilt,
  exited,
  type LocalService,
  productionNodeArgs,
  spawnService,
  waitUntilReady,
} from "../../scripts/local-services";
import type { TaskResponse as TaskView } from "../../services/master/src/routes/tasks.js";

/** A master or worker process of a {@link Fleet}, with its JSON log lines. */
export interface FleetProcess {
  name: string;
  child: ChildProcess;
  logs: Record<string, unknown>[];
  exited: Promise<number>;
}

export interface TaskSpec {
  type: string;
  payload: unknown;
  maxAttempts?: number;
  timeoutSeconds?: number;
}

// Every child of every fleet, so none outlives the test process, even when a test fails or throws.
const everyChild = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of everyChild) if (child.exitCode === null) child.kill("SIGKILL");
});

let built = false;

/** Builds both services if their sources changed since the last build (once per test process). */
export function buildServices(): void {
  if (built) return;
  ensureBuilt("master");
  ensureBuilt("worker");
  built = true;
}

/** A TCP port free on 127.0.0.1 right now (the kernel picks it). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Options of {@link Fleet.start}. */
export interface FleetOptions {
  /**
   * The entry point every worker of the fleet runs: by default the built service's own; a copy's
   * for a test with task types of its own (worker-copy.ts).
   */
  workerEntry?: string;
}

/**
 * Starts a built service with `env` (from `entry` when given, as the service runs otherwise) and
 * collects its JSON log lines; every such child is killed when the test process exits.
 */
export function watch(
  name: string,
  service: LocalService,
  env: Record<string, string>,
  entry?: string,
): FleetProcess {
  const child =
    entry === undefined
      ? spawnService(service, env)
      : spawn(process.execPath, [...productionNodeArgs, entry], {
          env: { ...process.env, ...env },
          stdio: ["ignore", "pipe", "pipe"],
        });
  everyChild.add(child);
  const logs: Record<string, unknown>[] = [];
  const stderr: string[] = [];
  if (child.stdout) {
    createInterface({ input: child.stdout }).on("line", (line) => {
      try {
        logs.push(JSON.parse(line));
      } catch {
        logs.push({ msg: line });
      }
    });
  }
  if (child.stderr)
    createInterface({ input: child.stderr }).on("line", (line) => stderr.push(line));
  const done = exited(child).then((code) => {
    everyChild.delete(child);
    if (code !== 0 && stderr.length > 0) logs.push({ msg: stderr.join("\n"), stderr: true });
    return code;
  });
  return { name, child, logs, exited: done };
}

/**
 * A real master and real worker processes on 127.0.0.1, started from the built services, with
 * short leases and retry backoff so failures play out in seconds.
 */
export class Fleet {
  readonly workers: FleetProcess[] = [];
  private nextWorker = 1;

  private constructor(
    readonly url: string,
    readonly master: FleetProcess,
    private readonly workerToken: string,
    private readonly options: FleetOptions,
  ) {}

  /** Builds both services if their sources changed since the last build (once per test process). */
  static build(): void {
    buildServices();
  }

  /** Builds the services if needed, starts a master and waits until it is ready. */
  static async start(
    masterEnv: Record<string, string> = {},
    options: FleetOptions = {},
  ): Promise<Fleet> {
    Fleet.build();
    const port = await freePort();
    const workerToken = randomBytes(16).toString("hex");
    const master = watch("master", "master", {
      PORT: String(port),
      HOST: "127.0.0.1",
      WORKER_TOKEN: workerToken,
      LEASE_SECONDS: "2",
      RETRY_BACKOFF_MS: "20",
      LOG_LEVEL: "warn",
      ...masterEnv,
    });
    const url = `http://127.0.0.1:${port}`;
    await waitUntilReady(`${url}/readyz`, master.child);
    return new Fleet(url, master, workerToken, options);
  }

  /** Starts a worker and waits until it has logged that it runs. */
  async addWorker(env: Record<string, string> = {}): Promise<FleetProcess> {
    const worker = startWorker(
      `worker-${this.nextWorker++}`,
      this.url,
      this.workerToken,
      env,
      this.options.workerEntry,
    );
    this.workers.push(worker.process);
    await worker.started;
    return worker.process;
  }

  /** Every process still running gets SIGKILL: a test's end needs no graceful shutdown. */
  async stop(): Promise<void> {
    const all = [this.master, ...this.workers];
    for (const { child } of all) if (child.exitCode === null) child.kill("SIGKILL");
    await Promise.all(all.map((process) => process.exited));
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const response = await fetch(`${this.url}${path}`, {
      method,
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(15_000),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${path} answered ${response.status}: ${text}`);
    return (text.startsWith("{") || text.startsWith("[") ? JSON.parse(text) : text) as T;
  }

  async submit(tasks: TaskSpec[]): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < tasks.length; i += 1000) {
      const answer = await this.request<{ ids: string[] }>("POST", "/v1/tasks/batch", {
        tasks: tasks.slice(i, i + 1000),
      });
      ids.push(...answer.ids);
    }
    return ids;
  }

  task(id: string): Promise<TaskView> {
    return this.request<TaskView>("GET", `/v1/tasks/${id}`);
  }

  stats(): Promise<Record<string, number>> {
    return this.request("GET", "/v1/stats");
  }

  /** Waits until `count` tasks have finished (succeeded or failed). */
  async waitForFinished(count: number, timeoutMs = 20_000): Promise<void> {
    let last: Record<string, number> = {};
    await until(
      async () => {
        last = await this.stats();
        return (last.succeeded ?? 0) + (last.failed ?? 0) >= count;
      },
      timeoutMs,
      () => `stats: ${JSON.stringify(last)}`,
    );
  }

  /** The sum of a Prometheus metric's samples whose labels include `labels`. */
  async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    const text = await this.request<string>("GET", "/metrics");
    let sum = 0;
    for (const line of text.split("\n")) {
      const match = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$/.exec(line);
      if (!match || match[1] !== name) continue;
      const labelText = match[2] ?? "";
      const wanted = Object.entries(labels).every(([key, value]) =>
        labelText.includes(`${key}="${value}"`),
      );
      if (wanted) sum += Number(match[3]);
    }
    return sum;
  }
}

/** Resolves once `predicate` holds, checking every 20 ms; rejects after `timeoutMs`. */
export async function until(
  predicate: () => boolean | Promise<boolean>,
  timeoutMs: number,
  describe: () => string = () => "",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline)
      throw new Error(`condition not met in ${timeoutMs} ms ${describe()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Log lines of `process` with message `msg` about task `taskId`. */
/**
 * A worker process named `name` (its WORKER_ID too) of the built service (or run from `entry`),
 * sending to `masterUrl`, logging at debug; `started` settles once it has logged that it runs.
 */
export function startWorker(
  name: string,
  masterUrl: string,
  workerToken: string,
  env: Record<string, string> = {},
  entry?: string,
): { process: FleetProcess; started: Promise<void> } {
  const worker = watch(
    name,
    "worker",
    {
      MASTER_URL: masterUrl,
      WORKER_TOKEN: workerToken,
      WORKER_ID: name,
      LOG_LEVEL: "debug",
      ...env,
    },
    entry,
  );
  const started = until(
    () => worker.logs.some((line) => line.msg === "worker started"),
    10_000,
    () => JSON.stringify(worker.logs),
  );
  return { process: worker, started };
}

export function taskLogs(process: FleetProcess, msg: string, taskId: string) {
  return process.logs.filter((line) => line.msg === msg && line.taskId === taskId);
}
