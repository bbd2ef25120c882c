import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import {
  STREAM_CALL_ID_MAX,
  STREAM_CALLS_IN_FLIGHT_MAX,
  STREAM_ENVELOPE_BYTES,
  STREAM_GOING_AWAY_MESSAGE,
  streamCloseCodes,
  WORKER_STREAM_PATH,
  type WorkerCallName,
  workerCallNames,
} from "@taskfleet/protocol/worker-stream";
import { Ajv, type ValidateFunction } from "ajv";
import type { FastifyBaseLogger } from "fastify";
import { type RawData, type WebSocket, WebSocketServer } from "ws";
import { bearerCheck } from "./auth.js";
import {
  answerOnSocket,
  errorBody,
  formatSchemaError,
  storeUnavailableMessage,
} from "./http-errors.js";
import { RETRY_AFTER_SECONDS, STREAM_PING_INTERVAL_MS } from "./limits.js";
import type { MasterMetrics } from "./metrics.js";
import { exposureOf, type InternalListener, wrongPortMessage } from "./ports.js";
import {
  ajvOptions,
  completeRequestSchema,
  leaseRefsRequestSchema,
  leaseRequestSchema,
} from "./routes/schemas.js";
import type { CallAnswer, WorkerCalls } from "./routes/worker-calls.js";
import { StoreUnavailableError, type TaskStore } from "./store/task-store.js";

export interface WorkerStreamsOptions {
  calls: WorkerCalls;
  store: TaskStore;
  workerToken: string;
  /** The largest body `complete` takes; a message may be that and its envelope. */
  completeBodyLimitBytes: number;
  /** The internal port, when there is one: streams are opened there only. */
  internal: InternalListener | undefined;
  log: FastifyBaseLogger;
  metrics: Pick<MasterMetrics, "streamCallDuration" | "workerStreams">;
}

const schemas: Record<WorkerCallName, object> = {
  lease: leaseRequestSchema,
  renew: leaseRefsRequestSchema,
  complete: completeRequestSchema,
  release: leaseRefsRequestSchema,
};

/** A WebSocket close reason is at most 123 bytes. */
function closeReason(text: string): string {
  return Buffer.from(text)
    .subarray(0, 123)
    .toString("utf8")
    .replace(/\uFFFD$/, "");
}

/**
 * The worker stream (docs/protocol.md, "The worker stream"): each worker's calls over one
 * WebSocket, answered by the same `WorkerCalls` as the HTTP routes after the same schema checks.
 * The upgrade is authenticated once, with the worker token, on the port the worker API is on.
 */
export class WorkerStreams {
  private readonly server: WebSocketServer;
  private readonly validators: Record<WorkerCallName, ValidateFunction>;
  private readonly authorize: (header: string | undefined) => string | undefined;
  /** Each open stream and how to close it once its calls in flight are answered. */
  private readonly open = new Map<WebSocket, () => void>();
  private readonly heartbeat: NodeJS.Timeout;
  /** Streams that answered the last ping (or opened since). */
  private readonly alive = new WeakSet<WebSocket>();
  private closing = false;

  constructor(private readonly options: WorkerStreamsOptions) {
    this.server = new WebSocketServer({
      noServer: true,
      maxPayload: options.completeBodyLimitBytes + STREAM_ENVELOPE_BYTES,
      perMessageDeflate: false,
      clientTracking: false,
    });
    const ajv = new Ajv(ajvOptions);
    this.validators = Object.fromEntries(
      workerCallNames.map((name) => [name, ajv.compile(schemas[name])]),
    ) as Record<WorkerCallName, ValidateFunction>;
    this.authorize = bearerCheck(options.workerToken);
    this.heartbeat = setInterval(() => {
      for (const stream of this.open.keys()) {
        if (!this.alive.has(stream)) {
          stream.terminate();
          continue;
        }
        this.alive.delete(stream);
        stream.ping();
      }
    }, STREAM_PING_INTERVAL_MS).unref();
  }

  /** Whether Node's HTTP server should hand a request to {@link upgrade}: the stream's only. */
  static wants(request: IncomingMessage): boolean {
    return (request.url ?? "").split("?", 1)[0] === WORKER_STREAM_PATH;
  }

  /** Answers an upgrade request: a stream for a worker with the token, an error otherwise. */
  upgrade(request: IncomingMessage, socket: Duplex, head: Buffer): void {
    const path = (request.url ?? "").split("?", 1)[0] as string;
    const method = request.method ?? "GET";
    if (path !== WORKER_STREAM_PATH) {
      // Only on a Node without `shouldUpgradeCallback` (see `wants`) do other upgrades get here.
      answerOnSocket(socket, 404, `no route for ${method} ${path} upgrades the connection`);
      return;
    }
    const { internal } = this.options;
    if (internal !== undefined && !internal.accepted(request.socket)) {
      answerOnSocket(socket, 404, wrongPortMessage(method, path, exposureOf(path)));
      return;
    }
    const problem = this.authorize(request.headers.authorization);
    if (problem !== undefined) {
      answerOnSocket(socket, 401, problem, { "www-authenticate": "Bearer" });
      return;
    }
    if (this.closing) {
      answerOnSocket(socket, 503, "the master is shutting down", {
        "retry-after": String(RETRY_AFTER_SECONDS),
      });
      return;
    }
    this.server.handleUpgrade(request, socket, head, (stream) => this.serve(stream));
  }

