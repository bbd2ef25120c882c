import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { Queue, QueueEvents } from "bullmq";
import { Redis } from "ioredis";
import { fromRepoRoot } from "../../infra/service-builds.js";
import { type Child, freePort, startChild, waitFor } from "../lib/processes.js";
import {
  checkResult,
  type Deployment,
  type MemorySample,
  type StartOptions,
  type System,
  type TaskSpec,
} from "./system.js";

const QUEUE_NAME = "bench";
const workerEntry = fromRepoRoot("bench/bullmq/worker.ts");
/** How long one `job.waitUntilFinished` may wait: the same bound as taskfleet's `waitSeconds`. */
const WAIT_MS = 10_000;

/** The one line to print when Redis is not installed. */
export const REDIS_MISSING =
  "redis-server not found: the benchmark runs BullMQ on a Redis it starts itself; install it with `sudo apt-get install -y redis-server` (Debian/Ubuntu) and run the benchmark again";

/** Redis's version (`redis-server --version`), or undefined when it is not installed. */
export function redisServerVersion(): string | undefined {
  const probe = spawnSync("redis-server", ["--version"], { encoding: "utf8" });
  if (probe.error !== undefined || probe.status !== 0) return undefined;
  return /v=(\S+)/.exec(probe.stdout)?.[1] ?? probe.stdout.trim();
}

function infoField(info: string, field: string): number {
  const match = new RegExp(`^${field}:(\\d+)`, "m").exec(info);
  if (!match) throw new Error(`Redis INFO has no ${field}`);
  return Number(match[1]);
}

class BullmqDeployment implements Deployment {
  readonly pids: Deployment["pids"];
  private events: QueueEvents | undefined;

  constructor(
    private readonly redis: Child,
    private readonly workers: readonly Child[],
    private readonly connection: Redis,
    private readonly queue: Queue,
  ) {
    this.pids = { broker: redis.pid, workers: workers.map((worker) => worker.pid) };
  }

  async submitBatch(tasks: readonly TaskSpec[]): Promise<string[]> {
    const jobs = await this.queue.addBulk(tasks.map((t) => ({ name: t.type, data: t.payload })));
    if (jobs.length !== tasks.length) {
      throw new Error(`addBulk of ${tasks.length} returned ${jobs.length} jobs`);
    }
    return jobs.map((job) => {
      if (job.id === undefined) throw new Error("addBulk returned a job without an id");
      return job.id;
    });
  }

  async finishTimes(ids: readonly string[], tasks: readonly TaskSpec[]): Promise<number[]> {
    const times: number[] = [];
    for (const [i, id] of ids.entries()) {
      const job = await this.queue.getJob(id);
      if (job === undefined || job.finishedOn === undefined || job.failedReason) {
        throw new Error(`job ${id} has not completed (${job?.failedReason ?? "no such job"})`);
      }
      checkResult(tasks[i], job.returnvalue);
      times.push(job.finishedOn);
    }
    return times;
  }

  async finished(): Promise<number> {
    const counts = await this.queue.getJobCounts("completed", "failed");
    if ((counts.failed ?? 0) > 0) throw new Error(`${counts.failed} BullMQ job(s) failed`);
    return counts.completed ?? 0;
  }

  async runOne(task: TaskSpec): Promise<void> {
    const events = await this.queueEvents();
    const job = await this.queue.add(task.type, task.payload);
    checkResult(task, await job.waitUntilFinished(events, WAIT_MS));
  }

  async memory(): Promise<MemorySample> {
    // used_memory is Redis's own allocator count: exact without any settling.
    const info = await this.connection.info("memory");
    return {
      bytes: infoField(info, "used_memory"),
      detailBytes: infoField(info, "used_memory_rss"),
    };
  }

  async stop(): Promise<void> {
    await Promise.all(this.workers.map((worker) => worker.stop("SIGTERM", 10_000)));
    await this.events?.close();
    await this.queue.close();
    this.connection.disconnect();
    await this.redis.stop("SIGTERM", 10_000);
  }

  /**
   * The QueueEvents that `waitUntilFinished` needs, opened on first use so that it does not
   * load Redis during the other scenarios (taskfleet's client holds no such stream open either).
   */
  private async queueEvents(): Promise<QueueEvents> {
    if (this.events === undefined) {
      // A blocking reader: BullMQ needs it to retry rather than fail; waitUntilFinished bounds it.
      this.events = new QueueEvents(QUEUE_NAME, {
        connection: this.connection.duplicate({
          maxRetriesPerRequest: null,
          commandTimeout: undefined,
        }),
      });
      await this.events.waitUntilReady();
    }
    return this.events;
  }
}

export const bullmq: System = {
  name: "bullmq",
  label: "BullMQ",

  async versions() {
    const pkg = JSON.parse(
      readFileSync(fromRepoRoot("node_modules/bullmq/package.json"), "utf8"),
    ) as {
      version: string;
    };
    return { bullmq: pkg.version, redis: redisServerVersion() ?? "missing" };
  },

  async start(options: StartOptions): Promise<Deployment> {
    const port = await freePort();
    // No persistence: neither system writes its queue to disk in this benchmark.
    const redis = startChild("redis-server", "redis-server", [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
      "--dir",
      tmpdir(),
      "--loglevel",
      "warning",
    ]);
    const connection = new Redis({
      host: "127.0.0.1",
      port,
      // The bench's own commands fail rather than wait forever if Redis dies mid-run.
      maxRetriesPerRequest: 1,
      commandTimeout: 60_000,
      lazyConnect: true,
      retryStrategy: () => 50,
    });
    // Refused connections are expected while redis-server starts; waitFor reports a real failure.
    connection.on("error", () => undefined);
    const workers: Child[] = [];
    let queue: Queue | undefined;
    try {
      await waitFor(
        "redis-server to answer PING",
        async () => {
          if (connection.status === "wait") await connection.connect();
          return (await connection.ping()) === "PONG";
        },
        { child: redis },
      );
      queue = new Queue(QUEUE_NAME, { connection });
      // The open-loop latency run has one `add` in flight per outstanding task, each listening
      // for the queue closing: hundreds at once is the intended load, not a leak.
      queue.setMaxListeners(2_000);
      await queue.waitUntilReady();
      const ready: Promise<void>[] = [];
      for (let i = 0; i < options.workers; i++) {
        const worker = startChild(
          `bullmq worker ${i + 1}`,
          process.execPath,
          ["--import", "tsx", workerEntry],
          {
            env: {
              PATH: process.env.PATH ?? "/usr/bin:/bin",
              REDIS_PORT: String(port),
              QUEUE_NAME,
              CONCURRENCY: String(options.concurrency),
            },
            cwd: fromRepoRoot("."),
            stdio: ["ignore", "pipe", "pipe", "ipc"],
          },
        );
        workers.push(worker);
        ready.push(
          new Promise<void>((resolve) =>
            worker.process.on(
              "message",
              (m: { type?: string }) => m?.type === "ready" && resolve(),
            ),
          ),
        );
      }
      let allReady = false;
      void Promise.all(ready).then(() => {
        allReady = true;
      });
      for (const worker of workers) {
        await waitFor(`${options.workers} BullMQ worker(s) ready`, async () => allReady, {
          child: worker,
          timeoutMs: 30_000,
        });
      }
    } catch (error) {
      await Promise.all([...workers, redis].map((child) => child.stop("SIGKILL")));
      await queue?.close().catch(() => undefined);
      connection.disconnect();
      throw error;
    }
    return new BullmqDeployment(redis, workers, connection, queue);
  },
};
