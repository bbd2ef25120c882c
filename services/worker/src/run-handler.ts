import { describeThrown, type HandlerOutcome, serializeResult } from "./handler-outcome.js";
import { isPermanentTaskError, type TaskHandler } from "./task.js";

/** One attempt of one task, as the worker hands it to a handler. */
export interface HandlerRun {
  id: string;
  type: string;
  payload: unknown;
  attempt: number;
}

/**
 * Runs one attempt through its handler, on whichever thread calls it (a task thread, or the main
 * thread for an `inline` type): checks the payload against the handler's schema (a refusal names
 * each field and is not retried), runs the handler, and turns its value into the result's JSON.
 * Never rejects: whatever the handler throws becomes the attempt's failure, retryable unless it is
 * a PermanentTaskError.
 */
export async function runHandler(
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
