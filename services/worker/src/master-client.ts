import * as http from "node:http";
import * as https from "node:https";
import { limits } from "@taskfleet/protocol/limits";
import {
  type CompleteResponse,
  type LeaseAnswer,
  type LeasedTask,
  type LeaseRef,
  MasterProtocolError,
  type ReleaseResponse,
  type RenewResponse,
  readCompleteAnswer,
  readLeaseAnswer,
  readReleaseAnswer,
  readRenewAnswer,
} from "@taskfleet/protocol/wire";
import { workerEnv } from "@taskfleet/protocol/worker-env";
import type { WorkerCallName } from "@taskfleet/protocol/worker-stream";
import { answerError, MasterRejectedError, MasterUnavailableError } from "./master-errors.js";
import { MasterStream, StreamNotOfferedError } from "./master-stream.js";

export type { CompleteResponse, LeaseAnswer, LeasedTask, LeaseRef, ReleaseResponse, RenewResponse };

/**
 * A task's outcome as the worker reports it. A success carries its result already serialized
 * (by the task's thread), so the worker holds results as compact JSON text whose size it knows.
 */
export type TaskResult =
  | { id: string; leaseId: string; ok: true; resultJson: string }
  | { id: string; leaseId: string; ok: false; error: string; retryable: boolean };

/** A result as it goes on the wire: one element of `complete`'s `results`, and its size. */
export interface EncodedResult {
  id: string;
  leaseId: string;
  json: string;
  bytes: number;
}

/** Serializes one result for `complete` (the wire format of docs/protocol.md is unchanged). */
export function encodeResult(result: TaskResult): EncodedResult {
  const head = `{"id":${JSON.stringify(result.id)},"leaseId":${JSON.stringify(result.leaseId)}`;
  const json = result.ok
    ? `${head},"ok":true,"result":${result.resultJson}}`
    : `${head},"ok":false,"error":${JSON.stringify(result.error)},"retryable":${result.retryable}}`;
  return { id: result.id, leaseId: result.leaseId, json, bytes: Buffer.byteLength(json) };
}

export { MasterProtocolError, MasterRejectedError, MasterUnavailableError };

/** The operations a worker needs from the master; an interface so tests can stand in for it. */
export interface MasterApi {
  lease(workerId: string, max: number, waitMs: number, signal?: AbortSignal): Promise<LeaseAnswer>;
  renew(workerId: string, leases: readonly LeaseRef[]): Promise<RenewResponse>;
  /**
   * Reports results. With `lease`, the same request asks for up to `lease.max` more tasks at once
   * (no wait); the answer's `lease` holds them, or is absent when the master did not lease.
   */
  complete(
    workerId: string,
    results: readonly EncodedResult[],
    lease?: { max: number },
  ): Promise<CompleteResponse>;
  release(workerId: string, leases: readonly LeaseRef[]): Promise<ReleaseResponse>;
  close(): void;
}

export interface MasterClientOptions {
  /** Base URL of the master, e.g. `http://127.0.0.1:8080`. */
  masterUrl: string;
  /** Sent as `Authorization: Bearer <token>` on every request. */
  workerToken: string;
  /** A request that gets no answer within this time (beyond a long poll's wait) fails. */
  requestTimeoutMs?: number;
  /**
   * Largest lease answer accepted per task asked for; a larger answer is a protocol error, not
   * something to buffer. Default: the master's default body limit (1 MiB, which bounded the
   * payload when it was submitted) plus 8 KiB for the task's other fields.
   */
  leaseAnswerBytesPerTask?: number;
  /**
   * The worker's task slots (its CONCURRENCY), sent with every lease request so that the master
   * can tell the fleet's capacity (`workerSlots` in its stats). Unset: not sent, and the master
   * counts each request's `max` instead.
   */
  slots?: number;
}

/**
 * What a master older than it refuses: the optional request fields `slots` in a lease request and
 * `lease` in a completion (its schema allows no other property), and the worker stream (it
 * answers the upgrade 404).
 */
type Optional = "slots" | "lease" | "stream";

/**
 * After a master refused something optional, the client goes without it for this long, then
 * offers it again, so that a rolling update that brings the masters in after the workers costs
 * nothing.
 */
export const optionalFieldRetryMs = 60_000;

/** Renew, complete and release answers list ids the worker sent: a few MiB at the most. */
const idListAnswerMaxBytes = 8 * 1024 * 1024;

