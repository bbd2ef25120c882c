import { parentPort, workerData } from "node:worker_threads";
import { describeThrown, type HandlerOutcome } from "./handler-outcome.js";
import { handlerOwner, runHandler } from "./run-handler.js";
import type { TaskHandler } from "./task.js";
import type { FromThread, ThreadData, ToThread } from "./task-pool.js";
import { loadTaskRegistry } from "./tasks/registry.js";

/**
 * One task thread of the {@link TaskPool} (task-pool.ts): loads the task files and runs one task
 * at a time, as the main thread asks. Whatever a handler does here (throws anything, throws from
 * a timer, blocks, exits) stays in this thread; the main thread keeps renewing leases and decides
 * what to report. Everything sent back is plain text and numbers, never a thrown value itself.
 */

if (!parentPort) throw new Error("task-thread.js runs only as a worker thread");
const port = parentPort;
const { tasksDirectory, maxResultBytes } = workerData as ThreadData;
const registry = loadTaskRegistry(tasksDirectory);

let current: { id: string; controller: AbortController } | undefined;

const send = (message: FromThread) => port.postMessage(message);

// Awaited by each run; a failure to load is reported as that run's failure, not as unhandled.
// Either way the thread is ready: the pool hands it tasks from now on.
registry.then(
  () => send({ kind: "ready" }),
  () => send({ kind: "ready" }),
);

// An error nothing caught (thrown from a timer, an unhandled rejection) leaves the thread in an
// unknown state: say which task's code threw, then end the thread. The main thread fails that
// task, or gives back the one running now if the error came from a task that already finished.
process.on("uncaughtException", (error) => {
  send({ kind: "crash", owner: handlerOwner(), error: describeThrown(error) });
  process.exit(1);
});

port.on("message", (message: ToThread) => {
  if (message.kind === "run") {
    void run(message);
  } else if (message.kind === "abort" && current?.id === message.id) {
    const reason = new Error(message.message);
    reason.name = message.name;
    current.controller.abort(reason);
  }
});

async function run(request: Extract<ToThread, { kind: "run" }>): Promise<void> {
  const controller = new AbortController();
  current = { id: request.id, controller };
  const outcome = await attempt(request, controller.signal);
  if (current?.id === request.id) current = undefined;
  send({ kind: "done", id: request.id, outcome });
}

async function attempt(
  request: Extract<ToThread, { kind: "run" }>,
  signal: AbortSignal,
): Promise<HandlerOutcome> {
  let handler: TaskHandler;
  try {
    const found = (await registry).get(request.type);
    if (!found) {
      return { ok: false, error: `unknown task type "${request.type}"`, retryable: false };
    }
    handler = found;
  } catch (error) {
    return {
      ok: false,
      error: `the task files could not be loaded: ${describeThrown(error)}`,
      retryable: true,
    };
  }
  // Aborted while the task files were loading: the main thread has moved on, nothing to start.
  if (signal.aborted) return { ok: false, error: "aborted before it started", retryable: true };
  return runHandler(handler, request, signal, maxResultBytes);
}
