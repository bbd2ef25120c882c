import type { FastifyInstance, FastifyReply } from "fastify";
import { requireBearer } from "../auth.js";
import { unavailable } from "../http-errors.js";
import { abortWhenClientLeaves } from "./abort.js";
import { completeRequestSchema, leaseRefsRequestSchema, leaseRequestSchema } from "./schemas.js";
import type {
  CallAnswer,
  CompleteBody,
  LeaseBody,
  LeaseRefsBody,
  WorkerCalls,
} from "./worker-calls.js";

export interface WorkerRoutesOptions {
  calls: WorkerCalls;
  workerToken: string;
  /** The body limit of `complete`, which carries several results at once. */
  completeBodyLimitBytes: number;
}

/**
 * The routes workers call (docs/protocol.md), mounted under `/worker/v1`; what each does is in
 * `worker-calls.ts`, which the worker stream calls too.
 */
export async function workerRoutes(
  app: FastifyInstance,
  options: WorkerRoutesOptions,
): Promise<void> {
  const { calls } = options;
  app.addHook("onRequest", requireBearer(options.workerToken));

  app.post<{ Body: LeaseBody }>(
    "/lease",
    { schema: { body: leaseRequestSchema } },
    async (request, reply) => {
      const waits = (request.body.waitMs ?? 0) > 0;
      const signal = waits ? abortWhenClientLeaves(reply) : undefined;
      return answer(reply, await calls.lease(request.body, signal, request.log));
    },
  );

  app.post<{ Body: LeaseRefsBody }>(
    "/renew",
    { schema: { body: leaseRefsRequestSchema } },
    async (request, reply) => answer(reply, await calls.renew(request.body)),
  );

  app.post<{ Body: CompleteBody }>(
    "/complete",
    { schema: { body: completeRequestSchema }, bodyLimit: options.completeBodyLimitBytes },
    async (request, reply) => answer(reply, await calls.complete(request.body, request.log)),
  );

  app.post<{ Body: LeaseRefsBody }>(
    "/release",
    { schema: { body: leaseRefsRequestSchema } },
    async (request, reply) => answer(reply, await calls.release(request.body)),
  );
}

function answer(reply: FastifyReply, outcome: CallAnswer): FastifyReply {
  if ("unavailable" in outcome) return unavailable(reply, outcome.unavailable);
  return reply.type("application/json; charset=utf-8").send(outcome.json);
}
