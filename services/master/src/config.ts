import { isIP } from "node:net";
import { z } from "zod";

/** The master's settings, read once from the environment (see docs/protocol.md). */
export interface MasterConfig {
  port: number;
  /**
   * When set, the worker API and `/metrics` are served on this port only, and the client API on
   * `port` only (health on both); unset, everything is on `port`.
   */
  internalPort: number | undefined;
  host: string;
  /** When set, `/v1/*` needs `Authorization: Bearer <apiToken>`. */
  apiToken: string | undefined;
  /** `/worker/v1/*` always needs `Authorization: Bearer <workerToken>`. */
  workerToken: string;
  leaseSeconds: number;
  maxAttempts: number;
  taskTimeoutSeconds: number;
  resultTtlSeconds: number;
  resultMaxCount: number;
  retryBackoffMs: number;
  bodyLimitBytes: number;
  /** What the tasks held may take, as estimated heap bytes (see `StoreStats.budgetUsedBytes`). */
  memoryBudgetBytes: number;
  /** A request must arrive whole (headers and body) within this. */
  requestTimeoutSeconds: number;
  /** A request's headers must arrive within this. */
  headersTimeoutSeconds: number;
  /** Open connections at most; more are closed as they arrive. */
  maxConnections: number;
  shutdownGraceSeconds: number;
  /** After SIGTERM, how long the port stays open answering 503 before it closes. */
  shutdownDrainSeconds: number;
  logLevel: LogLevel;
}

export const logLevels = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof logLevels)[number];

