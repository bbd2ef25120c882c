import type { FastifyBaseLogger, FastifyInstance } from "fastify";
import { requireBearer } from "../auth.js";
import { unavailable } from "../http-errors.js";
import type {
  Completion,
  LeasedTask,
  LeaseRef,
  NextLease,
  TaskStore,
} from "../store/task-store.js";
import { abortWhenClientLeaves } from "./abort.js";
import { measureValue } from "./payload-limits.js";
import { completeRequestSchema, leaseRefsRequestSchema, leaseRequestSchema } from "./schemas.js";

export interface WorkerRoutesOptions {
  store: TaskStore;
  workerToken: string;
  /** The largest result as JSON bytes: the same as the largest payload, so an echo fits. */
  maxResultBytes: number;
  /** The body limit of `complete`, which carries several results at once. */
  completeBodyLimitBytes: number;
}

interface CompletionBody {
  id: string;
  leaseId: string;
  ok: boolean;
  result?: unknown;
  error?: string;
  retryable?: boolean;
}

const drainingMessage = "the master is shutting down and hands out no more work";

/** The routes workers call (docs/protocol.md), mounted under `/worker/v1`. */
export async function workerRoutes(
  app: FastifyInstance,
  options: WorkerRoutesOptions,
): Promise<void> {
  const { store } = options;
  app.addHook("onRequest", requireBearer(options.workerToken));

  app.post<{ Body: { workerId: string; max?: number; waitMs?: number; slots?: number } }>(
    "/lease",
    { schema: { body: leaseRequestSchema } },
    async (request, reply) => {
      const { workerId, max = 1, waitMs = 0, slots } = request.body;
      // A 503 rather than an empty list: a worker backs off on it instead of polling again at
      // once, and a poll cut short by the shutdown is told apart from one that found no work.
      if (store.draining) return unavailable(reply, drainingMessage);
      const signal = waitMs > 0 ? abortWhenClientLeaves(reply) : undefined;
      const tasks = await store.lease(workerId, max, waitMs, { signal, slots });
      if (tasks.length === 0 && store.draining) return unavailable(reply, drainingMessage);

      return reply
        .type("application/json; charset=utf-8")
        .send(await leaseAnswerJson(store, workerId, tasks, request.log));
    },
  );

  app.post<{ Body: { workerId: string; leases: LeaseRef[] } }>(
    "/renew",
    { schema: { body: leaseRefsRequestSchema } },
    async (request) => {
      const outcome = await store.renew(request.body.workerId, request.body.leases);
      return { ...outcome, leaseSeconds: store.leaseSeconds };
    },
  );

  app.post<{
    Body: { workerId: string; results: CompletionBody[]; lease?: NextLease };
  }>(
    "/complete",
    { schema: { body: completeRequestSchema }, bodyLimit: options.completeBodyLimitBytes },
    async (request, reply) => {
      const results = request.body.results.map((r): Completion => {
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
      const { workerId, lease } = request.body;
      // The worker's next lease, in the same round trip and the same store step: the tasks its
      // completions made room for. A draining store leases nothing, and then the answer has no
      // `lease`: the worker asks on its own and backs off on the 503 that gets. Tasks leased
      // before a drain began still go to the worker: they are its now.
      const { leased, ...outcome } = await store.complete(workerId, results, lease);
      if (leased === undefined || (leased.length === 0 && store.draining)) return outcome;
      const leaseJson = await leaseAnswerJson(store, workerId, leased, request.log);
      return reply
        .type("application/json; charset=utf-8")
        .send(`${JSON.stringify(outcome).slice(0, -1)},"lease":${leaseJson}}`);
    },
  );

  app.post<{ Body: { workerId: string; leases: LeaseRef[] } }>(
    "/release",
    { schema: { body: leaseRefsRequestSchema } },
    async (request) => store.release(request.body.workerId, request.body.leases),
  );
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
