import type { FastifyInstance } from "fastify";
import { requireBearer } from "../auth.js";
import type { Completion, LeaseRef, TaskStore } from "../store/task-store.js";
import { abortWhenClientLeaves } from "./abort.js";
import { completeRequestSchema, leaseRefsRequestSchema, leaseRequestSchema } from "./schemas.js";

export interface WorkerRoutesOptions {
  store: TaskStore;
  workerToken: string;
}

interface CompletionBody {
  id: string;
  leaseId: string;
  ok: boolean;
  result?: unknown;
  error?: string;
  retryable?: boolean;
}

/** The routes workers call (docs/protocol.md), mounted under `/worker/v1`. */
export async function workerRoutes(
  app: FastifyInstance,
  options: WorkerRoutesOptions,
): Promise<void> {
  const { store } = options;
  app.addHook("onRequest", requireBearer(options.workerToken));

  app.post<{ Body: { workerId: string; max?: number; waitMs?: number } }>(
    "/lease",
    { schema: { body: leaseRequestSchema } },
    async (request, reply) => {
      const { workerId, max = 1, waitMs = 0 } = request.body;
      const signal = waitMs > 0 ? abortWhenClientLeaves(reply) : undefined;
      const tasks = await store.lease(workerId, max, waitMs, signal);
      return { tasks, leaseSeconds: store.leaseSeconds };
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

  app.post<{ Body: { workerId: string; results: CompletionBody[] } }>(
    "/complete",
    { schema: { body: completeRequestSchema } },
    async (request) => {
      const results = request.body.results.map(
        (r): Completion =>
          r.ok
            ? { id: r.id, leaseId: r.leaseId, ok: true, result: r.result }
            : {
                id: r.id,
                leaseId: r.leaseId,
                ok: false,
                // The schema requires an error when ok is false.
                error: r.error as string,
                // A worker that does not say is assumed to have hit a passing failure.
                retryable: r.retryable ?? true,
              },
      );
      return store.complete(request.body.workerId, results);
    },
  );

  app.post<{ Body: { workerId: string; leases: LeaseRef[] } }>(
    "/release",
    { schema: { body: leaseRefsRequestSchema } },
    async (request) => store.release(request.body.workerId, request.body.leases),
  );
}
