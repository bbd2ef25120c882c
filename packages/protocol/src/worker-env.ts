import { httpUrl, integer, oneOf, text, token } from "./env";
import { limits, maxPayloadBytes } from "./limits";
import { logLevels } from "./log-levels";
import { masterEnv } from "./master-env";

/**
 * Every environment variable of the worker, with what it allows and its default
 * (docs/protocol.md, "Worker"). The worker reads them with `readEnv`; the Pulumi program sets them
 * by these names and takes its settings' ranges from here.
 */
export const workerEnv = {
  MASTER_URL: httpUrl(),
  WORKER_TOKEN: token({ required: true }),
  CONCURRENCY: integer({ min: 1, max: 256, default: 4 }),
  /** Unset: the host name and the process id. */
  WORKER_ID: text({ maxLength: limits.workerIdMaxLength }),
  SHUTDOWN_GRACE_SECONDS: integer({ min: 0, max: 3600, default: 25 }),
  // Strings of more than about 512 MiB cannot exist in V8: far above any sensible result. The
  // default is what the master takes back with its default body limit.
  MAX_RESULT_BYTES: integer({
    min: 1024,
    max: 256 * 1024 * 1024,
    default: maxPayloadBytes(masterEnv.BODY_LIMIT_BYTES.default),
  }),
  RESULT_BUFFER_BYTES: integer({
    min: 1024 * 1024,
    max: 1024 * 1024 * 1024,
    default: 16 * 1024 * 1024,
  }),
  LOG_LEVEL: oneOf(logLevels, "info"),
};

export type WorkerEnvName = keyof typeof workerEnv;
