import type { IncomingMessage } from "node:http";
import { hostname } from "node:os";
import { completeBodyLimitBytes, maxPayloadBytes } from "@taskfleet/protocol/limits";
import Fastify, { type FastifyInstance, type FastifyServerOptions, LogController } from "fastify";
import { requireBearer } from "./auth.js";
import type { MasterConfig } from "./config.js";
import { errorBody, formatSchemaError, handleClientError, handleError } from "./http-errors.js";
import { parseJsonBody } from "./json-body.js";
import {
  KEEP_ALIVE_TIMEOUT_MS,
  SOCKET_IDLE_TIMEOUT_MS,
  TIMEOUT_CHECK_INTERVAL_MS,
} from "./limits.js";
import { createMetrics } from "./metrics.js";
import { exposureOf, InternalListener, wrongPortMessage } from "./ports.js";
import { healthRoutes } from "./routes/health.js";
import { scalerRoutes } from "./routes/scaler.js";
import { ajvOptions } from "./routes/schemas.js";
import { taskRoutes } from "./routes/tasks.js";
import { workerRoutes } from "./routes/worker.js";
import { workerCalls } from "./routes/worker-calls.js";
import { openStore } from "./store/open-store.js";
import type { TaskStore } from "./store/task-store.js";
import { WorkerStreams } from "./worker-stream.js";

declare module "fastify" {
  interface FastifyInstance {
    /** The store behind every route; the process drains it on SIGTERM. */
    taskStore: TaskStore;
    /**
     * The second port, built (not listening) when `config.internalPort` is set: `server.ts`
     * starts it after `listen`, and closing the app closes it.
     */
    internalListener: InternalListener | undefined;
  }
}

export type AppConfig = Omit<
  MasterConfig,
  "port" | "host" | "shutdownGraceSeconds" | "shutdownDrainSeconds" | "internalPort" | "store"
> &
  // Tests that build an app for `inject` may leave these out: everything on one port, in memory.
  Partial<Pick<MasterConfig, "internalPort" | "store">>;

/** Answers sent while the master drains carry this header (docs/api.md, "Shutdown"). */
export const DRAINING_HEADER = "taskfleet-draining";

