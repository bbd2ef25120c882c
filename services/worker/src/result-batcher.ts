import { Backoff } from "@taskfleet/protocol/backoff";
import { limits, RESULT_ENVELOPE_BYTES } from "@taskfleet/protocol/limits";
import type { Logger } from "./logger.js";
import {
  type EncodedResult,
  encodeResult,
  type LeaseAnswer,
  type LeaseRef,
  type MasterApi,
  MasterRejectedError,
  type TaskResult,
} from "./master-client.js";
import { delay } from "./task.js";

/** A result not yet accepted by the master, serialized once, and whether it reports a success. */
type HeldResult = EncodedResult & { ok: boolean };

export interface ResultBatcherOptions {
  /** The master's worker routes. */
  master: MasterApi;
  /** Names this worker on the master. */
  workerId: string;
  logger: Logger;
  /**
   * `MAX_RESULT_BYTES`: no result added is larger (a larger one failed its task), and one
   * `complete` request carries at most this plus 4 KiB.
   */
  maxResultBytes: number;
  /** `RESULT_BUFFER_BYTES`: the results not yet accepted that make {@link ResultBatcher.isFull}. */
  bufferBytes: number;
  /** First delay after a `complete` failed; doubles up to `maxBackoffMs`. */
  initialBackoffMs: number;
  /** Longest delay between attempts to send results. */
  maxBackoffMs: number;
  /** The worker's stop signal: once aborted, sending without a deadline gives up, not backs off. */
  signal: AbortSignal;
  /** A `complete` request got a valid answer. */
  onReachable: () => void;
  /** A `complete` request failed and will be retried after a backoff. */
  onUnreachable: (error: unknown) => void;
  /** After every `complete` attempt, accepted or not: the buffer may have room again. */
  afterSend: () => void;
  /**
   * Asked just before each `complete` request is sent: how many tasks it should lease as well (0:
   * none). Whatever it returns above 0 is answered by one {@link onCarriedLease} call.
   */
  leaseToCarry?: () => number;
  /**
   * The lease a `complete` request carried: its answer, or undefined when the request failed or
   * the master leased nothing for it. Awaited before the next request.
   */
  onCarriedLease?: (answer: LeaseAnswer | undefined) => Promise<void>;
}

/**
 * Sends finished results to the master: the results of one event-loop turn go in one `complete`
 * request, split so that none is over the master's body limit or `limits.workerBatchMax`. Failed
 * requests are retried with backoff, a refused batch goes again one result at a time so that the
 * others in it are not lost, and the results not yet accepted are counted against
 * `RESULT_BUFFER_BYTES`, which the worker checks before it leases more. A request may carry the
 * worker's next lease ({@link ResultBatcherOptions.leaseToCarry}).
 */
export class ResultBatcher {
  private readonly master: MasterApi;
  private readonly workerId: string;
  private readonly log: Logger;
  private readonly requestMaxBytes: number;
  private readonly bufferBytes: number;
  private readonly backoff: Backoff;
  private readonly signal: AbortSignal;
  private readonly onReachable: () => void;
  private readonly onUnreachable: (error: unknown) => void;
  private readonly afterSend: () => void;
  private readonly leaseToCarry: () => number;
  private readonly onCarriedLease: (answer: LeaseAnswer | undefined) => Promise<void>;

  private pendingResults: HeldResult[] = [];
  private sendingResults: HeldResult[] = [];
  /** Bytes of the results pending or being sent: what `bufferBytes` bounds. */
  private bufferedBytes = 0;
  private bufferFull = false;
  private flushScheduled = false;
  /** The last `complete` request failed and its results wait to be sent again. */
  private retrying = false;
  private flushing: Promise<void> | undefined;

  constructor(options: ResultBatcherOptions) {
    this.master = options.master;
    this.workerId = options.workerId;
    this.log = options.logger;
    this.requestMaxBytes = options.maxResultBytes + RESULT_ENVELOPE_BYTES;
    this.bufferBytes = options.bufferBytes;
    this.backoff = new Backoff(options.initialBackoffMs, options.maxBackoffMs);
    this.signal = options.signal;
    this.onReachable = options.onReachable;
    this.onUnreachable = options.onUnreachable;
    this.afterSend = options.afterSend;
    this.leaseToCarry = options.leaseToCarry ?? (() => 0);
    this.onCarriedLease = options.onCarriedLease ?? (async () => {});
  }

  /** A request is due once this event-loop turn is over (results were added since the last). */
  get sendScheduled(): boolean {
    return this.flushScheduled;
  }

  /** Results not sent yet, or sent and to be sent again: what a final {@link drain} left over. */
  get pendingCount(): number {
    return this.pendingResults.length;
  }

  /** Queues a task's result; the results added in one event-loop turn go in one request. */
  add(result: TaskResult): void {
    const encoded = { ...encodeResult(result), ok: result.ok };
    this.pendingResults.push(encoded);
    this.bufferedBytes += encoded.bytes;
    this.scheduleFlush();
  }

