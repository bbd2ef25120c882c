import type { TaskResponse as TaskView } from "../../services/master/src/routes/tasks.js";
import type { StoreStats as MasterStats } from "../../services/master/src/store/task-store.js";

export type { MasterStats, TaskView };

export interface HttpAnswer {
  status: number;
  contentType: string;
  text: string;
}

/**
 * The master's HTTP API as a user reaches it from outside the container: plain requests to its
 * port on 127.0.0.1, each bounded in time.
 */
export class MasterApi {
  constructor(
    readonly baseUrl: string,
    private readonly apiToken: string,
    private readonly requestTimeoutMs = 15_000,
  ) {}

  /** Any route, answered as text; rejects only when no answer arrives. */
  async raw(
    method: string,
    route: string,
    body?: unknown,
    timeoutMs?: number,
  ): Promise<HttpAnswer> {
    const response = await fetch(new URL(route, this.baseUrl), {
      method,
      headers: {
        authorization: `Bearer ${this.apiToken}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs ?? this.requestTimeoutMs),
    });
    return {
      status: response.status,
      contentType: response.headers.get("content-type") ?? "",
      text: await response.text(),
    };
  }

  /** A JSON route that must answer with `status`; anything else throws with the answer. */
  async json<T>(method: string, route: string, status: number, body?: unknown): Promise<T> {
    const answer = await this.raw(method, route, body);
    if (answer.status !== status) {
      throw new Error(
        `${method} ${route} answered ${answer.status}, not ${status}: ${answer.text.slice(0, 300)}`,
      );
    }
    return JSON.parse(answer.text) as T;
  }

  async submit(type: string, payload: unknown): Promise<string> {
    const body = await this.json<{ id?: unknown }>("POST", "/v1/tasks", 202, { type, payload });
    if (typeof body.id !== "string")
      throw new Error(`POST /v1/tasks answered no id: ${JSON.stringify(body)}`);
    return body.id;
  }

  task(id: string): Promise<TaskView> {
    return this.json<TaskView>("GET", `/v1/tasks/${encodeURIComponent(id)}`, 200);
  }

  stats(): Promise<MasterStats> {
    return this.json<MasterStats>("GET", "/v1/stats", 200);
  }
}

/** Thrown by a probe when waiting longer cannot help (the container has exited). */
export class HopelessWaitError extends Error {
  override name = "HopelessWaitError";
}

/**
 * Polls `probe` until it returns a value other than `undefined`, every `intervalMs`, for at most
 * `timeoutMs`; then throws `describe()`'s explanation, so a hung system fails with a reason. A
 * probe that throws counts as "not yet" (the service may still be starting), except with a
 * {@link HopelessWaitError}, which ends the wait at once.
 */
export async function waitUntil<T>(
  probe: () => Promise<T | undefined>,
  options: { timeoutMs: number; intervalMs?: number; describe: () => Promise<string> | string },
): Promise<T> {
  const deadline = Date.now() + options.timeoutMs;
  for (;;) {
    const value = await probe().catch((error: unknown) => {
      if (error instanceof HopelessWaitError) throw error;
      return undefined;
    });
    if (value !== undefined) return value;
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${options.timeoutMs / 1000}s: ${await options.describe()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 200));
  }
}

/** A Prometheus text exposition's samples, by name with labels (`name{a="b"}`) as written. */
export function parseMetrics(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s+(\S+)/.exec(line);
    if (match) samples.set(match[1], Number(match[2]));
  }
  return samples;
}
