import { type HandlerRun, runHandler } from "./run-handler.js";
import type { TaskHandler } from "./task.js";
import type { RunOutcome } from "./task-pool.js";

/**
 * Runs one attempt of an `inline` task type on the calling (main) thread, with the outcomes a task
 * thread gives: `done` when the handler returns or throws, `aborted` as soon as its signal fires
 * (the handler is told through the same signal; whatever it returns later is dropped).
 */
export function runInline(
  handler: TaskHandler,
  run: HandlerRun,
  signal: AbortSignal,
  maxResultBytes: number,
): Promise<RunOutcome> {
  if (signal.aborted) return Promise.resolve({ kind: "aborted", reason: signal.reason });
  return new Promise((resolve) => {
    const onAbort = () => resolve({ kind: "aborted", reason: signal.reason });
    signal.addEventListener("abort", onAbort, { once: true });
    void runHandler(handler, run, signal, maxResultBytes).then((outcome) => {
      signal.removeEventListener("abort", onAbort);
      resolve({ kind: "done", outcome });
    });
  });
}
