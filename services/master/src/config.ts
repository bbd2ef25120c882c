import { readFileSync } from "node:fs";
import { ConfigError, readEnv } from "@taskfleet/protocol/env";
import type { LogLevel } from "@taskfleet/protocol/log-levels";
import { masterEnv } from "@taskfleet/protocol/master-env";

export { ConfigError };

/** Where the tasks are kept (`STORE` and the `REDIS_*` variables). */
export type StoreConfig =
  | { kind: "memory" }
  | {
      kind: "redis";
      /** Normalized: `redis[s]://[user@]host:port/db`, never with a password. */
      url: string;
      /** A secret: never logged. */
      password: string | undefined;
      /** PEM of the authority that signed Redis's certificate (read from REDIS_CA_FILE). */
      ca: string | undefined;
    };

/** The master's settings, read once from the environment (@taskfleet/protocol/master-env). */
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
  /**
   * When set, `GET /scaler/v1/backlog` needs `Authorization: Bearer <scalerToken>`; unset, that
   * route answers 404.
   */
  scalerToken: string | undefined;
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
  store: StoreConfig;
}

/**
 * Reads and validates the master's environment. Every bad variable is reported at once, each in
 * one line that names it, so a misconfigured pod says everything wrong in its first log line.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): MasterConfig {
  const e = readEnv(masterEnv, env);
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
  if (e.STORE === "redis" && e.REDIS_URL === undefined) {
    conflicts.push("REDIS_URL must be set when STORE is redis");
  }
  if (e.STORE === "memory") {
    for (const name of ["REDIS_URL", "REDIS_PASSWORD", "REDIS_CA_FILE"] as const) {
      if (e[name] !== undefined) {
        conflicts.push(
          `${name} is set but STORE is memory; set STORE=redis to keep tasks in Redis`,
        );
      }
    }
  }
  let ca: string | undefined;
  if (e.REDIS_CA_FILE !== undefined && e.REDIS_URL?.startsWith("rediss://") === false) {
    conflicts.push("REDIS_CA_FILE needs a rediss:// REDIS_URL (TLS)");
  } else if (e.REDIS_CA_FILE !== undefined) {
    try {
      ca = readFileSync(e.REDIS_CA_FILE, "utf8");
      if (!ca.includes("-----BEGIN CERTIFICATE-----")) {
        conflicts.push(`REDIS_CA_FILE (${e.REDIS_CA_FILE}) must hold a PEM certificate`);
      }
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? String(error);
      conflicts.push(`REDIS_CA_FILE (${e.REDIS_CA_FILE}) cannot be read: ${code}`);
    }
  }
  if (conflicts.length > 0) throw new ConfigError(conflicts);
  return {
    port: e.PORT,
    internalPort: e.INTERNAL_PORT,
    // Without an API token anyone who reaches the port can submit tasks: listen on every
    // interface (as in a pod, which always has a token) only when asked to.
    host: e.HOST ?? (e.API_TOKEN === undefined ? "127.0.0.1" : "0.0.0.0"),
    apiToken: e.API_TOKEN,
    workerToken: e.WORKER_TOKEN,
    scalerToken: e.SCALER_TOKEN,
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
    store:
      e.STORE === "redis" && e.REDIS_URL !== undefined
        ? { kind: "redis", url: e.REDIS_URL, password: e.REDIS_PASSWORD, ca }
        : { kind: "memory" },
  };
}
