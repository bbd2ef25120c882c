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
}

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
