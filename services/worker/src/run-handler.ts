import { AsyncLocalStorage } from "node:async_hooks";
import { describeThrown, type HandlerOutcome, serializeResult } from "./handler-outcome.js";
import { isPermanentTaskError, type TaskHandler } from "./task.js";

/** One attempt of one task, as the worker hands it to a handler. */
export interface HandlerRun {
  id: string;
  type: string;
  payload: unknown;
  attempt: number;
}

/** The id of the task whose handler code is running, across its timers and promises. */
const owner = new AsyncLocalStorage<string>();

/**
 * The task whose handler code is running now, if any, on this thread: read synchronously where an
 * error nothing caught lands (`uncaughtException`), it names the task whose timer or promise threw.
 */
export function handlerOwner(): string | undefined {
  return owner.getStore();
}

/**
 * Runs one attempt through its handler, on whichever thread calls it (a task thread, or the main
 * thread for an `inline` type): checks the payload against the handler's schema (a refusal names
 * each field and is not retried), runs the handler, and turns its value into the result's JSON.
 * Never rejects: whatever the handler throws becomes the attempt's failure, retryable unless it is
 * a PermanentTaskError.
 */
export function runHandler(
  handler: TaskHandler,
  run: HandlerRun,
  signal: AbortSignal,
  maxResultBytes: number,
): Promise<HandlerOutcome> {
  // Under the task's id, so that an error its code throws later is traced to it (handlerOwner).
  return owner.run(run.id, () => attempt(handler, run, signal, maxResultBytes));
}

async function attempt(
  handler: TaskHandler,
  run: HandlerRun,
  signal: AbortSignal,
  maxResultBytes: number,
): Promise<HandlerOutcome> {
  try {
    // The payload schema is the handler's code too (refinements, transforms): it runs here.
    const parsed = handler.payload.safeParse(run.payload);
    if (!parsed.success) {
      const problems = parsed.error.issues
        .map((issue) => `${["payload", ...issue.path.map(String)].join(".")}: ${issue.message}`)
        .join("; ");
      return {
        ok: false,
        error: describeThrown(`invalid payload for task type "${run.type}": ${problems}`),
        retryable: false,
      };
    }
    const value = await handler.run(parsed.data, { signal, id: run.id, attempt: run.attempt });
    return serializeResult(value, maxResultBytes);
  } catch (error) {
    return { ok: false, error: describeThrown(error), retryable: !isPermanentTaskError(error) };
  }
}
