import type { FastifyInstance } from "fastify";
import type { Registry } from "prom-client";
import type { TaskStore } from "../store/task-store.js";

export interface HealthRoutesOptions {
  store: TaskStore;
  registry: Registry;
}

/** Probes and metrics: no token, so kubelet and Prometheus need no secret. */
export async function healthRoutes(
  app: FastifyInstance,
  options: HealthRoutesOptions,
): Promise<void> {
  const { store, registry } = options;

  app.get("/healthz", async () => ({ status: "ok" }));

  // Readiness turns 503 as soon as the master starts draining, so the load balancer stops
  // sending it new work while it finishes what is in flight.
  app.get("/readyz", async (_request, reply) => {
    if (store.draining) return reply.code(503).send({ status: "draining" });
    return { status: "ready" };
  });

  app.get("/metrics", async (_request, reply) => {
    reply.header("content-type", registry.contentType);
    return registry.metrics();
  });
}
