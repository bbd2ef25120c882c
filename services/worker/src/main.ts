import { ConfigError, loadConfig } from "./config.js";
import { createLogger } from "./logger.js";
import { MasterClient } from "./master-client.js";
import { loadTaskRegistry } from "./tasks/registry.js";
import { Worker } from "./worker.js";

/**
 * The worker process: configuration, logging, signals and exit codes. Exits 0 after a SIGTERM or
 * SIGINT shutdown, 1 on a bad environment or when the master refuses the worker's token.
 */
async function main(): Promise<number> {
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`taskfleet worker: invalid environment\n${error.message}\n`);
      return 1;
    }
    throw error;
  }

  const logger = createLogger(config.logLevel, { workerId: config.workerId });
  const registry = await loadTaskRegistry();
  const master = new MasterClient({ masterUrl: config.masterUrl, workerToken: config.workerToken });
  const worker = new Worker({
    master,
    registry,
    workerId: config.workerId,
    concurrency: config.concurrency,
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

  logger.info(
    {
      masterUrl: config.masterUrl,
      concurrency: config.concurrency,
      taskTypes: [...registry.keys()],
    },
    "worker started",
  );
  try {
    await worker.run();
    await worker.shutdown(config.shutdownGraceSeconds * 1000);
    return 0;
  } catch (error) {
    logger.fatal({ err: error }, "worker stopped");
    return 1;
  } finally {
    master.close();
  }
}

const exitCode = await main().catch((error: unknown) => {
  process.stderr.write(
    `taskfleet worker: ${error instanceof Error ? error.stack : String(error)}\n`,
  );
  return 1;
});
// A handler that ignores its abort signal must not keep a finished worker alive.
process.exit(exitCode);
