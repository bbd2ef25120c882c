import * as os from "node:os";
import { z } from "zod";
import { defaultMaxResultBytes } from "./protocol.js";

/** The worker's settings, read once from the environment (docs/protocol.md, "Worker"). */
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

/** Default of `RESULT_BUFFER_BYTES`. */
export const defaultResultBufferBytes = 16 * 1024 * 1024;

export const logLevels = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof logLevels)[number];

/** Thrown for a bad environment; the message is one line naming the variable. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

function integer(name: string, min: number, max: number) {
  return z.string().transform((raw, ctx) => {
    const value = Number(raw.trim());
    if (raw.trim() === "" || !Number.isInteger(value) || value < min || value > max) {
      ctx.addIssue({
        code: "custom",
        message: `${name} must be an integer from ${min} to ${max} (got ${JSON.stringify(raw)})`,
      });
      return z.NEVER;
    }
    return value;
  });
}

function required(name: string) {
  return z.string({ error: `${name} is required` });
}

/** A token's value never appears in a message: it would end up in logs. */
function secret(name: string) {
  return required(name).refine((value) => value.length > 0, `${name} must not be empty`);
}

const envSchema = z.object({
  MASTER_URL: required("MASTER_URL").transform((raw, ctx) => {
    let url: URL | undefined;
    try {
      url = new URL(raw);
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== "http:" && url.protocol !== "https:")) {
      ctx.addIssue({
        code: "custom",
        message: `MASTER_URL must be an http:// or https:// URL (got ${JSON.stringify(raw)})`,
      });
      return z.NEVER;
    }
    return url.href.replace(/\/+$/, "");
  }),
  WORKER_TOKEN: secret("WORKER_TOKEN"),
  CONCURRENCY: integer("CONCURRENCY", 1, 256).default(4),
  WORKER_ID: z
    .string()
    .refine((value) => value.trim().length > 0, "WORKER_ID must not be empty")
    .optional(),
  SHUTDOWN_GRACE_SECONDS: integer("SHUTDOWN_GRACE_SECONDS", 0, 3600).default(25),
  // Strings of more than about 512 MiB cannot exist in V8: far above any sensible result.
  MAX_RESULT_BYTES: integer("MAX_RESULT_BYTES", 1024, 256 * 1024 * 1024).default(
    defaultMaxResultBytes,
  ),
  RESULT_BUFFER_BYTES: integer("RESULT_BUFFER_BYTES", 1024 * 1024, 1024 * 1024 * 1024).default(
    defaultResultBufferBytes,
  ),
  LOG_LEVEL: z
    .string()
    .default("info")
    .refine((value): value is LogLevel => (logLevels as readonly string[]).includes(value), {
      error: (issue) =>
        `LOG_LEVEL must be one of ${logLevels.join(", ")} (got ${JSON.stringify(issue.input)})`,
    }),
});

/**
 * Reads and validates the worker's environment. Throws a {@link ConfigError} whose message lists
 * every bad variable, one per line, each naming the variable and what is allowed.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): WorkerConfig {
  // An empty string is how shells and manifests spell "unset" for optional settings.
  const present = Object.fromEntries(
    Object.entries(env).filter(
      ([key, value]) => value !== "" || key === "WORKER_TOKEN" || key === "MASTER_URL",
    ),
  );
  const parsed = envSchema.safeParse(present);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((issue) => issue.message).join("\n"));
  }
  const values = parsed.data;
  return {
    masterUrl: values.MASTER_URL,
    workerToken: values.WORKER_TOKEN,
    concurrency: values.CONCURRENCY,
    workerId: values.WORKER_ID ?? `${os.hostname()}-${process.pid}`,
    shutdownGraceSeconds: values.SHUTDOWN_GRACE_SECONDS,
    maxResultBytes: values.MAX_RESULT_BYTES,
    resultBufferBytes: values.RESULT_BUFFER_BYTES,
    logLevel: values.LOG_LEVEL as LogLevel,
  };
}
