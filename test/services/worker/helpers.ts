import { Writable } from "node:stream";
import { createLogger } from "../../../services/worker/src/logger.js";
import { MasterClient } from "../../../services/worker/src/master-client.js";
import type { TaskHandler } from "../../../services/worker/src/task.js";
import { loadTaskRegistry } from "../../../services/worker/src/tasks/registry.js";
import { Worker, type WorkerOptions } from "../../../services/worker/src/worker.js";
import type { FakeMaster } from "./fake-master.js";

/** A pino logger whose JSON lines a test can read back. */
export function captureLogger() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString("utf8").split("\n")) if (line) lines.push(JSON.parse(line));
      callback();
    },
  });
  return { logger: createLogger("debug", {}, stream), lines };
}

/** A worker against `master` with the built-in task types plus `extra`, short timings. */
export async function startWorker(
  master: FakeMaster,
  options: Partial<WorkerOptions> & { extra?: Record<string, TaskHandler> } = {},
) {
  const registry = new Map(await loadTaskRegistry());
  for (const [type, handler] of Object.entries(options.extra ?? {})) registry.set(type, handler);
  const client = new MasterClient({ masterUrl: master.url, workerToken: master.token });
  const { logger, lines } = captureLogger();
  const worker = new Worker({
    master: client,
    registry,
    workerId: "test-worker",
    concurrency: 4,
    logger,
    longPollMs: 1000,
    initialBackoffMs: 20,
    maxBackoffMs: 200,
    ...options,
  });
  const running = worker.run();
  const stop = async (graceMs = 0) => {
    await worker.shutdown(graceMs);
    await running;
    client.close();
  };
  return { worker, running, stop, logs: lines };
}