/** Thrown when the environment is invalid; `problems` holds one line per bad variable. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration: ${problems.join("; ")}`);
    this.name = "ConfigError";
  }
}

// Each variable is parsed from its raw string so the message can quote exactly what was given.
// An unset variable takes `fallback` (undefined for one that is off unless set).
function integer<Fallback extends number | undefined>(
  name: string,
  min: number,
  max: number,
  fallback: Fallback,
) {
  const range = max === Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `from ${min} to ${max}`;
  return z
    .string()
    .optional()
    .transform((raw, ctx): number | Fallback => {
      if (raw === undefined) return fallback;
      const value = /^[0-9]+$/.test(raw) ? Number(raw) : Number.NaN;
      if (!Number.isSafeInteger(value) || value < min || value > max) {
        ctx.addIssue({
          code: "custom",
          message: `${name} must be an integer ${range} (got ${JSON.stringify(raw)})`,
        });
        return z.NEVER;
      }
      return value;
    });
}

// A token's value never appears in a message: it is a secret even when it is malformed.
function token(name: string, required: boolean) {
  return z
    .string()
    .optional()
    .transform((raw, ctx) => {
      if (raw === undefined && !required) return undefined;
      if (raw === undefined || raw.trim() === "") {
        ctx.addIssue({
          code: "custom",
          message: required
            ? `${name} must be set to a non-empty string`
            : `${name} must be a non-empty string when set`,
        });
        return z.NEVER;
      }
      return raw;
    });
}

const hostname =
  /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/;

const envSchema = z.object({
  PORT: integer("PORT", 1, 65535, 8080),
  INTERNAL_PORT: integer("INTERNAL_PORT", 1, 65535, undefined),
  HOST: z
    .string()
    .optional()
    .transform((raw, ctx) => {
      if (raw === undefined) return undefined;
      if (isIP(raw) === 0 && !hostname.test(raw)) {
        ctx.addIssue({
          code: "custom",
          message: `HOST must be an IP address or a host name to listen on (got ${JSON.stringify(raw)})`,
        });
        return z.NEVER;
      }
      return raw;
    }),
  API_TOKEN: token("API_TOKEN", false),
  WORKER_TOKEN: token("WORKER_TOKEN", true),
  LEASE_SECONDS: integer("LEASE_SECONDS", 1, 3600, 30),
  MAX_ATTEMPTS: integer("MAX_ATTEMPTS", 1, 100, 3),
  TASK_TIMEOUT_SECONDS: integer("TASK_TIMEOUT_SECONDS", 1, 86400, 300),
  RESULT_TTL_SECONDS: integer("RESULT_TTL_SECONDS", 1, 2592000, 3600),
  RESULT_MAX_COUNT: integer("RESULT_MAX_COUNT", 1, Number.MAX_SAFE_INTEGER, 100000),
  RETRY_BACKOFF_MS: integer("RETRY_BACKOFF_MS", 0, 600000, 1000),
  // At least twice the room kept for a result's envelope, so that payloads of 4 KB fit.
  BODY_LIMIT_BYTES: integer("BODY_LIMIT_BYTES", 8192, Number.MAX_SAFE_INTEGER, 1048576),
  MEMORY_BUDGET_BYTES: integer("MEMORY_BUDGET_BYTES", 8192, Number.MAX_SAFE_INTEGER, 268435456),
  REQUEST_TIMEOUT_SECONDS: integer("REQUEST_TIMEOUT_SECONDS", 1, 3600, 30),
  HEADERS_TIMEOUT_SECONDS: integer("HEADERS_TIMEOUT_SECONDS", 1, 3600, 10),
  MAX_CONNECTIONS: integer("MAX_CONNECTIONS", 1, 1000000, 1024),
  SHUTDOWN_GRACE_SECONDS: integer("SHUTDOWN_GRACE_SECONDS", 0, 3600, 25),
  SHUTDOWN_DRAIN_SECONDS: integer("SHUTDOWN_DRAIN_SECONDS", 0, 3600, 5),
  LOG_LEVEL: z
    .string()
    .optional()
    .transform((raw, ctx): LogLevel => {
      if (raw === undefined) return "info";
      if (!(logLevels as readonly string[]).includes(raw)) {
        ctx.addIssue({
          code: "custom",
          message: `LOG_LEVEL must be one of ${logLevels.join(", ")} (got ${JSON.stringify(raw)})`,
        });
        return z.NEVER;
      }
      return raw as LogLevel;
    }),
});

/**
 * Reads and validates the master's environment. Every bad variable is reported at once, each in
 * one line that names it, so a misconfigured pod says everything wrong in its first log line.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): MasterConfig {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((issue) => issue.message));
  }
  const e = parsed.data;
  // Settings that are each valid but do not fit together; Node refuses to start a server whose
  // header timeout is longer than its request timeout.
  const conflicts: string[] = [];
  if (e.HEADERS_TIMEOUT_SECONDS > e.REQUEST_TIMEOUT_SECONDS) {
    conflicts.push(
      `HEADERS_TIMEOUT_SECONDS (${e.HEADERS_TIMEOUT_SECONDS}) must not be larger than REQUEST_TIMEOUT_SECONDS (${e.REQUEST_TIMEOUT_SECONDS})`,
    );
  }
  if (e.INTERNAL_PORT === e.PORT) {
    conflicts.push(
      `INTERNAL_PORT (${e.INTERNAL_PORT}) must differ from PORT: the worker API and the client API are kept apart by port`,
    );
  }
  if (e.MEMORY_BUDGET_BYTES < e.BODY_LIMIT_BYTES) {
    conflicts.push(
      `MEMORY_BUDGET_BYTES (${e.MEMORY_BUDGET_BYTES}) must be at least BODY_LIMIT_BYTES (${e.BODY_LIMIT_BYTES}), or a task of the largest size could never be queued`,
    );
  }
  if (conflicts.length > 0) throw new ConfigError(conflicts);
  return {
    port: e.PORT,
    internalPort: e.INTERNAL_PORT,
    // Without an API token anyone who reaches the port can submit tasks: listen on every
    // interface (as in a pod, which always has a token) only when asked to.
    host: e.HOST ?? (e.API_TOKEN === undefined ? "127.0.0.1" : "0.0.0.0"),
    apiToken: e.API_TOKEN,
    // The schema has already failed when the worker token is missing.
    workerToken: e.WORKER_TOKEN as string,
    leaseSeconds: e.LEASE_SECONDS,
    maxAttempts: e.MAX_ATTEMPTS,
    taskTimeoutSeconds: e.TASK_TIMEOUT_SECONDS,
    resultTtlSeconds: e.RESULT_TTL_SECONDS,
    resultMaxCount: e.RESULT_MAX_COUNT,
    retryBackoffMs: e.RETRY_BACKOFF_MS,
    bodyLimitBytes: e.BODY_LIMIT_BYTES,
    memoryBudgetBytes: e.MEMORY_BUDGET_BYTES,
    requestTimeoutSeconds: e.REQUEST_TIMEOUT_SECONDS,
    headersTimeoutSeconds: e.HEADERS_TIMEOUT_SECONDS,
    maxConnections: e.MAX_CONNECTIONS,
    shutdownGraceSeconds: e.SHUTDOWN_GRACE_SECONDS,
    // The whole shutdown fits the grace period, so the drain is cut to it.
    shutdownDrainSeconds: Math.min(e.SHUTDOWN_DRAIN_SECONDS, e.SHUTDOWN_GRACE_SECONDS),
    logLevel: e.LOG_LEVEL,
  };
}