  /**
   * Stops opening streams; each open one closes once its calls in flight are answered (a
   * draining store answers waiting leases at once). Resolves when all have closed.
   */
  async close(): Promise<void> {
    this.closing = true;
    clearInterval(this.heartbeat);
    const closed = [...this.open.keys()].map(
      (stream) => new Promise<void>((resolve) => stream.once("close", () => resolve())),
    );
    for (const closeWhenIdle of this.open.values()) closeWhenIdle();
    await Promise.all(closed);
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private serve(stream: WebSocket): void {
    const { calls, store, log, metrics } = this.options;
    /** Calls in flight by id; a lease that waits has a controller to withdraw it. */
    const inFlight = new Map<number, AbortController | undefined>();
    let goingAway = false;
    let noticeSent = false;
    const closeWhenIdle = () => {
      goingAway = true;
      // A lease still waiting is answered now, with what it has.
      for (const controller of inFlight.values()) controller?.abort();
      if (inFlight.size === 0) {
        stream.close(streamCloseCodes.goingAway, "the master is shutting down");
      }
    };
    this.open.set(stream, closeWhenIdle);
    this.alive.add(stream);
    metrics.workerStreams.inc();
    stream.on("pong", () => this.alive.add(stream));
    stream.on("error", (error) => log.debug({ err: error }, "worker stream failed"));
    stream.on("close", () => {
      this.open.delete(stream);
      metrics.workerStreams.dec();
      // Leases still waiting stop waiting: nobody is there to take what they would lease.
      for (const controller of inFlight.values()) controller?.abort();
    });

    const send = (id: number, call: string, status: number, json: string, started: number) => {
      inFlight.delete(id);
      metrics.streamCallDuration.observe(
        { call, status_code: status },
        (performance.now() - started) / 1000,
      );
      if (stream.readyState !== stream.OPEN) return;
      stream.send(`{"id":${id},"status":${status},"body":${json}}`);
      // Draining: the worker moves its next calls to another stream, as an HTTP answer while
      // draining closes its connection. It closes this one itself, so a completion it sends
      // meanwhile is not lost in a close.
      if (store.draining && !noticeSent) {
        noticeSent = true;
        stream.send(STREAM_GOING_AWAY_MESSAGE);
      }
      if (goingAway && inFlight.size === 0) closeWhenIdle();
    };
    const refuse = (id: number, call: string, status: number, message: string) =>
      send(id, call, status, JSON.stringify(errorBody(status, message)), performance.now());
    const violation = (message: string) =>
      stream.close(streamCloseCodes.notACall, closeReason(message));

    stream.on("message", (data: RawData, isBinary: boolean) => {
      if (isBinary) return violation("messages are JSON text, not binary");
      let message: unknown;
      try {
        message = JSON.parse(data.toString());
      } catch (error) {
        return violation(`a message is not JSON: ${(error as Error).message}`);
      }
      if (typeof message !== "object" || message === null) {
        return violation("a message must be a JSON object");
      }
      const { id, call, body, cancel } = message as Record<string, unknown>;
      if (!Number.isInteger(id) || (id as number) < 1 || (id as number) > STREAM_CALL_ID_MAX) {
        return violation(`id must be an integer from 1 to ${STREAM_CALL_ID_MAX}`);
      }
      const callId = id as number;
      if (cancel === true) {
        inFlight.get(callId)?.abort();
        return;
      }
      if (inFlight.has(callId)) return violation(`call ${callId} is already in flight`);
      const name = call as WorkerCallName;
      if (typeof call !== "string" || !workerCallNames.includes(name)) {
        return refuse(
          callId,
          String(call),
          400,
          `call must be one of ${JSON.stringify(workerCallNames)}`,
        );
      }
      if (inFlight.size >= STREAM_CALLS_IN_FLIGHT_MAX) {
        return refuse(
          callId,
          name,
          429,
          `more than ${STREAM_CALLS_IN_FLIGHT_MAX} calls in flight on one stream`,
        );
      }
      const validate = this.validators[name];
      if (!validate(body)) {
        return refuse(callId, name, 400, formatSchemaError(validate.errors ?? [], "body").message);
      }
      // Only a lease that waits can be withdrawn, or stopped when its stream closes.
      const waits = name === "lease" && ((body as { waitMs?: number }).waitMs ?? 0) > 0;
      const controller = waits ? new AbortController() : undefined;
      inFlight.set(callId, controller);
      const started = performance.now();
      this.dispatch(calls, name, body, controller?.signal).then(
        (answer) => {
          if ("unavailable" in answer) {
            send(callId, name, 503, JSON.stringify(errorBody(503, answer.unavailable)), started);
          } else send(callId, name, 200, answer.json, started);
        },
        (error: unknown) => {
          if (error instanceof StoreUnavailableError) {
            log.warn({ err: error.message }, "task store unavailable");
            send(
              callId,
              name,
              503,
              JSON.stringify(errorBody(503, storeUnavailableMessage)),
              started,
            );
          } else {
            log.error({ err: error, call: name }, "worker stream call failed");
            send(callId, name, 500, JSON.stringify(errorBody(500, "internal error")), started);
          }
        },
      );
    });
  }

  private dispatch(
    calls: WorkerCalls,
    name: WorkerCallName,
    body: unknown,
    signal: AbortSignal | undefined,
  ): Promise<CallAnswer> {
    const { log } = this.options;
    // The body passed the call's schema: it has the shape the call takes.
    switch (name) {
      case "lease":
        return calls.lease(body as Parameters<WorkerCalls["lease"]>[0], signal, log);
      case "renew":
        return calls.renew(body as Parameters<WorkerCalls["renew"]>[0]);
      case "complete":
        return calls.complete(body as Parameters<WorkerCalls["complete"]>[0], log);
      case "release":
        return calls.release(body as Parameters<WorkerCalls["release"]>[0]);
    }
  }
}
