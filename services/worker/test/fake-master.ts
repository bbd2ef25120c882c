import { randomUUID } from "node:crypto";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import { STREAM_GOING_AWAY_MESSAGE, WORKER_STREAM_PATH } from "@taskfleet/protocol/worker-stream";
import { type WebSocket, WebSocketServer } from "ws";

const unauthorized = { error: "Unauthorized", message: "missing or wrong worker token" };

/** Where a call came from: an HTTP request or a stream message. */
interface Channel {
  via: RecordedCall["via"];
  /** Answers with `status` and the body's JSON text. */
  send(status: number, body: string): void;
  /** Whether the caller went away (its connection closed). */
  gone(): boolean;
  onGone(listener: () => void): void;
}

/** A task as the fake master keeps it. */
export interface FakeTask {
  id: string;
  type: string;
  payload: unknown;
  status: "queued" | "running" | "succeeded" | "failed";
  attempts: number;
  maxAttempts: number;
  timeoutSeconds: number;
  leaseId?: string;
  leaseExpiresAt?: number;
  result?: unknown;
  error?: string;
  completions: number;
}

export interface RecordedCall {
  route: string;
  body: Record<string, unknown>;
  at: number;
  /** How it came: an HTTP request, or a message on the worker stream. */
  via: "http" | "stream";
}

/**
 * Just enough of the master's worker routes (docs/protocol.md) to drive a real worker in tests:
 * long-poll leases, renewals, idempotent completions, releases, lease expiry, retries without
 * backoff; as HTTP routes and as calls on the worker stream. Records every call (an upgrade as
 * route `stream`). Listens on 127.0.0.1 only.
 */
export class FakeMaster {
  readonly token = "test-worker-token";
  readonly tasks = new Map<string, FakeTask>();
  readonly calls: RecordedCall[] = [];
  leaseSeconds: number;
  /** While set, every worker route (or only those in `failRoutes`) answers with this status. */
  failWith: number | undefined;
  /** Limits `failWith` to these routes. */
  failRoutes: string[] | undefined;
  /** While set, `complete` answers 413 for a batch with more results than this. */
  maxResultsPerComplete: number | undefined;
  /** While set, any request with a larger body is answered 413, as the master's body limit does. */
  bodyLimitBytes: number | undefined;
  /**
   * Lease body properties this master does not know: a body holding one is answered 400 naming
   * it, as a master from before the property does (its schema allows no other property).
   */
  unknownLeaseProperties: string[] = [];
  /** The same for `complete` bodies (a master from before `lease` there refuses it). */
  unknownCompleteProperties: string[] = [];
  /** While set, `lease` hands out up to this many tasks, whatever the worker asked for. */
  leaseMaxOverride: number | undefined;
  /** Answers of a route wait this long (milliseconds), like a master on a slow network. */
  readonly answerDelayMs: Record<string, number> = {};
  /**
   * Replaces a route's answer with what this returns (given the answer the fake would send), as
   * a master with a bug would: the status stays 200.
   */
  readonly rewrite: Record<string, (answer: Record<string, unknown>) => unknown> = {};
  /** Size in bytes of every request body, in order, by route. */
  readonly bodyBytes: { route: string; bytes: number }[] = [];
  private readonly queue: string[] = [];
  private readonly waiters = new Set<() => void>();
  private readonly server: http.Server;
  private readonly sweeper: NodeJS.Timeout;
  private port = 0;

  /**
   * Whether the worker stream is served (as by the master); without it, the upgrade is answered
   * 404, as by a master from before the stream, and the worker calls over HTTP.
   */
  offersStream: boolean;
  /** Ids of the stream calls the worker withdrew. */
  readonly cancelled: number[] = [];
  private readonly streamServer = new WebSocketServer({ noServer: true, perMessageDeflate: false });
  private readonly streams = new Set<WebSocket>();

  constructor(options: { leaseSeconds?: number; stream?: boolean } = {}) {
    this.leaseSeconds = options.leaseSeconds ?? 30;
    this.offersStream = options.stream ?? true;
    this.server = http.createServer((request, response) => this.handle(request, response));
    this.server.on("upgrade", (request, socket, head) => this.upgrade(request, socket, head));
    this.sweeper = setInterval(() => this.expireLeases(), 50);
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async listen(port = 0): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(port, "127.0.0.1", resolve));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  /** Worker streams open now. */
  get openStreams(): number {
    return this.streams.size;
  }

  /** Sends the going-away notice on every open stream, as a draining master does. */
  goAway(): void {
    for (const stream of this.streams) stream.send(STREAM_GOING_AWAY_MESSAGE);
  }

