import { buildApp } from "./app.js";
import { ConfigError, loadConfig, type MasterConfig } from "./config.js";

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
    // The logger is not built yet; this line has the same shape as the logger's.
    for (const problem of error.problems) {
      process.stderr.write(
        `${JSON.stringify({ level: "fatal", time: Date.now(), msg: `invalid configuration: ${problem}` })}\n`,
      );
    }
    process.exit(1);
  }

  const app = buildApp({ config });

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    app.log.info({ signal, graceSeconds: config.shutdownGraceSeconds }, "draining");
    app.taskStore.drain();
    const deadline = setTimeout(() => {
      app.log.warn("grace period over; closing the remaining connections");
      app.server.closeAllConnections();
      process.exit(0);
    }, config.shutdownGraceSeconds * 1000);
    deadline.unref();
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
  const { apiToken, workerToken, ...settings } = config;
  app.log.info({ ...settings, apiAuth: apiToken !== undefined }, "master ready");
}

main().catch((error: unknown) => {
  process.stderr.write(
    `${JSON.stringify({ level: "fatal", time: Date.now(), msg: "master failed to start", err: String(error) })}\n`,
  );
  process.exit(1);
});
