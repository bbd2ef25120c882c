import { hostname } from "node:os";
import Fastify, { type FastifyInstance, type FastifyServerOptions, LogController } from "fastify";
import type { MasterConfig } from "./config.js";
import { errorBody, formatSchemaError, handleError } from "./http-errors.js";
import { parseJsonBody } from "./json-body.js";
import { createMetrics } from "./metrics.js";
import { healthRoutes } from "./routes/health.js";
import { taskRoutes } from "./routes/tasks.js";
import { workerRoutes } from "./routes/worker.js";
import { MemoryTaskStore } from "./store/memory-store.js";
import type { TaskStore } from "./store/task-store.js";

declare module "fastify" {
  interface FastifyInstance {
    /** The store behind every route; the process drains it on SIGTERM. */
    taskStore: TaskStore;
  }
}

export type AppConfig = Omit<MasterConfig, "port" | "host" | "shutdownGraceSeconds">;

export interface AppOptions {
  config: AppConfig;
  /**
   * The store to serve; by default an in-memory one built from `config`. A store passed in is
   * still closed with the app.
   */
  store?: TaskStore;
  /** Fastify's logger setting; by default JSON lines at `config.logLevel` on stdout. */
  logger?: FastifyServerOptions["logger"];
}

/**
 * The whole HTTP surface of the master as a Fastify instance that has not started listening:
 * tests drive it with `inject`, `server.ts` puts it on a socket.
 */
export function buildApp(options: AppOptions): FastifyInstance {
  const { config } = options;
  const metrics = createMetrics();
  const store =
    options.store ??
    new MemoryTaskStore({
      leaseSeconds: config.leaseSeconds,
      resultTtlSeconds: config.resultTtlSeconds,
      resultMaxCount: config.resultMaxCount,
      retryBackoffMs: config.retryBackoffMs,
      observer: metrics.observer,
    });
  metrics.setStatsSource(() => store.stats());

  const app = Fastify({
    logger: options.logger ?? {
      level: config.logLevel,
      // Which service wrote a line, as the worker's lines say; the pod name is the host name.
      base: { service: "taskfleet-master", pid: process.pid, hostname: hostname() },
      // Level names rather than numbers, which log pipelines map to a severity as they are.
      formatters: { level: (label) => ({ level: label }) },
    },
    // One line per request would cost more than the request itself at the throughput the master
    // is built for; failures are still logged by the error handler.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: config.bodyLimitBytes,
    schemaErrorFormatter: formatSchemaError,
    ajv: {
      // Wrong types are errors, not something to coerce; unknown properties are errors, not
      // something to drop silently.
      customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: false },
    },
  });
  app.decorate("taskStore", store);

  // Only JSON is accepted. The parser is our own so that a syntax error says where it is.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("application/json", { parseAs: "string" }, (_request, body, done) => {
    const parsed = parseJsonBody(body as string);
    if ("problem" in parsed) done(Object.assign(new Error(parsed.problem), { statusCode: 400 }));
    else done(null, parsed.value);
  });

  app.setErrorHandler(handleError(config.bodyLimitBytes));
  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split("?", 1)[0];
    reply.code(404).send(errorBody(404, `no route for ${request.method} ${path}`));
  });

  app.addHook("onResponse", (request, reply, done) => {
    metrics.httpDuration.observe(
      {
        method: request.method,
        // Unknown routes share one label so that scanning paths cannot blow up the series count.
        route: request.routeOptions.url ?? "unmatched",
        status_code: reply.statusCode,
      },
      reply.elapsedTime / 1000,
    );
    done();
  });

  // While draining, each answer closes its connection: a connection that is busy when the
  // server starts closing would otherwise sit idle on keep-alive and hold the exit until the
  // grace period runs out.
  app.addHook("onSend", (_request, reply, payload, done) => {
    if (store.draining) reply.header("connection", "close");
    done(null, payload);
  });

  app.register(healthRoutes, { store, registry: metrics.registry });
  app.register(taskRoutes, {
    prefix: "/v1",
    store,
    apiToken: config.apiToken,
    defaultMaxAttempts: config.maxAttempts,
    defaultTimeoutSeconds: config.taskTimeoutSeconds,
  });
  app.register(workerRoutes, { prefix: "/worker/v1", store, workerToken: config.workerToken });

  app.addHook("onClose", async () => {
    await store.close();
  });
  return app;
}