/**
 * The worker routes as calls on the worker stream (one WebSocket, docs/protocol.md), or, to a
 * master without it, as HTTP requests over Node's own client with keep-alive sockets. Measured on
 * loopback (sequential `complete` calls, Node 20), `node:http` took about 0.2 ms a call and the
 * global `fetch` about 0.8 ms; the stream takes less again (docs/performance.md).
 */
export class MasterClient implements MasterApi {
  private readonly base: URL;
  private readonly agent: http.Agent;
  private readonly transport: typeof http | typeof https;
  private readonly authorization: string;
  private readonly requestTimeoutMs: number;
  private readonly leaseAnswerBytesPerTask: number;
  private readonly slots: number | undefined;
  /** When a master last refused each optional thing (`Date.now()`); absent: never. */
  private readonly refusedAt = new Map<Optional, number>();
  /** The stream calls go on while it is usable; another is opened when it breaks. */
  private stream: MasterStream | undefined;
  private streamOpening: Promise<MasterStream> | undefined;

  constructor(options: MasterClientOptions) {
    const { slots } = options;
    const { min, max } = workerEnv.CONCURRENCY;
    if (slots !== undefined && !(Number.isInteger(slots) && slots >= min && slots <= max)) {
      throw new RangeError(`slots must be an integer from ${min} to ${max} (got ${slots})`);
    }
    this.slots = slots;
    this.base = new URL(
      options.masterUrl.endsWith("/") ? options.masterUrl : `${options.masterUrl}/`,
    );
    this.transport = this.base.protocol === "https:" ? https : http;
    this.agent = new this.transport.Agent({ keepAlive: true, maxSockets: 8 });
    this.authorization = `Bearer ${options.workerToken}`;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this.leaseAnswerBytesPerTask = options.leaseAnswerBytesPerTask ?? 1024 * 1024 + 8192;
  }

  async lease(workerId: string, max: number, waitMs: number, signal?: AbortSignal) {
    const slots = this.offers("slots") ? this.slots : undefined;
    const limit = this.leaseAnswerLimit(max);
    const ask = (withSlots: number | undefined) =>
      this.post(
        "lease",
        JSON.stringify({ workerId, max, waitMs, slots: withSlots }),
        limit,
        waitMs,
        signal,
      );
    let answer: unknown;
    try {
      answer = await ask(slots);
    } catch (error) {
      // A master older than the field answers 400 naming it: ask again as workers before it did.
      if (slots === undefined || !this.refuses(error, "slots")) throw error;
      answer = await ask(undefined);
    }
    return readLeaseAnswer(answer, max);
  }

  async renew(workerId: string, leases: readonly LeaseRef[]) {
    const body = JSON.stringify({ workerId, leases });
    return readRenewAnswer(await this.post("renew", body, idListAnswerMaxBytes));
  }

  /** The body is put together from the results' JSON as they are held, not serialized again. */
  async complete(workerId: string, results: readonly EncodedResult[], lease?: { max: number }) {
    let head = `{"workerId":${JSON.stringify(workerId)},"results":[`;
    results.forEach((result, index) => {
      head += index === 0 ? result.json : `,${result.json}`;
    });
    head += "]";
    const send = (leaseMax: number | undefined) =>
      this.post(
        "complete",
        leaseMax === undefined
          ? `${head}}`
          : `${head},"lease":${JSON.stringify({ max: leaseMax, slots: this.slots })}}`,
        idListAnswerMaxBytes + (leaseMax === undefined ? 0 : this.leaseAnswerLimit(leaseMax)),
      );
    const leaseMax = lease !== undefined && this.offers("lease") ? lease.max : undefined;
    try {
      return readCompleteAnswer(await send(leaseMax), leaseMax);
    } catch (error) {
      // A master older than the field refuses the whole request, results included, and records
      // nothing: report them again without it, and lease apart as workers before it did.
      if (leaseMax === undefined || !this.refuses(error, "lease")) throw error;
      return readCompleteAnswer(await send(undefined));
    }
  }

  async release(workerId: string, leases: readonly LeaseRef[]) {
    const body = JSON.stringify({ workerId, leases });
    return readReleaseAnswer(await this.post("release", body, idListAnswerMaxBytes));
  }

  close(): void {
    this.stream?.close();
    this.agent.destroy();
  }

