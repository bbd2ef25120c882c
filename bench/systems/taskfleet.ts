import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { fromRepoRoot } from "../../infra/service-builds.js";
import { productionNodeArgs } from "../../scripts/local-services.js";
import { JsonClient } from "../lib/http-client.js";
import { type Child, freePort, residentBytes, startChild, waitFor } from "../lib/processes.js";
import { type BenchRedis, redisDataBytes, startRedis } from "../lib/redis-server.js";
import {
  checkResult,
  type Deployment,
  type MemorySample,
  type StartOptions,
  type System,
  type TaskSpec,
} from "./system.js";

const masterEntry = fromRepoRoot("services/master/dist/server.js");
const workerEntry = fromRepoRoot("services/worker/dist/main.js");
const memoryProbe = fromRepoRoot("bench/lib/memory-probe.cjs");

/** How long `GET /v1/tasks/:id?waitSeconds=` may hold one request. */
const WAIT_SECONDS = 10;

/**
 * Builds both services from their sources (incremental `tsc -b`: quick when nothing changed), so
 * the benchmark always measures the code in the tree and never a stale `dist/`.
 */
export function buildTaskfleet(): void {
  // One npm workspace: the services' dependencies are installed at the root.
  if (!existsSync(fromRepoRoot("node_modules/.bin/tsc"))) {
    throw new Error("node_modules is missing: run `npm ci` at the repository root first");
  }
  for (const service of ["master", "worker"]) {
    const dir = fromRepoRoot(`services/${service}`);
    const built = spawnSync("npm", ["run", "--silent", "build", "--prefix", dir], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    });
    if (built.status !== 0) {
      throw new Error(`building services/${service} failed:\n${built.stdout}${built.stderr}`);
    }
  }
}

interface StatsBody {
  succeeded: number;
  failed: number;
  activeWorkers: number;
}

function parseStats(body: unknown): StatsBody {
  const stats = body as Partial<Record<keyof StatsBody, unknown>>;
  for (const key of ["succeeded", "failed", "activeWorkers"] as const) {
    if (typeof stats?.[key] !== "number") {
      throw new Error(`GET /v1/stats has no numeric "${key}": ${JSON.stringify(body)}`);
    }
  }
  return stats as StatsBody;
}

/** An environment with only what the process needs, so the caller's own settings cannot leak in. */
function childEnv(vars: Record<string, string>): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? "/usr/bin:/bin", ...vars };
}

class TaskfleetDeployment implements Deployment {
  readonly pids: Deployment["pids"];

  constructor(
    private readonly master: Child,
    private readonly workers: readonly Child[],
    private readonly client: JsonClient,
    private readonly redis: BenchRedis | undefined,
  ) {
    const workerPids = workers.map((worker) => worker.pid);
    this.pids =
      redis === undefined
        ? { broker: [master.pid], workers: workerPids }
        : { broker: [master.pid, redis.child.pid], redis: redis.child.pid, workers: workerPids };
  }

  async submitBatch(tasks: readonly TaskSpec[]): Promise<string[]> {
    const body = (await this.client.expect([202], "POST", "/v1/tasks/batch", { tasks })) as {
      ids?: string[];
    };
    if (body.ids?.length !== tasks.length) {
      throw new Error(`batch of ${tasks.length} answered ${body.ids?.length ?? "no"} ids`);
    }
    return body.ids;
  }

  async finishTimes(ids: readonly string[], tasks: readonly TaskSpec[]): Promise<number[]> {
    const times: number[] = [];
    for (const [i, id] of ids.entries()) {
      const view = (await this.client.expect(
        [200],
        "GET",
        `/v1/tasks/${encodeURIComponent(id)}`,
      )) as {
        status: string;
        result?: unknown;
        finishedAt?: string;
      };
      if (view.status !== "succeeded" || view.finishedAt === undefined) {
        throw new Error(`task ${id} is ${view.status}, not succeeded`);
      }
      checkResult(tasks[i], view.result);
      times.push(Date.parse(view.finishedAt));
    }
    return times;
  }

  async finished(): Promise<number> {
    const stats = parseStats(await this.client.expect([200], "GET", "/v1/stats"));
    if (stats.failed > 0) throw new Error(`${stats.failed} taskfleet task(s) failed`);
    return stats.succeeded;
  }

  /** Submit and wait in one request (`POST /v1/tasks?waitSeconds=`), as a client would. */
  async runOne(task: TaskSpec): Promise<void> {
    const view = (await this.client.expect(
      [202],
      "POST",
      `/v1/tasks?waitSeconds=${WAIT_SECONDS}`,
      task,
      (WAIT_SECONDS + 5) * 1000,
    )) as { id: string; status: string; result?: unknown; error?: string };
    if (view.status !== "succeeded") {
      throw new Error(
        `task ${view.id} is ${view.status} after ${WAIT_SECONDS}s: ${view.error ?? ""}`,
      );
    }
    checkResult(task, view.result);
  }

  async memory(): Promise<MemorySample> {
    const usage = await settleMaster(this.master);
    if (this.redis === undefined) {
      return { bytes: await residentBytes(this.master.pid), detailBytes: usage.heapUsed };
    }
    // The tasks are in Redis; the master's own RSS shows that it holds nothing per task itself.
    const redis = await redisDataBytes(this.redis.connection);
    return { bytes: redis.used, detailBytes: await residentBytes(this.master.pid) };
  }

