import type { FastifyReply } from "fastify";

/**
 * A signal that aborts when the client goes away before its answer is sent, so a long poll whose
 * caller has hung up stops waiting (and a lease is not handed to a closed connection).
 */
export function abortWhenClientLeaves(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  reply.raw.once("close", () => {
    if (!reply.raw.writableEnded) controller.abort();
  });
  return controller.signal;
}
