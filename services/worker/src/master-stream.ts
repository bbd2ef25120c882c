import { MasterProtocolError } from "@taskfleet/protocol/wire";
import {
  STREAM_CALL_ID_MAX,
  type StreamGoingAway,
  WORKER_STREAM_PATH,
  type WorkerCallName,
} from "@taskfleet/protocol/worker-stream";
import WebSocket from "ws";
import { answerError, MasterUnavailableError } from "./master-errors.js";

/** The master answered the upgrade as a master without the stream does: use HTTP instead. */
export class StreamNotOfferedError extends Error {
  override name = "StreamNotOfferedError";
}

interface Pending {
  call: WorkerCallName;
  answerMaxBytes: number;
  timer: NodeJS.Timeout;
  resolve(body: unknown): void;
  reject(error: unknown): void;
}

export interface MasterStreamOptions {
  /** The master's base URL (`http:` or `https:`; the stream is `ws:` or `wss:` beside it). */
  base: URL;
  authorization: string;
  /** The largest answer any call may get. */
  maxPayload: number;
}

/**
 * One worker's stream to the master (docs/protocol.md, "The worker stream"): its calls as
 * messages on one WebSocket, each answered by id. When the stream breaks, every call in flight
 * fails as an unreachable master would fail it, and the stream is done: the client opens another
 * for its next call.
 */
export class MasterStream {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private broken: Error | undefined;
  /** The master is going away: no new calls here; closed once the ones in flight are answered. */
  private retiring = false;

  private constructor(private readonly socket: WebSocket) {
    socket.on("message", (data: Buffer, isBinary: boolean) => this.answer(data, isBinary));
    socket.on("close", (code: number, reason: Buffer) => {
      const why = reason.length > 0 ? `${code} ${reason.toString()}` : String(code);
      this.fail(new MasterUnavailableError(`the worker stream closed (${why})`));
    });
    socket.on("error", (error) =>
      this.fail(new MasterUnavailableError(`worker stream: ${error.message}`)),
    );
  }

  /** Opens a stream; fails with {@link StreamNotOfferedError} when the master has none. */
  static open(options: MasterStreamOptions): Promise<MasterStream> {
    const url = new URL(WORKER_STREAM_PATH, options.base);
    url.protocol = options.base.protocol === "https:" ? "wss:" : "ws:";
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(url, {
        headers: { authorization: options.authorization },
        maxPayload: options.maxPayload,
        perMessageDeflate: false,
        handshakeTimeout: 30_000,
      });
      socket.once("open", () => {
        socket.removeAllListeners("error");
        socket.removeAllListeners("unexpected-response");
        resolve(new MasterStream(socket));
      });
      // `on`: a refused upgrade may bring a second error as the socket is torn down.
      socket.on("error", (error) =>
        reject(new MasterUnavailableError(`GET ${WORKER_STREAM_PATH}: ${error.message}`)),
      );
      socket.once("unexpected-response", (_request, response) => {
        const status = response.statusCode ?? 0;
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => {
          if (chunks.length < 16) chunks.push(chunk);
        });
        response.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let body: unknown = text;
          try {
            body = JSON.parse(text);
          } catch {
            // Not JSON (a proxy's page): the status says enough.
          }
          // 401: a wrong token, as on every route. 5xx, 408, 429: come back later. Anything else
          // (404 from a master older than the stream, 400 or 426 from a proxy that does not pass
          // WebSockets, a 2xx that ignored the upgrade) means no stream here.
          if (status === 401 || status >= 500 || status === 408 || status === 429) {
            reject(answerError(`GET ${WORKER_STREAM_PATH}`, status, body));
          } else reject(new StreamNotOfferedError(`the master answered ${status} to the upgrade`));
          // After the reject: tearing the socket down brings an error of its own.
          socket.terminate();
        });
      });
    });
  }

  /** Whether the stream can take calls; once it cannot, the client opens another. */
  get usable(): boolean {
    return this.broken === undefined && !this.retiring && this.socket.readyState === WebSocket.OPEN;
  }

  /**
   * Sends call `call` with `body` (JSON text) and resolves with the answer's body of a 2xx.
   * `timeoutMs` bounds the wait for the answer: past it the master is taken for dead and the
   * stream is closed. `signal` withdraws the call (the master is told, and stops waiting).
   */
  call(
    call: WorkerCallName,
    body: string,
    answerMaxBytes: number,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<unknown> {
    if (this.broken !== undefined) return Promise.reject(this.broken);
    if (signal?.aborted) return Promise.reject(signal.reason);
    const id = this.nextId;
    this.nextId = id >= STREAM_CALL_ID_MAX ? 1 : id + 1;
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        this.settle(id);
        if (this.socket.readyState === WebSocket.OPEN) {
          this.socket.send(`{"id":${id},"cancel":true}`);
        }
        reject(signal?.reason);
      };
      const timer = setTimeout(() => {
        const error = new MasterUnavailableError(`${call} on the worker stream timed out`);
        this.fail(error);
        this.socket.terminate();
      }, timeoutMs);
      signal?.addEventListener("abort", onAbort, { once: true });
      this.pending.set(id, {
        call,
        answerMaxBytes,
        timer,
        resolve: (answer) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(answer);
        },
        reject: (error) => {
          signal?.removeEventListener("abort", onAbort);
          reject(error);
        },
      });
      this.socket.send(`{"id":${id},"call":"${call}","body":${body}}`);
    });
  }

  close(): void {
    this.fail(new MasterUnavailableError("the worker stream was closed by the worker"));
    this.socket.close(1000);
  }

  /** Removes call `id` from those waiting for an answer, and returns it. */
  private settle(id: number): Pending | undefined {
    const waiting = this.pending.get(id);
    if (waiting === undefined) return undefined;
    this.pending.delete(id);
    clearTimeout(waiting.timer);
    this.closeIfDone();
    return waiting;
  }

  /** A retiring stream closes once nothing is in flight on it. */
  private closeIfDone(): void {
    if (this.retiring && this.pending.size === 0 && this.socket.readyState === WebSocket.OPEN) {
      this.socket.close(1000);
    }
  }

  private answer(data: Buffer, isBinary: boolean): void {
    let message: { id?: unknown; status?: unknown; body?: unknown };
    try {
      if (isBinary) throw new Error("binary");
      message = JSON.parse(data.toString("utf8"));
    } catch {
      this.fail(new MasterProtocolError("the worker stream carried a message that is not JSON"));
      this.socket.terminate();
      return;
    }
    if (message.id === undefined && (message as StreamGoingAway).goingAway === true) {
      this.retiring = true;
      this.closeIfDone();
      return;
    }
    // An answer to a call withdrawn or timed out is dropped.
    const waiting = this.settle(message.id as number);
    if (waiting === undefined) return;
    const status = message.status;
    if (data.length > waiting.answerMaxBytes) {
      waiting.reject(
        new MasterProtocolError(
          `${waiting.call} on the worker stream: answer larger than ${waiting.answerMaxBytes} bytes`,
        ),
      );
    } else if (typeof status === "number" && status >= 200 && status < 300) {
      waiting.resolve(message.body);
    } else {
      const what = `${waiting.call} on the worker stream`;
      waiting.reject(answerError(what, typeof status === "number" ? status : 0, message.body));
    }
  }

  /** Fails every call in flight with `error`; the stream takes no more. */
  private fail(error: Error): void {
    this.broken ??= error;
    for (const id of [...this.pending.keys()]) this.settle(id)?.reject(error);
  }
}