export interface AppOptions {
  config: AppConfig;
  /**
   * The store to serve; by default the one `config.store` names (memory when unset), built from
   * `config`. A store passed in is still closed with the app.
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
    // A client that sends slowly, or not at all, must not hold a connection (and the part of a
    // body it has sent) for ever: Fastify turns Node's request timeout off unless told, and Node
    // checks timeouts only every 30 s. A long poll is not affected: it has arrived whole and then
    // waits (only the idle timeout, past the longest wait, applies to it).
    requestTimeout: config.requestTimeoutSeconds * 1000,
    connectionTimeout: SOCKET_IDLE_TIMEOUT_MS,
    keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    http: {
      headersTimeout: config.headersTimeoutSeconds * 1000,
      connectionsCheckingInterval: TIMEOUT_CHECK_INTERVAL_MS,
    },
    schemaErrorFormatter: formatSchemaError,
    clientErrorHandler: handleClientError,
    ajv: { customOptions: ajvOptions },
  });
  const store =
    options.store ?? openStore(config, metrics.observer, app.log.child({ component: "store" }));
  metrics.setStatsSource(() => store.stats());
  app.decorate("taskStore", store);
  // Past this many open sockets new ones are closed at once: a flood of connections costs
  // the master a bounded amount of memory instead of all of it.
  app.server.maxConnections = config.maxConnections;
  const internal =
    config.internalPort === undefined
      ? undefined
      : new InternalListener(app.server, config.maxConnections);
  app.decorate("internalListener", internal);

  // Only JSON is accepted. The parser is our own so that a syntax error says where it is.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("application/json", { parseAs: "string" }, (_request, body, done) => {
    const parsed = parseJsonBody(body as string);
    if ("problem" in parsed) done(Object.assign(new Error(parsed.problem), { statusCode: 400 }));
    else done(null, parsed.value);
  });

  app.setErrorHandler(handleError);
  // Fastify reads and parses the body of a request to an unknown route before its not-found
  // handler runs; this hook answers first, so such a request costs its headers and no more.
  // Under /v1, /worker and /scaler the token is checked first, as on the real routes, so that a
  // client without one learns nothing about which routes exist.
  const apiAuth = config.apiToken === undefined ? undefined : requireBearer(config.apiToken);
  const workerAuth = requireBearer(config.workerToken);
  const scalerAuth =
    config.scalerToken === undefined ? undefined : requireBearer(config.scalerToken);
  const under = (path: string, prefix: string) => path === prefix || path.startsWith(`${prefix}/`);
  app.addHook("onRequest", async (request, reply) => {
    const path = request.url.split("?", 1)[0] as string;
    // With two ports, a route exists only on its own: the load balancer's port shows nothing of
    // the worker API or the metrics, not even whether a token is right.
    if (internal !== undefined) {
      const port = internal.accepted(request.raw.socket) ? "internal" : "public";
      const exposure = exposureOf(path);
      if (exposure !== "both" && exposure !== port) {
        return reply
          .code(404)
          .send(errorBody(404, wrongPortMessage(request.method, path, exposure)));
      }
    }
    if (!request.is404) return;
    const auth = under(path, "/v1")
      ? apiAuth
      : under(path, "/worker")
        ? workerAuth
        : under(path, "/scaler")
          ? scalerAuth
          : undefined;
    if (auth !== undefined) {
      await auth(request, reply);
      if (reply.sent) return reply;
    }
    return reply.code(404).send(errorBody(404, `no route for ${request.method} ${path}`));
  });
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

  app.addHook("onSend", (request, reply, payload, done) => {
    // While draining, each answer closes its connection: a connection that is busy when the
    // server starts closing would otherwise sit idle on keep-alive and hold the exit until the
    // grace period runs out. The second header tells a client whose long poll was cut short
    // that the task is not finished and the master is going away.
    if (store.draining) {
      reply.header("connection", "close");
      reply.header(DRAINING_HEADER, "true");
    }
    // An answer sent before the body was read (401, 404): Node then reads the rest of the body
    // and drops it, to keep the connection for the next request. Up to the body limit that is
    // cheap and lets the client read the answer; past it (or for a length not declared) the
    // connection is closed instead, though a client still sending may then see a reset.
    const unread = request.raw.complete === false;
    const chunked = request.headers["transfer-encoding"] !== undefined;
    const declared = Number(request.headers["content-length"] ?? 0);
    if (unread && (chunked || declared > config.bodyLimitBytes)) {
      reply.header("connection", "close");
    }
    done(null, payload);
  });

  app.register(healthRoutes, { store, registry: metrics.registry });
  app.register(taskRoutes, {
    prefix: "/v1",
    store,
    apiToken: config.apiToken,
    defaultMaxAttempts: config.maxAttempts,
    defaultTimeoutSeconds: config.taskTimeoutSeconds,
    maxPayloadBytes: maxPayloadBytes(config.bodyLimitBytes),
  });
  const calls = workerCalls({ store, maxResultBytes: maxPayloadBytes(config.bodyLimitBytes) });
  app.register(workerRoutes, {
    prefix: "/worker/v1",
    calls,
    workerToken: config.workerToken,
    completeBodyLimitBytes: completeBodyLimitBytes(config.bodyLimitBytes),
  });
  // Workers' calls over one WebSocket each (docs/protocol.md, "The worker stream"). Node's server
  // hands over only the stream's upgrades; any other request is served whatever it asks.
  const streams = new WorkerStreams({
    calls,
    store,
    workerToken: config.workerToken,
    completeBodyLimitBytes: completeBodyLimitBytes(config.bodyLimitBytes),
    internal,
    log: app.log.child({ component: "worker-stream" }),
    metrics,
  });
  (
    app.server as { shouldUpgradeCallback?: (request: IncomingMessage) => boolean }
  ).shouldUpgradeCallback = WorkerStreams.wants;
  app.server.on("upgrade", (request, socket, head) => streams.upgrade(request, socket, head));
  app.register(scalerRoutes, { prefix: "/scaler/v1", store, scalerToken: config.scalerToken });

  // Both ports stop taking connections together when closing begins; worker streams close as
  // their calls in flight are answered.
  app.addHook("preClose", async () => {
    internal?.close();
    await streams.close();
  });
  app.addHook("onClose", async () => {
    await store.close();
  });
  return app;
}
