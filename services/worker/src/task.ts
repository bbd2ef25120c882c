import type { z } from "zod";

export { z } from "zod";

/** What a handler gets besides its payload. */
export interface TaskContext {
  /**
   * Aborted when the task times out, its lease is lost, or the worker shuts down before the task
   * finishes. A handler that runs longer than a moment should stop when it fires.
   */
  signal: AbortSignal;
  /** The task's id, for the handler's own logs. */
  id: string;
  /** 1 for the first attempt. */
  attempt: number;
}

/**
 * A task type. Each file in `src/tasks/` default-exports one, made with {@link defineTask}; the
 * file's name is the task type (`src/tasks/echo.ts` runs tasks of type `echo`).
 */
export interface TaskHandler<Payload = unknown> {
  /** Checks the payload before `run`; a payload it rejects fails the task without a retry. */
  payload: z.ZodType<Payload>;
  /** Does the work. The value it returns (JSON) is the task's result; a throw fails the attempt. */
  run(payload: Payload, context: TaskContext): unknown;
  /**
   * Where `run` runs (default `"thread"`); one of {@link taskIsolations}:
   * - `"thread"`: in a task thread of its own, one per slot. Whatever the handler does (blocks,
   *   throws from a timer, exits) costs its own task at most; each task costs about 0.15 ms more
   *   CPU than inline, for passing it to the thread and back.
   * - `"inline"`: on the worker's main thread, beside lease renewal and the requests to the
   *   master. For handlers that are trusted, return or await promptly and never block: one that
   *   blocks stalls every task's lease renewal for as long, and one that throws where nothing
   *   catches (from a timer) ends the worker process: its attempt fails, the worker's other tasks
   *   are given back without an attempt counted, and the pod restarts.
   */
  isolation?: TaskIsolation;
}

/** Where a task type's handler runs: see {@link TaskHandler.isolation}. */
export const taskIsolations = ["thread", "inline"] as const;
export type TaskIsolation = (typeof taskIsolations)[number];

/** Gives a handler its types: `export default defineTask({ payload: z.object(...), run })`. */
export function defineTask<Payload>(handler: TaskHandler<Payload>): TaskHandler<Payload> {
  return handler;
}

const permanentBrand = Symbol.for("taskfleet.PermanentTaskError");

/**
 * Thrown by a handler for a failure that another attempt cannot fix (bad input, a missing
 * record): the task fails at once instead of being retried.
 */
export class PermanentTaskError extends Error {
  override name = "PermanentTaskError";
  readonly [permanentBrand] = true;
}

/**
 * Recognises a {@link PermanentTaskError} by a global brand rather than `instanceof`, so it also
 * holds when a handler file got its own copy of this module (loaded by a different module system).
 */
export function isPermanentTaskError(error: unknown): boolean {
  try {
    return typeof error === "object" && error !== null && permanentBrand in error;
  } catch {
    // A Proxy whose `has` trap throws: whatever it is, it is not a PermanentTaskError.
    return false;
  }
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
