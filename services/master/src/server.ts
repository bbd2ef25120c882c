import { getHeapStatistics } from "node:v8";
import { writeConfigProblems } from "@taskfleet/protocol/env";
import { buildApp } from "./app.js";
import { ConfigError, loadConfig, type MasterConfig } from "./config.js";
import { HEAP_HEADROOM_BYTES } from "./limits.js";

/**
 * The master process: configuration from the environment, the app on a socket, and a shutdown
 * on SIGTERM that stops taking work, answers long polls and lets in-flight requests finish.
 */
async function main(): Promise<void> {
  let config: MasterConfig;
  try {
    config = loadConfig();
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    writeConfigProblems("taskfleet-master", error);
    process.exit(1);
  }

  const app = buildApp({ config });

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    app.log.info(
      {
        signal,
        graceSeconds: config.shutdownGraceSeconds,
        drainSeconds: config.shutdownDrainSeconds,
      },
      "draining",
    );
    app.taskStore.drain();
    const deadline = setTimeout(() => {
      app.log.warn("grace period over; closing the remaining connections");
      app.server.closeAllConnections();
      process.exit(0);
    }, config.shutdownGraceSeconds * 1000);
    deadline.unref();
    // The port stays open a while, answering 503 with Retry-After (and /readyz 503), so that a
    // client sent here before the Service stopped routing to this pod learns that the master is
    // going away instead of being refused a connection; workers' completions still count.
    await new Promise((resolve) => setTimeout(resolve, config.shutdownDrainSeconds * 1000));
    try {
      await app.close();
      app.log.info("stopped");
      process.exit(0);
    } catch (error) {
      app.log.error({ err: error }, "shutdown failed");
      process.exit(1);
    }
  };
  // `on`, not `once`: a repeated signal (a terminal's Ctrl+C relayed by npm) must not kill the
  // draining process with the default action; stop() ignores it.
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));

  await app.listen({ port: config.port, host: config.host });
  if (config.internalPort !== undefined) {
    await app.internalListener?.listen(config.internalPort, config.host);
  }
  const { apiToken, workerToken, store, ...settings } = config;
  app.log.info(
    {
      ...settings,
      apiAuth: apiToken !== undefined,
      // Where Redis is, and whether a password and a CA are given, never what they are.
      store:
        store.kind === "memory"
          ? store
          : {
              kind: store.kind,
              url: store.url,
              password: store.password !== undefined,
              ca: store.ca !== undefined,
            },
    },
    "master ready",
  );
  // V8 sizes its heap from the container's memory limit (about half of it), not from the
  // budget: a full master would then die of a heap out of memory, taking every task with it.
  const heapLimitBytes = getHeapStatistics().heap_size_limit;
  const neededBytes = config.memoryBudgetBytes + HEAP_HEADROOM_BYTES;
  // With STORE=redis the budget bounds what Redis holds, not the heap.
  if (store.kind === "memory" && heapLimitBytes < neededBytes) {
    app.log.warn(
      { heapLimitBytes, memoryBudgetBytes: config.memoryBudgetBytes, neededBytes },
      `the V8 heap limit is below MEMORY_BUDGET_BYTES and room for requests in flight; start node with --max-old-space-size=${Math.ceil(neededBytes / 1048576)} or lower the budget`,
    );
  }
}

main().catch((error: unknown) => {
  process.stderr.write(
    `${JSON.stringify({ level: "fatal", time: Date.now(), msg: "master failed to start", err: String(error) })}\n`,
  );
  process.exit(1);
});