  /**
   * True while the results not yet accepted fill the buffer: leasing waits for them to drain.
   * Logs when that changes.
   */
  isFull(): boolean {
    const full = this.bufferedBytes >= this.bufferBytes;
    if (full !== this.bufferFull) {
      this.bufferFull = full;
      if (full) {
        this.log.warn(
          { bytes: this.bufferedBytes, results: this.pendingResults.length },
          "results waiting for the master fill RESULT_BUFFER_BYTES; leasing paused",
        );
      } else {
        this.log.info("results drained; leasing again");
      }
    }
    return full;
  }

  /** The leases of the results not yet accepted, those being sent first: they need renewing. */
  *leases(): Iterable<LeaseRef> {
    yield* this.sendingResults;
    yield* this.pendingResults;
  }

  /**
   * For shutdown: waits out a send already under way (it gives up once the worker is stopped),
   * then sends what is left, retrying until `deadline` (a `Date.now()` time).
   */
  async drain(deadline: number): Promise<void> {
    await this.flushing;
    await this.flush(deadline);
  }

  /** Coalesces the completions of one event-loop turn into one request, with no fixed delay. */
  private scheduleFlush(): void {
    if (this.flushScheduled || this.flushing) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      void this.flush();
    });
  }

  private flush(deadline?: number): Promise<void> {
    this.flushing ??= this.sendResults(deadline).finally(() => {
      this.flushing = undefined;
      // Added after the last batch was taken but while this send was still finishing (a task
      // run inline can finish within the microtasks of a lease answer): their flush was skipped.
      // (A send given up because the worker stopped is left to the shutdown's drain.)
      if (deadline === undefined && !this.signal.aborted && this.pendingResults.length > 0) {
        this.scheduleFlush();
      }
    });
    return this.flushing;
  }

  /**
   * The oldest pending results that fit one request: within the master's body limit (each result
   * alone fits, since a larger one failed its task) and its count limit.
   */
  private takeBatch(): HeldResult[] {
    let bytes = 64 + Buffer.byteLength(JSON.stringify(this.workerId));
    let count = 0;
    for (const result of this.pendingResults) {
      if (count === limits.workerBatchMax) break;
      if (count > 0 && bytes + result.bytes + 1 > this.requestMaxBytes) break;
      bytes += result.bytes + 1;
      count++;
    }
    return this.pendingResults.splice(0, count);
  }

  private async sendResults(deadline?: number): Promise<void> {
    while (this.pendingResults.length > 0) {
      if (deadline !== undefined && Date.now() >= deadline) return;
      const batch = this.takeBatch();
      this.sendingResults = batch;
      // A request that is being retried carries no lease: the lease loop asks on its own, so a
      // master that fails completions alone does not also stop the worker leasing.
      const carry = this.retrying ? 0 : this.leaseToCarry();
      let carried: LeaseAnswer | undefined;
      try {
        const answer = await this.master.complete(
          this.workerId,
          batch,
          carry > 0 ? { max: carry } : undefined,
        );
        carried = answer.lease;
        this.retrying = false;
        for (const result of batch) this.settled(result);
        this.backoff.reset();
        this.onReachable();
        for (const rejected of answer.rejected) {
          this.log.warn(
            { taskId: rejected.id, reason: rejected.reason },
            "the master rejected a completion",
          );
        }
      } catch (error) {
        if (error instanceof MasterRejectedError) {
          await this.sendOneByOne(batch, error);
        } else {
          this.pendingResults = batch.concat(this.pendingResults);
          this.retrying = true;
          if (this.signal.aborted && deadline === undefined) return;
          await this.backOff(error, deadline);
        }
      } finally {
        this.sendingResults = [];
        if (carry > 0) await this.onCarriedLease(carried);
        this.afterSend();
      }
    }
  }

  /**
   * A refused batch (one result the master cannot take) must not lose the other results in it:
   * send them one at a time, and turn a refused result into a failure report.
   */
  private async sendOneByOne(batch: HeldResult[], cause: MasterRejectedError): Promise<void> {
    if (batch.length === 1) {
      const [result] = batch as [HeldResult];
      this.log.error({ taskId: result.id, err: cause }, "the master refused a task's result");
      this.settled(result);
      if (result.ok) {
        this.add({
          id: result.id,
          leaseId: result.leaseId,
          ok: false,
          error: `the master refused the result: ${cause.message}`.slice(0, limits.errorMaxChars),
          retryable: false,
        });
      }
      return;
    }
    for (const result of batch) {
      try {
        await this.master.complete(this.workerId, [result]);
        this.settled(result);
      } catch (error) {
        if (error instanceof MasterRejectedError) await this.sendOneByOne([result], error);
        else this.pendingResults.push(result);
      }
    }
  }

  /** A result the master has answered for (accepted, rejected or refused): its bytes are free. */
  private settled(result: HeldResult): void {
    this.bufferedBytes -= result.bytes;
  }

  /** Waits the backoff's next delay; cut short when the worker stops or the deadline nears. */
  private async backOff(error: unknown, deadline?: number): Promise<void> {
    this.onUnreachable(error);
    let wait = this.backoff.next();
    if (deadline !== undefined) wait = Math.max(0, Math.min(wait, deadline - Date.now()));
    if (deadline === undefined) await delay(wait, this.signal).catch(() => undefined);
    else await delay(wait);
  }
}
