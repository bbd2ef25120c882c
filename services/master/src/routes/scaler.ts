import type { FastifyInstance } from "fastify";
import { requireBearer } from "../auth.js";
import { backlogOf } from "../backlog.js";
import { errorBody } from "../http-errors.js";
import type { TaskStore } from "../store/task-store.js";

export interface ScalerRoutesOptions {
  store: TaskStore;
  /** SCALER_TOKEN; unset, the route answers 404 saying so. */
  scalerToken: string | undefined;
}

/**
 * The route an autoscaler (KEDA's metrics-api scaler) polls, mounted under `/scaler/v1` and
 * served on the internal port. It has a token of its own so that the autoscaler holds neither the
 * client's token nor the workers'.
 */
export async function scalerRoutes(
  app: FastifyInstance,
  options: ScalerRoutesOptions,
): Promise<void> {
  const { store, scalerToken } = options;
  if (scalerToken === undefined) {
    app.get("/backlog", async (request, reply) =>
      reply
        .code(404)
        .send(
          errorBody(
            404,
            `${request.method} ${request.routeOptions.url} is off: SCALER_TOKEN is not set on the master`,
          ),
        ),
    );
    return;
  }
  app.addHook("onRequest", requireBearer(scalerToken));
  app.get("/backlog", async () => backlogOf(await store.stats()));
}
