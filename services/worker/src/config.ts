import * as os from "node:os";
import { ConfigError, readEnv } from "@taskfleet/protocol/env";
import type { LogLevel } from "@taskfleet/protocol/log-levels";
import { workerEnv } from "@taskfleet/protocol/worker-env";

export { ConfigError };

/** The worker's settings, read once from the environment (@taskfleet/protocol/worker-env). */
export interface WorkerConfig {
  /** Base URL of the master, without a trailing slash. */
  masterUrl: string;
  /** Bearer token for the master's `/worker/v1/*` routes. */
  workerToken: string;
  /** Tasks run at once by this process. */
  concurrency: number;
  /** Names this worker in the master's stats and in logs. */
  workerId: string;
  /** How long SIGTERM lets running tasks finish before they are released. */
  shutdownGraceSeconds: number;
  /** A result whose JSON is larger fails its task instead of being sent (`MAX_RESULT_BYTES`). */
  maxResultBytes: number;
  /** Results not yet accepted by the master above this many bytes pause leasing. */
  resultBufferBytes: number;
  /** pino level. */
  logLevel: LogLevel;
}

/**
 * Reads and validates the worker's environment. Throws a {@link ConfigError} listing every bad
 * variable, each naming the variable and what is allowed.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): WorkerConfig {
  const values = readEnv(workerEnv, env);
  return {
    masterUrl: values.MASTER_URL,
    workerToken: values.WORKER_TOKEN,
    concurrency: values.CONCURRENCY,
    workerId: values.WORKER_ID ?? `${os.hostname()}-${process.pid}`,
    shutdownGraceSeconds: values.SHUTDOWN_GRACE_SECONDS,
    maxResultBytes: values.MAX_RESULT_BYTES,
    resultBufferBytes: values.RESULT_BUFFER_BYTES,
    logLevel: values.LOG_LEVEL,
  };
}