  /** The largest lease answer accepted for `max` tasks; a larger one is a protocol error. */
  private leaseAnswerLimit(max: number): number {
    return max * this.leaseAnswerBytesPerTask + 64 * 1024;
  }

  /** Whether to send an optional field: never refused, or refused long enough ago to try again. */
  private offers(field: Optional): boolean {
    const at = this.refusedAt.get(field);
    return at === undefined || Date.now() - at > optionalFieldRetryMs;
  }

  /** Whether `error` is a master refusing `field` as unknown; if so, remembers it. */
  private refuses(error: unknown, field: Optional): boolean {
    const refused =
      error instanceof MasterRejectedError &&
      error.status === 400 &&
      error.message.includes(`body/${field}`);
    if (refused) this.refusedAt.set(field, Date.now());
    return refused;
  }

  /**
   * Sends `payload` (JSON text) to `route` and resolves with the parsed answer of a 2xx: on the
   * worker stream, or as an HTTP request when the master has none.
   */
  private async post(
    route: WorkerCallName,
    payload: string,
    answerMaxBytes: number,
    waitMs = 0,
    signal?: AbortSignal,
  ): Promise<unknown> {
    // A long poll legitimately stays quiet for waitMs; anything beyond that is a dead peer.
    const timeoutMs = waitMs + this.requestTimeoutMs;
    if (this.offers("stream")) {
      let stream: MasterStream | undefined;
      try {
        stream = await this.openStream();
      } catch (error) {
        if (!(error instanceof StreamNotOfferedError)) throw error;
        this.refusedAt.set("stream", Date.now());
      }
      if (stream !== undefined) {
        return stream.call(route, payload, answerMaxBytes, timeoutMs, signal);
      }
    }
    return this.request(route, payload, answerMaxBytes, timeoutMs, signal);
  }

  /** The stream, opened if there is none or the last one broke; concurrent calls share one. */
  private async openStream(): Promise<MasterStream> {
    if (this.stream?.usable) return this.stream;
    this.streamOpening ??= MasterStream.open({
      base: this.base,
      authorization: this.authorization,
      maxPayload: idListAnswerMaxBytes + this.leaseAnswerLimit(this.slots ?? limits.leaseMax),
    }).then(
      (stream) => {
        this.stream = stream;
        this.streamOpening = undefined;
        return stream;
      },
      (error: unknown) => {
        this.streamOpening = undefined;
        throw error;
      },
    );
    return this.streamOpening;
  }

  /** `post` as an HTTP request. */
  private request(
    route: WorkerCallName,
    payload: string,
    answerMaxBytes: number,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<unknown> {
    const url = new URL(`worker/v1/${route}`, this.base);
    return new Promise<unknown>((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      const request = this.transport.request(url, {
        method: "POST",
        agent: this.agent,
        signal,
        headers: {
          authorization: this.authorization,
          "content-type": "application/json",
          "content-length": Buffer.byteLength(payload),
        },
      });
      request.setTimeout(timeoutMs, () => {
        request.destroy(new MasterUnavailableError(`POST /worker/v1/${route} timed out`));
      });
      request.on("error", (error) => {
        if (signal?.aborted) reject(signal.reason);
        else if (error instanceof MasterUnavailableError || error instanceof MasterProtocolError)
          reject(error);
        else reject(new MasterUnavailableError(`POST /worker/v1/${route}: ${error.message}`));
      });
      request.on("response", (response) => {
        const chunks: Buffer[] = [];
        let received = 0;
        response.on("data", (chunk: Buffer) => {
          received += chunk.length;
          if (received > answerMaxBytes) {
            reject(
              new MasterProtocolError(
                `POST /worker/v1/${route}: answer larger than ${answerMaxBytes} bytes`,
              ),
            );
            request.destroy();
            return;
          }
          chunks.push(chunk);
        });
        response.on("error", (error) =>
          reject(new MasterUnavailableError(`POST /worker/v1/${route}: ${error.message}`)),
        );
        response.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          const status = response.statusCode ?? 0;
          if (status >= 200 && status < 300) {
            try {
              resolve(JSON.parse(text));
            } catch {
              reject(new MasterProtocolError(`POST /worker/v1/${route}: answer is not JSON`));
            }
            return;
          }
          reject(answerError(`POST /worker/v1/${route}`, status, text));
        });
      });
      request.end(payload);
    });
  }
}