  /** Stops listening and drops open connections, as a master that crashed would. */
  async stop(): Promise<void> {
    for (const stream of this.streams) stream.terminate();
    this.server.closeAllConnections();
    for (const wake of this.waiters) wake();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  async close(): Promise<void> {
    clearInterval(this.sweeper);
    if (this.server.listening) await this.stop();
  }

  add(
    type: string,
    payload: unknown,
    options: { maxAttempts?: number; timeoutSeconds?: number } = {},
  ): string {
    const id = randomUUID();
    this.tasks.set(id, {
      id,
      type,
      payload,
      status: "queued",
      attempts: 0,
      maxAttempts: options.maxAttempts ?? 3,
      timeoutSeconds: options.timeoutSeconds ?? 300,
      completions: 0,
    });
    this.queue.push(id);
    for (const wake of this.waiters) wake();
    return id;
  }

  callsTo(route: string): RecordedCall[] {
    return this.calls.filter((call) => call.route === route);
  }

  /**
   * Resolves once `predicate` holds, checking every few milliseconds, or rejects after `ms`. The
   * default leaves room for starting task threads on a busy machine (under tsx each takes up to
   * a second or two).
   */
  async until(predicate: () => boolean, ms = 10_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!predicate()) {
      if (Date.now() > deadline) throw new Error("condition not met in time");
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  finished(): FakeTask[] {
    return [...this.tasks.values()].filter(
      (t) => t.status === "succeeded" || t.status === "failed",
    );
  }

  private expireLeases(): void {
    const now = Date.now();
    for (const task of this.tasks.values()) {
      if (
        task.status === "running" &&
        task.leaseExpiresAt !== undefined &&
        task.leaseExpiresAt < now
      ) {
        this.endAttempt(task, "lease expired", true);
      }
    }
  }

  private endAttempt(task: FakeTask, error: string, retryable: boolean): void {
    task.leaseId = undefined;
    task.leaseExpiresAt = undefined;
    if (retryable && task.attempts < task.maxAttempts) {
      task.status = "queued";
      this.queue.push(task.id);
      for (const wake of this.waiters) wake();
    } else {
      task.status = "failed";
      task.error = error;
    }
  }

  private holds(lease: { id: string; leaseId: string }): FakeTask | undefined {
    const task = this.tasks.get(lease.id);
    return task?.status === "running" && task.leaseId === lease.leaseId ? task : undefined;
  }

  private handle(request: http.IncomingMessage, response: http.ServerResponse): void {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      const route = (request.url ?? "").replace(/^\/worker\/v1\//, "");
      const raw = Buffer.concat(chunks);
      if (request.headers.authorization !== `Bearer ${this.token}`) {
        this.calls.push({ route, body: {}, at: Date.now(), via: "http" });
        response.writeHead(401, { "content-type": "application/json" });
        response.end(JSON.stringify(unauthorized));
        return;
      }
      this.call(route, raw, {
        via: "http",
        send: (status, body) => {
          if (response.destroyed) return;
          response.writeHead(status, { "content-type": "application/json" });
          response.end(body);
        },
        gone: () => response.destroyed,
        onGone: (listener) => response.once("close", listener),
      });
    });
  }

  /**
   * Serves the worker stream as the master does (docs/protocol.md): each message a call to the
   * route of its name, answered by id, with everything this fake does to a route's answer.
   */
  private upgrade(request: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    const refuse = (status: number, body: unknown) => {
      const text = JSON.stringify(body);
      socket.end(
        `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\n\r\n${text}`,
      );
    };
    this.calls.push({ route: "stream", body: {}, at: Date.now(), via: "http" });
    if (!this.offersStream || request.url !== WORKER_STREAM_PATH) {
      refuse(404, { error: "NotFound", message: `no route for GET ${request.url}` });
      return;
    }
    if (request.headers.authorization !== `Bearer ${this.token}`) {
      refuse(401, unauthorized);
      return;
    }
    this.streamServer.handleUpgrade(request, socket, head, (stream) => {
      this.streams.add(stream);
      const goneListeners = new Set<() => void>();
      stream.on("close", () => {
        this.streams.delete(stream);
        for (const listener of goneListeners) listener();
      });
      stream.on("message", (data: Buffer) => {
        const message = JSON.parse(data.toString("utf8")) as {
          id: number;
          call?: string;
          body?: unknown;
          cancel?: boolean;
        };
        if (message.cancel === true) {
          this.cancelled.push(message.id);
          return;
        }
        this.call(String(message.call), Buffer.from(JSON.stringify(message.body)), {
          via: "stream",
          send: (status, body) => {
            if (stream.readyState === stream.OPEN) {
              stream.send(`{"id":${message.id},"status":${status},"body":${body}}`);
            }
          },
          gone: () => stream.readyState !== stream.OPEN,
          onGone: (listener) => goneListeners.add(listener),
        });
      });
    });
  }

  /** A call to `route` with body `raw`, however it came; answered through `channel`. */
  private call(route: string, raw: Buffer, channel: Channel): void {
    const send = (status: number, body: unknown) => {
      const answer = () => {
        if (channel.gone()) return;
        const rewrite = this.rewrite[route];
        const final = status === 200 && rewrite ? rewrite(body as Record<string, unknown>) : body;
        channel.send(status, JSON.stringify(final));
      };
      const wait = this.answerDelayMs[route];
      if (wait) setTimeout(answer, wait);
      else answer();
    };
    this.bodyBytes.push({ route, bytes: raw.length });
    const body = JSON.parse(raw.toString("utf8") || "{}");
    this.calls.push({ route, body, at: Date.now(), via: channel.via });
    const unknownProperties =
      route === "lease"
        ? this.unknownLeaseProperties
        : route === "complete"
          ? this.unknownCompleteProperties
          : [];
    const unknown = unknownProperties.find((name) => name in body);
    if (unknown !== undefined) {
      send(400, { error: "BadRequest", message: `body/${unknown} is not an allowed property` });
      return;
    }
    if (this.failWith !== undefined && (!this.failRoutes || this.failRoutes.includes(route))) {
      send(this.failWith, { error: "Unavailable", message: "fake master told to fail" });
      return;
    }
    if (this.bodyLimitBytes !== undefined && raw.length > this.bodyLimitBytes) {
      send(413, {
        error: "PayloadTooLarge",
        message: `body is larger than the limit of ${this.bodyLimitBytes} bytes`,
      });
      return;
    }
    switch (route) {
      case "lease":
        this.lease(body, send, channel);
        return;
      case "renew": {
        const renewed: string[] = [];
        const lost: string[] = [];
        for (const lease of body.leases) {
          const task = this.holds(lease);
          if (task) {
            task.leaseExpiresAt = Date.now() + this.leaseSeconds * 1000;
            renewed.push(lease.id);
          } else {
            lost.push(lease.id);
          }
        }
        send(200, { renewed, lost, leaseSeconds: this.leaseSeconds });
        return;
      }
      case "complete": {
        if (
          this.maxResultsPerComplete !== undefined &&
          body.results.length > this.maxResultsPerComplete
        ) {
          send(413, { error: "PayloadTooLarge", message: "body too large" });
          return;
        }
        const accepted: string[] = [];
        const rejected: { id: string; reason: string }[] = [];
        for (const result of body.results) {
          const task = this.holds(result);
          if (!task) {
            rejected.push({ id: result.id, reason: "lease not current" });
            continue;
          }
          accepted.push(result.id);
          task.completions++;
          if (result.ok) {
            task.status = "succeeded";
            task.result = result.result;
            task.leaseId = undefined;
          } else {
            this.endAttempt(task, result.error, result.retryable);
            task.error = result.error;
          }
        }
        // The next lease the request carried: whatever is queued now, no waiting.
        if (body.lease !== undefined) {
          send(200, { accepted, rejected, lease: this.handOut(body.lease.max) });
        } else {
          send(200, { accepted, rejected });
        }
        return;
      }
      case "release": {
        const released: string[] = [];
        for (const lease of body.leases) {
          const task = this.holds(lease);
          if (!task) continue;
          task.attempts--;
          task.status = "queued";
          task.leaseId = undefined;
          this.queue.push(task.id);
          released.push(task.id);
        }
        send(200, { released });
        return;
      }
      default:
        send(404, { error: "NotFound", message: `no route ${route}` });
    }
  }

  /** Leases up to `max` queued tasks (or `leaseMaxOverride`): a lease answer's body. */
  private handOut(max: number): { tasks: unknown[]; leaseSeconds: number } {
    const tasks = [];
    const limit = this.leaseMaxOverride ?? max;
    while (tasks.length < limit && this.queue.length > 0) {
      const task = this.tasks.get(this.queue.shift() as string) as FakeTask;
      if (task.status !== "queued") continue;
      task.status = "running";
      task.attempts++;
      task.leaseId = randomUUID();
      task.leaseExpiresAt = Date.now() + this.leaseSeconds * 1000;
      tasks.push({
        id: task.id,
        leaseId: task.leaseId,
        type: task.type,
        payload: task.payload,
        attempt: task.attempts,
        timeoutSeconds: task.timeoutSeconds,
      });
    }
    return { tasks, leaseSeconds: this.leaseSeconds };
  }

  private lease(
    body: { max: number; waitMs: number },
    send: (status: number, body: unknown) => void,
    channel: Channel,
  ): void {
    const handOut = () => send(200, this.handOut(body.max));
    // A rewritten answer goes out at once: the master with a bug that it stands for does not wait.
    if (this.queue.length > 0 || body.waitMs === 0 || this.rewrite.lease) {
      handOut();
      return;
    }
    const wake = () => {
      clearTimeout(timer);
      this.waiters.delete(wake);
      if (!channel.gone()) handOut();
    };
    const timer = setTimeout(wake, body.waitMs);
    this.waiters.add(wake);
    channel.onGone(() => {
      clearTimeout(timer);
      this.waiters.delete(wake);
    });
  }
}
