import { host, integer, oneOf, redisUrl, text, token } from "./env";
import { limits } from "./limits";
import { logLevels } from "./log-levels";

/** Where the master keeps its tasks (docs/redis-store.md). */
export const storeKinds = ["memory", "redis"] as const;
export type StoreKind = (typeof storeKinds)[number];

/**
 * Every environment variable of the master, with what it allows and its default
 * (docs/protocol.md, "Master"). The master reads them with `readEnv`; the Pulumi program sets them
 * by these names and takes its settings' ranges from here.
 */
export const masterEnv = {
  PORT: integer({ min: 1, max: 65535, default: 8080 }),
  /**
   * Set: the worker API, the scaler's backlog and /metrics are served on this port only, the client
   * API on PORT only.
   */
  INTERNAL_PORT: integer({ min: 1, max: 65535 }),
  /** Unset: 127.0.0.1 without API_TOKEN, 0.0.0.0 with it. */
  HOST: host(),
  /** Set: `/v1/*` needs `Authorization: Bearer <API_TOKEN>`. */
  API_TOKEN: token({ required: false }),
  WORKER_TOKEN: token({ required: true }),
  /**
   * Set: `GET /scaler/v1/backlog` (on the internal port, for an autoscaler such as KEDA) needs
   * `Authorization: Bearer <SCALER_TOKEN>`; unset: that route answers 404.
   */
  SCALER_TOKEN: token({ required: false }),
  LEASE_SECONDS: integer({ min: limits.leaseSecondsMin, max: limits.leaseSecondsMax, default: 30 }),
  MAX_ATTEMPTS: integer({ min: 1, max: limits.maxAttempts, default: 3 }),
  TASK_TIMEOUT_SECONDS: integer({ min: 1, max: limits.timeoutSeconds, default: 300 }),
  RESULT_TTL_SECONDS: integer({ min: 1, max: 2_592_000, default: 3600 }),
  RESULT_MAX_COUNT: integer({ min: 1, default: 100_000 }),
  RETRY_BACKOFF_MS: integer({ min: 0, max: 600_000, default: 1000 }),
  // At least twice the room kept for a result's envelope, so that payloads of 4 KB fit.
  BODY_LIMIT_BYTES: integer({ min: 8192, default: 1024 * 1024 }),
  MEMORY_BUDGET_BYTES: integer({ min: 8192, default: 256 * 1024 * 1024 }),
  REQUEST_TIMEOUT_SECONDS: integer({ min: 1, max: 3600, default: 30 }),
  HEADERS_TIMEOUT_SECONDS: integer({ min: 1, max: 3600, default: 10 }),
  MAX_CONNECTIONS: integer({ min: 1, max: 1_000_000, default: 1024 }),
  SHUTDOWN_GRACE_SECONDS: integer({ min: 0, max: 3600, default: 25 }),
  SHUTDOWN_DRAIN_SECONDS: integer({ min: 0, max: 3600, default: 5 }),
  LOG_LEVEL: oneOf(logLevels, "info"),
  /**
   * memory: in this process, lost with it, one master only; redis: in Redis at REDIS_URL, shared by
   * every master and kept when one dies.
   */
  STORE: oneOf(storeKinds, "memory"),
  /** STORE=redis (and only then): where Redis is; `rediss://` for TLS. */
  REDIS_URL: redisUrl(),
  /** STORE=redis: Redis's password (AUTH), from a Secret; unset: none. */
  REDIS_PASSWORD: token({ required: false }),
  /**
   * A rediss:// REDIS_URL: a PEM file of the certificate authority that signed Redis's certificate
   * (Memorystore's server CA); unset: the system's authorities.
   */
  REDIS_CA_FILE: text({ maxLength: 4096 }),
};

export type MasterEnvName = keyof typeof masterEnv;