  async stop(): Promise<void> {
    // Workers first, so none is left polling a master that is gone; Redis last.
    await Promise.all(this.workers.map((worker) => worker.stop("SIGTERM", 10_000)));
    await this.master.stop("SIGTERM", 10_000);
    this.client.close();
    await this.redis?.stop();
  }
}

/** Asks the preloaded memory probe in the master for its memory use after a full GC. */
function settleMaster(master: Child): Promise<NodeJS.MemoryUsage> {
  const REQUEST = "taskfleet-bench:memory";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      master.process.off("message", onMessage);
      reject(new Error("the master did not answer the memory probe within 30 s"));
    }, 30_000);
    const onMessage = (message: unknown) => {
      const reply = message as { type?: string; usage?: NodeJS.MemoryUsage };
      if (reply?.type !== REQUEST || reply.usage === undefined) return;
      clearTimeout(timer);
      master.process.off("message", onMessage);
      resolve(reply.usage);
    };
    master.process.on("message", onMessage);
    master.process.send({ type: REQUEST });
  });
}

/** Starts so far, to name CPU profiles apart. */
let runs = 0;

/** Where the master keeps its tasks: `STORE` (packages/protocol/src/master-env.ts). */
export type StoreKind = "memory" | "redis";

/**
 * taskfleet with the given store. With `redis`, every start brings up a fresh redis-server of its
 * own (bench/lib/redis-server.ts: the same settings as BullMQ's) and points the master at it with
 * `STORE=redis`; the workers and the client are the same either way.
 */
function taskfleetOn(store: StoreKind): System {
  return {
    name: store === "memory" ? "taskfleet" : "taskfleetRedis",
    label: store === "memory" ? "taskfleet" : "taskfleet on Redis",

    async versions() {
      const pkg = JSON.parse(readFileSync(fromRepoRoot("package.json"), "utf8")) as {
        version: string;
      };
      return { taskfleet: pkg.version };
    },

    async start(options: StartOptions): Promise<Deployment> {
      const redis = store === "redis" ? await startRedis() : undefined;
      const port = await freePort();
      const workerToken = randomBytes(18).toString("base64url");
      // As in the images: @taskfleet/protocol resolves to its compiled output.
      const nodeArgs: string[] = [...productionNodeArgs];
      if (options.measureMemory) nodeArgs.push("--expose-gc", "--require", memoryProbe);
      const run = ++runs;
      const profile = (role: string) =>
        options.profileDir === undefined
          ? []
          : [
              "--cpu-prof",
              `--cpu-prof-dir=${options.profileDir}`,
              `--cpu-prof-name=${role}${store === "redis" ? "-redis" : ""}.run${run}.${process.pid}.cpuprofile`,
            ];
      nodeArgs.push(...profile("master"));
      const master = startChild("taskfleet master", process.execPath, [...nodeArgs, masterEntry], {
        env: childEnv({
          PORT: String(port),
          HOST: "127.0.0.1",
          WORKER_TOKEN: workerToken,
          // Per-request logs would measure the terminal, not the master; BullMQ logs nothing either.
          LOG_LEVEL: "warn",
          SHUTDOWN_GRACE_SECONDS: "2",
          ...(redis === undefined ? {} : { STORE: "redis", REDIS_URL: redis.url }),
        }),
        stdio: options.measureMemory ? ["ignore", "pipe", "pipe", "ipc"] : "pipe",
      });
      const url = new URL(`http://127.0.0.1:${port}`);
      const client = new JsonClient(url);
      const workers: Child[] = [];
      try {
        await waitFor(
          "the taskfleet master's /readyz",
          async () => (await client.request("GET", "/readyz")).status === 200,
          { child: master },
        );
        for (let i = 0; i < options.workers; i++) {
          workers.push(
            startChild(
              `taskfleet worker ${i + 1}`,
              process.execPath,
              [...productionNodeArgs, ...profile("worker"), workerEntry],
              {
                env: childEnv({
                  MASTER_URL: url.origin,
                  WORKER_TOKEN: workerToken,
                  CONCURRENCY: String(options.concurrency),
                  WORKER_ID: `bench-worker-${i + 1}`,
                  LOG_LEVEL: "warn",
                  SHUTDOWN_GRACE_SECONDS: "2",
                }),
              },
            ),
          );
        }
        for (const worker of workers) {
          await waitFor(
            `${options.workers} taskfleet worker(s) polling the master`,
            async () =>
              parseStats(await client.expect([200], "GET", "/v1/stats")).activeWorkers >=
              options.workers,
            { child: worker },
          );
        }
      } catch (error) {
        await Promise.all([...workers, master].map((child) => child.stop("SIGKILL")));
        client.close();
        await redis?.stop();
        throw error;
      }
      return new TaskfleetDeployment(master, workers, client, redis);
    },
  };
}

/** taskfleet with its memory store (the default, `STORE=memory`). */
export const taskfleet: System = taskfleetOn("memory");
/** taskfleet with its Redis store (`STORE=redis`). */
export const taskfleetRedis: System = taskfleetOn("redis");
