/**
 * A BullMQ worker process for the benchmark: the counterpart of one taskfleet worker process. It
 * runs taskfleet's own task handlers (payload check included), so both systems do the same work
 * per task and differ only in how tasks reach the workers and results get back.
 *
 * Environment: REDIS_PORT (on 127.0.0.1), QUEUE_NAME, CONCURRENCY. It tells its parent it is ready
 * over the IPC channel, and closes the worker (letting running jobs finish) on SIGTERM.
 */
import { UnrecoverableError, Worker } from "bullmq";
import { Redis } from "ioredis";
import type { TaskHandler } from "../../services/worker/src/task.js";
import cpu from "../../services/worker/src/tasks/cpu.js";
import echo from "../../services/worker/src/tasks/echo.js";

const handlers: Record<string, TaskHandler<unknown>> = {
  echo: echo as TaskHandler<unknown>,
  cpu: cpu as TaskHandler<unknown>,
};

function intFromEnv(name: string, min: number, max: number): number {
  const raw = process.env[name];
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new Error(
      `${name} must be an integer from ${min} to ${max} (got ${JSON.stringify(raw)})`,
    );
  }
  return value;
}

const port = intFromEnv("REDIS_PORT", 1, 65_535);
const concurrency = intFromEnv("CONCURRENCY", 1, 256);
const queueName = process.env.QUEUE_NAME ?? "bench";

// BullMQ's workers block on Redis, so the connection must retry forever rather than fail requests.
const connection = new Redis({ host: "127.0.0.1", port, maxRetriesPerRequest: null });

const worker = new Worker(
  queueName,
  async (job, _token, signal) => {
    const handler = handlers[job.name];
    if (handler === undefined) throw new UnrecoverableError(`unknown task type "${job.name}"`);
    const parsed = handler.payload.safeParse(job.data);
    if (!parsed.success) throw new UnrecoverableError(`bad payload: ${parsed.error.message}`);
    return handler.run(parsed.data, {
      signal: signal ?? new AbortController().signal,
      id: job.id ?? "",
      attempt: job.attemptsMade + 1,
    });
  },
  { connection, concurrency },
);

worker.on("error", (error) => process.stderr.write(`bullmq worker error: ${error.message}\n`));

let closing = false;
async function shutdown(): Promise<void> {
  if (closing) return;
  closing = true;
  await worker.close();
  await connection.quit();
  process.exit(0);
}
process.on("SIGTERM", () => void shutdown());
process.on("SIGINT", () => void shutdown());

await worker.waitUntilReady();
process.send?.({ type: "ready" });
