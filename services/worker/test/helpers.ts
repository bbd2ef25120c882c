import { mkdtempSync, rmSync } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Writable } from "node:stream";
import { afterEach } from "node:test";
import { createLogger } from "../src/logger.js";
import { MasterClient } from "../src/master-client.js";
import { loadTaskCatalog } from "../src/tasks/registry.js";
import { Worker, type WorkerOptions } from "../src/worker.js";
import { FakeMaster } from "./fake-master.js";

/**
 * The tests' task folder: the built-in types (re-exported) plus handlers that misbehave on purpose.
 * Handlers run in task threads, so a test sees what they did only through the master, the logs or
 * the file system, never through a shared variable.
 */
export const testTasksDirectory = path.join(import.meta.dirname, "tasks");

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

/** A worker against `master` with the tests' task types, short timings. */
export async function startWorker(master: FakeMaster, options: Partial<WorkerOptions> = {}) {
  const client = new MasterClient({ masterUrl: master.url, workerToken: master.token });
  const { logger, lines } = captureLogger();
  const worker = new Worker({
    master: client,
    tasks: await loadTaskCatalog(testTasksDirectory),
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

/**
 * Fake masters, workers and scratch folders for the tests of one file, all stopped or removed
 * after each test, pass or fail.
 */
export function harness() {
  const masters: FakeMaster[] = [];
  const stops: (() => Promise<void>)[] = [];
  const scratchDirectories: string[] = [];
  afterEach(async () => {
    await Promise.all(stops.splice(0).map((stop) => stop().catch(() => undefined)));
    await Promise.all(masters.splice(0).map((master) => master.close()));
    for (const directory of scratchDirectories.splice(0)) rmSync(directory, { recursive: true });
  });
  return {
    async fakeMaster(options?: ConstructorParameters<typeof FakeMaster>[0]) {
      const master = await new FakeMaster(options).listen();
      masters.push(master);
      return master;
    },
    async worker(master: FakeMaster, options: Partial<WorkerOptions> = {}) {
      const started = await startWorker(master, options);
      stops.push(() => started.stop(0));
      return started;
    },
    /** A fresh folder for files a handler writes. */
    scratch(): string {
      const directory = mkdtempSync(path.join(os.tmpdir(), "taskfleet-worker-test-"));
      scratchDirectories.push(directory);
      return directory;
    },
  };
}
