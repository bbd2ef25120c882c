import type { FastifyBaseLogger } from "fastify";
import type {
  Completion,
  LeasedTask,
  LeaseRef,
  NextLease,
  TaskStore,
} from "../store/task-store.js";
import { measureValue } from "./payload-limits.js";

export interface WorkerCallsOptions {
  store: TaskStore;
  /** The largest result as JSON bytes: the same as the largest payload, so an echo fits. */
  maxResultBytes: number;
}

export interface LeaseBody {
  workerId: string;
  max?: number;
  waitMs?: number;
  slots?: number;
}

export interface LeaseRefsBody {
  workerId: string;
  leases: LeaseRef[];
}

export interface CompleteBody {
  workerId: string;
  results: CompletionBody[];
  lease?: NextLease;
}

interface CompletionBody {
  id: string;
  leaseId: string;
  ok: boolean;
  result?: unknown;
  error?: string;
  retryable?: boolean;
}

/**
 * A worker call's outcome: the answer's JSON text, or a 503 that tells the worker to back off
 * (the master is draining). Errors thrown (the store unavailable, a bug) are the caller's to
 * answer, as for any request.
 */
export type CallAnswer = { json: string } | { unavailable: string };

/**
 * What each worker call does (docs/protocol.md, "Worker routes"), whichever way it came: an HTTP
 * route (`routes/worker.ts`) or a call on a worker's stream (`worker-stream.ts`). Bodies reach
 * here already checked against the route's schema (`routes/schemas.ts`).
 */
export interface WorkerCalls {
  /** `signal` (given for a lease that waits) aborts the wait: its caller went away. */
  lease(
    body: LeaseBody,
    signal: AbortSignal | undefined,
    log: FastifyBaseLogger,
  ): Promise<CallAnswer>;
  renew(body: LeaseRefsBody): Promise<CallAnswer>;
  complete(body: CompleteBody, log: FastifyBaseLogger): Promise<CallAnswer>;
  release(body: LeaseRefsBody): Promise<CallAnswer>;
}

const drainingMessage = "the master is shutting down and hands out no more work";

export function workerCalls(options: WorkerCallsOptions): WorkerCalls {
  const { store } = options;
  return {
    async lease({ workerId, max = 1, waitMs = 0, slots }, signal, log) {
      // A 503 rather than an empty list: a worker backs off on it instead of polling again at
      // once, and a poll cut short by the shutdown is told apart from one that found no work.
      if (store.draining) return { unavailable: drainingMessage };
      const tasks = await store.lease(workerId, max, waitMs, { signal, slots });
      if (tasks.length === 0 && store.draining) return { unavailable: drainingMessage };
      return { json: await leaseAnswerJson(store, workerId, tasks, log) };
    },

    async renew({ workerId, leases }) {
      const outcome = await store.renew(workerId, leases);
      return { json: JSON.stringify({ ...outcome, leaseSeconds: store.leaseSeconds }) };
    },

    async complete({ workerId, results, lease }, log) {
      const completions = results.map((r): Completion => {
        if (r.ok) {
          // A result past the limits fails its task with the reason rather than the whole
          // request: the other results in the batch still count, and the client reading the
          // task learns why instead of the task running again until its attempts run out.
          const measured = measureValue(r.result, "the result", options.maxResultBytes);
          if ("problem" in measured) {
            return {
              id: r.id,
              leaseId: r.leaseId,
              ok: false,
              error: `the master refused the result: ${measured.problem}`,
              retryable: false,
            };
          }
          return {
            id: r.id,
            leaseId: r.leaseId,
            ok: true,
            result: r.result,
            resultMemoryBytes: measured.memoryBytes,
          };
        }
        return {
          id: r.id,
          leaseId: r.leaseId,
          ok: false,
          // The schema requires an error when ok is false.
          error: r.error as string,
          // A worker that does not say is assumed to have hit a passing failure.
          retryable: r.retryable ?? true,
        };
      });
      // The worker's next lease, in the same round trip and the same store step: the tasks its
      // completions made room for. A draining store leases nothing, and then the answer has no
      // `lease`: the worker asks on its own and backs off on the 503 that gets. Tasks leased
      // before a drain began still go to the worker: they are its now.
      const { leased, ...outcome } = await store.complete(workerId, completions, lease);
      const json = JSON.stringify(outcome);
      if (leased === undefined || (leased.length === 0 && store.draining)) return { json };
      const leaseJson = await leaseAnswerJson(store, workerId, leased, log);
      return { json: `${json.slice(0, -1)},"lease":${leaseJson}}` };
    },

    async release({ workerId, leases }) {
      return { json: JSON.stringify(await store.release(workerId, leases)) };
    },
  };
}

/**
 * A lease answer's JSON, `{"tasks": [...], "leaseSeconds": N}`, for `lease` and for the lease a
 * `complete` carries. Each task is serialized on its own: one that cannot be must fail alone, not
 * turn the whole answer into a 500 after its neighbours were marked running under leases no worker
 * ever saw.
 */
async function leaseAnswerJson(
  store: TaskStore,
  workerId: string,
  tasks: readonly LeasedTask[],
  log: FastifyBaseLogger,
): Promise<string> {
  const parts: string[] = [];
  const unsent: LeaseRef[] = [];
  let problem = "";
  for (const task of tasks) {
    try {
      parts.push(JSON.stringify(task));
    } catch (error) {
      unsent.push({ id: task.id, leaseId: task.leaseId });
      problem = error instanceof Error ? error.message : String(error);
    }
  }
  if (unsent.length > 0) {
    log.error({ taskIds: unsent.map((ref) => ref.id), problem }, "payload not sendable");
    await store.failUnsent(
      workerId,
      unsent,
      `the payload could not be sent to a worker: ${problem}`,
    );
  }
  return `{"tasks":[${parts.join(",")}],"leaseSeconds":${store.leaseSeconds}}`;
}
