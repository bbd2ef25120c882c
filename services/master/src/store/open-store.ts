import { isIP } from "node:net";
import { leaseResponseMaxBytes } from "@taskfleet/protocol/limits";
import type { RedisOptions } from "ioredis";
import type { MasterConfig, StoreConfig } from "../config.js";
import { MemoryTaskStore } from "./memory-store.js";
import { type ConnectionLog, RedisTaskStore } from "./redis-store.js";
import type { StoreObserver, StoreOptions, TaskStore } from "./task-store.js";

/** What a store is built from: the master's settings, its metrics hooks and its logger. */
export type StoreSettings = Pick<
  MasterConfig,
  | "leaseSeconds"
  | "resultTtlSeconds"
  | "resultMaxCount"
  | "retryBackoffMs"
  | "memoryBudgetBytes"
  | "bodyLimitBytes"
> & { store?: StoreConfig | undefined };

/** What either store is given from the master's settings (tests add their clock and sweep). */
export function storeOptions(settings: StoreSettings, observer?: StoreObserver): StoreOptions {
  return {
    leaseSeconds: settings.leaseSeconds,
    resultTtlSeconds: settings.resultTtlSeconds,
    resultMaxCount: settings.resultMaxCount,
    retryBackoffMs: settings.retryBackoffMs,
    memoryBudgetBytes: settings.memoryBudgetBytes,
    leaseMaxBytes: leaseResponseMaxBytes(settings.bodyLimitBytes),
    ...(observer === undefined ? {} : { observer }),
  };
}

/** The store `STORE` asks for (memory when unset), built from the master's settings. */
export function openStore(
  settings: StoreSettings,
  observer: StoreObserver,
  log: ConnectionLog,
): TaskStore {
  const options = storeOptions(settings, observer);
  const store = settings.store ?? { kind: "memory" };
  if (store.kind === "memory") return new MemoryTaskStore(options);
  return new RedisTaskStore({ ...options, redis: redisOptions(store), log });
}

/** ioredis's options for a validated `REDIS_URL`, its password and its CA. */
export function redisOptions(store: Extract<StoreConfig, { kind: "redis" }>): RedisOptions {
  const url = new URL(store.url);
  const options: RedisOptions = {
    host: url.hostname,
    port: Number(url.port),
    db: Number(url.pathname.slice(1)),
  };
  if (url.username !== "") options.username = decodeURIComponent(url.username);
  if (store.password !== undefined) options.password = store.password;
  if (url.protocol === "rediss:") {
    // The certificate is checked against the host either way; SNI takes a name, not an address.
    options.tls = {
      ...(isIP(url.hostname) === 0 ? { servername: url.hostname } : {}),
      ...(store.ca === undefined ? {} : { ca: store.ca }),
    };
  }
  return options;
}
