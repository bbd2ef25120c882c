import { writeConfigProblems } from "@taskfleet/protocol/env";
import { RESULT_ENVELOPE_BYTES } from "@taskfleet/protocol/limits";
import { ConfigError, loadConfig } from "./config.js";
import { createLogger } from "./logger.js";
import { MasterClient } from "./master-client.js";
import { loadTaskCatalog } from "./tasks/registry.js";
import { Worker } from "./worker.js";

export interface WorkerProcessOptions {
  /** The task files (default: the built-in folder, `src/tasks/`); tests use a folder of their own. */
  tasksDirectory?: string;
}

/**
 * The worker process: configuration, logging, signals and exit codes, for main.ts. Resolves to
 * the exit code: 0 after a SIGTERM or SIGINT shutdown, 1 on a bad environment, when the master
 * refuses the worker's token, or after an error nothing caught (having given back the tasks it
 * held, and failed the attempt of the inline task whose code threw, if any).
 */
export async function runWorkerProcess(options: WorkerProcessOptions = {}): Promise<number> {
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      writeConfigProblems("taskfleet-worker", error);
      return 1;
    }
    throw error;
  }

  const logger = createLogger(config.logLevel, { workerId: config.workerId });
  const tasks = await loadTaskCatalog(options.tasksDirectory);
  const master = new MasterClient({
    masterUrl: config.masterUrl,
    workerToken: config.workerToken,
    // A payload came in a request the master took, as large as a result may be at most.
    leaseAnswerBytesPerTask: config.maxResultBytes + 2 * RESULT_ENVELOPE_BYTES,
    // Reported with each lease: the master sums the slots of its workers for the autoscaler.
    slots: config.concurrency,
  });
  const worker = new Worker({
    master,
    tasks,
    workerId: config.workerId,
    concurrency: config.concurrency,
    maxResultBytes: config.maxResultBytes,
    resultBufferBytes: config.resultBufferBytes,
    logger,
  });

  let shuttingDown = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (shuttingDown) {
      logger.info({ signal }, "already shutting down");
      return;
    }
    shuttingDown = true;
    logger.info({ signal }, "signal received");
    void worker.shutdown(config.shutdownGraceSeconds * 1000);
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);

  // Code of an inline task, or a bug of the worker's own (thread handlers crash only their
  // thread). The process's state is suspect, but the tasks it holds are not at fault: the worker
  // fails the culprit's attempt, if an inline task's code threw, and gives the rest back (no
  // grace, no attempt counted) rather than let their leases expire into failed attempts; then exit.
  let crashed = false;
  process.on("uncaughtException", (error) => {
    logger.fatal({ err: error }, "uncaught error; giving back held tasks and exiting");
    if (crashed) return;
    crashed = true;
    const exit = () => process.exit(1);
    setTimeout(exit, 10_000).unref();
    worker.crashed(error).then(exit, exit);
  });

  logger.info(
    {
      masterUrl: config.masterUrl,
      concurrency: config.concurrency,
      taskTypes: tasks.types,
    },
    "worker started",
  );
  try {
    await worker.run();
    await worker.shutdown(config.shutdownGraceSeconds * 1000);
    return 0;
  } catch (error) {
    logger.fatal({ err: error }, "worker stopped");
    await worker.shutdown(0);
    return 1;
  } finally {
    master.close();
  }
}
