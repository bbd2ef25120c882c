import { readFileSync } from "node:fs";
import { Queue, QueueEvents } from "bullmq";
import type { Redis } from "ioredis";
import { fromRepoRoot } from "../../infra/service-builds.js";
import { type Child, startChild, waitFor } from "../lib/processes.js";
import {
  type BenchRedis,
  redisDataBytes,
  redisServerVersion,
  startRedis,
} from "../lib/redis-server.js";
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

class BullmqDeployment implements Deployment {
  readonly pids: Deployment["pids"];
  private events: QueueEvents | undefined;

  private readonly connection: Redis;

  constructor(
    private readonly redis: BenchRedis,
    private readonly workers: readonly Child[],
    private readonly queue: Queue,
  ) {
    this.connection = redis.connection;
    this.pids = {
      broker: [redis.child.pid],
      redis: redis.child.pid,
      workers: workers.map((worker) => worker.pid),
    };
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
    const redis = await redisDataBytes(this.connection);
    return { bytes: redis.used, detailBytes: redis.rss };
  }

  async stop(): Promise<void> {
    await Promise.all(this.workers.map((worker) => worker.stop("SIGTERM", 10_000)));
    await this.events?.close();
    await this.queue.close();
    await this.redis.stop();
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
    const redis = await startRedis();
    const { connection, port } = redis;
    const workers: Child[] = [];
    let queue: Queue | undefined;
    try {
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
      await Promise.all(workers.map((child) => child.stop("SIGKILL")));
      await queue?.close().catch(() => undefined);
      await redis.stop();
      throw error;
    }
    return new BullmqDeployment(redis, workers, queue);
  },
};
