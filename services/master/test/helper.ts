import type { TestContext } from "node:test";
import { buildApp } from "../src/app.js";
import { loadConfig, type MasterConfig } from "../src/config.js";
import { type MemoryStoreOptions, MemoryTaskStore } from "../src/store/memory-store.js";
import { storeOptions } from "../src/store/open-store.js";

// The root package does not depend on fastify, so its types are taken from the app itself.
export type App = ReturnType<typeof buildApp>;
export type InjectResponse =
  Awaited<ReturnType<App["inject"]>> extends infer R
    ? R extends { statusCode: number }
      ? R
      : never
    : never;

export const WORKER_TOKEN = "worker-token-for-tests";
export const API_TOKEN = "api-token-for-tests";

/** A configuration as the process would read it, from an environment of strings. */
export function testConfig(env: Record<string, string> = {}): MasterConfig {
  return loadConfig({ WORKER_TOKEN, LOG_LEVEL: "silent", ...env });
}

/** A clock the test moves by hand. */
export class FakeClock {
  constructor(public ms = Date.parse("2026-01-01T00:00:00.000Z")) {}
  readonly now = (): number => this.ms;
  advance(ms: number): void {
    this.ms += ms;
  }
}

export interface TestApp {
  app: App;
  /** Present when the test asked for a store it can drive (fake clock, manual sweep). */
  store: MemoryTaskStore;
}

/**
 * An app on no socket, closed when the test ends. With `store` options the app gets a store the
 * test controls (no sweep timer: the test calls `sweep()`).
 */
export function startApp(
  t: TestContext,
  options: { env?: Record<string, string>; store?: Partial<MemoryStoreOptions> } = {},
): TestApp {
  const config = testConfig(options.env);
  const store = new MemoryTaskStore({
    ...storeOptions(config),
    sweepIntervalMs: 0,
    ...options.store,
  });
  const app = buildApp({ config, store, logger: false });
  t.after(() => app.close());
  return { app, store };
}

/**
 * An app with the store and metrics it builds for itself, as in production; its log lines go to
 * `log` when given (at `LOG_LEVEL`), nowhere otherwise.
 */
export function startDefaultApp(
  t: TestContext,
  env: Record<string, string> = {},
  log?: (line: string) => void,
): App {
  const config = testConfig(env);
  const logger = log === undefined ? false : { level: config.logLevel, stream: { write: log } };
  const app = buildApp({ config, logger });
  t.after(() => app.close());
  return app;
}

export function api(
  app: App,
  method: "GET" | "POST",
  url: string,
  body?: unknown,
  token?: string,
): Promise<InjectResponse> {
  return app.inject({
    method,
    url,
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
    ...(body === undefined ? {} : { payload: body as object }),
  });
}

/** A POST whose JSON body is sent as the text given, malformed or hostile as it may be. */
export function postJsonText(app: App, url: string, text: string): Promise<InjectResponse> {
  return app.inject({
    method: "POST",
    url,
    headers: { "content-type": "application/json" },
    payload: text,
  });
}

export function worker(
  app: App,
  route: "lease" | "renew" | "complete" | "release",
  body: unknown,
): Promise<InjectResponse> {
  return app.inject({
    method: "POST",
    url: `/worker/v1/${route}`,
    headers: { authorization: `Bearer ${WORKER_TOKEN}` },
    payload: body as object,
  });
}

import type { LeasedTask as Leased } from "../src/store/task-store.js";

export type { Leased };

export async function leaseTasks(
  app: App,
  max = 10,
  waitMs = 0,
  workerId = "w1",
): Promise<Leased[]> {
  const res = await worker(app, "lease", { workerId, max, waitMs });
  if (res.statusCode !== 200) throw new Error(`lease answered ${res.statusCode}: ${res.body}`);
  return res.json().tasks as Leased[];
}

export async function submit(app: App, body: object): Promise<string> {
  const res = await api(app, "POST", "/v1/tasks", body);
  if (res.statusCode !== 202) throw new Error(`submit answered ${res.statusCode}: ${res.body}`);
  return res.json().id as string;
}
