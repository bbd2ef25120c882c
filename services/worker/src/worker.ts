import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import { Backoff } from "./backoff.js";
import { defaultResultBufferBytes } from "./config.js";
import type { HandlerOutcome } from "./handler-outcome.js";
import type { Logger } from "./logger.js";
import {
  type EncodedResult,
  encodeResult,
  type LeaseAnswer,
  type LeasedTask,
  type LeaseRef,
  type MasterApi,
  MasterProtocolError,
  MasterRejectedError,
} from "./master-client.js";
import { defaultMaxResultBytes, masterLimits, resultEnvelopeBytes } from "./protocol.js";
import { delay } from "./task.js";
import { type RunOutcome, TaskPool } from "./task-pool.js";
import type { TaskCatalog } from "./tasks/registry.js";

/**
 * Leases per renew or release request. Well under the master's 10,000, and small enough that the
 * request (about 100 bytes a lease) stays far below its default 1 MiB body limit.
 */
const leasesPerRequest = 4096;

export interface WorkerOptions {
  /** The master's worker routes. */
  master: MasterApi;
  /** The task files: the folder the task threads load, and the types it defines. */
  tasks: TaskCatalog;
  /** Names this worker on the master. */
  workerId: string;
  /** Tasks run at once, each on its own thread. */
  concurrency: number;
  logger: Logger;
  /** How long one lease request waits on the master for work (long poll). Default 20 s. */
  longPollMs?: number;
  /** First delay after the master could not be reached; doubles up to `maxBackoffMs`. Default 100. */
  initialBackoffMs?: number;
  /** Longest delay between attempts to reach the master. Default 5,000. */
  maxBackoffMs?: number;
  /** After the grace time, how long shutdown keeps trying to release and complete. Default 5,000. */
  finalFlushMs?: number;
  /**
   * `MAX_RESULT_BYTES`: a result whose JSON is larger fails its task at once (the master would
   * refuse the request); one `complete` request carries at most this plus 4 KiB. Default
   * 1 MiB − 4 KiB, for the master's default `BODY_LIMIT_BYTES`.
   */
  maxResultBytes?: number;
  /**
   * `RESULT_BUFFER_BYTES`: while results not yet accepted by the master take this many bytes, the
   * worker leases nothing new. Default 16 MiB.
   */
  resultBufferBytes?: number;
  /** How long an aborted handler gets to return before its thread is terminated. Default 1,000. */
  abortGraceMs?: number;
}

/** Why a task's signal aborted; decides what the worker reports for it. */
class TaskTimeout extends Error {
  override name = "TaskTimeout";
}
class LeaseLost extends Error {
  override name = "LeaseLost";
}
class ShuttingDown extends Error {
  override name = "ShuttingDown";
}

interface HeldTask {
  id: string;
  leaseId: string;
  type: string;
  attempt: number;
  controller: AbortController;
  timer?: NodeJS.Timeout;
}

/** A result not yet accepted by the master, serialized once, and whether it reports a success. */
type HeldResult = EncodedResult & { ok: boolean };

/**
 * Pulls tasks from the master and runs them, each in a task thread (task-pool.ts): leases up to
 * the free concurrency per long poll and gives back anything beyond that, renews every held lease
 * from the main thread (which runs no handler code, so nothing a handler does can starve it),
 * sends completions in batches bounded in bytes, backs off when the master fails or breaks the
 * protocol, and on {@link shutdown} stops leasing, lets running tasks finish within a grace time
 * and gives back the rest. Owns no process concerns (signals, exit), so tests drive it directly.
 */
export class Worker {
  private readonly master: MasterApi;
  private readonly taskTypes: ReadonlySet<string>;
  private readonly pool: TaskPool;
  private readonly workerId: string;
  private readonly concurrency: number;
  private readonly log: Logger;
  private readonly longPollMs: number;
  private readonly initialBackoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly finalFlushMs: number;
  private readonly requestMaxBytes: number;
  private readonly resultBufferBytes: number;

  private readonly held = new Map<string, HeldTask>();
  private pendingResults: HeldResult[] = [];
  private sendingResults: HeldResult[] = [];
  /** Bytes of the results pending or being sent: what `resultBufferBytes` bounds. */
  private bufferedBytes = 0;
  private bufferFull = false;
  private flushScheduled = false;
  private flushing: Promise<void> | undefined;

  private readonly leaseBackoff: Backoff;
  private readonly resultsBackoff: Backoff;
  private readonly stopController = new AbortController();
  private capacityWaiter: (() => void) | undefined;
  private idleWaiter: (() => void) | undefined;
  private renewTimer: NodeJS.Timeout | undefined;
  private leaseSeconds: number | undefined;
  private reachable = true;
  private loop: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;

  constructor(options: WorkerOptions) {
    this.master = options.master;
    this.taskTypes = new Set(options.tasks.types);
    this.workerId = options.workerId;
    this.concurrency = options.concurrency;
    this.log = options.logger;
    this.longPollMs = options.longPollMs ?? 20_000;
    this.initialBackoffMs = options.initialBackoffMs ?? 100;
    this.maxBackoffMs = options.maxBackoffMs ?? 5_000;
    this.finalFlushMs = options.finalFlushMs ?? 5_000;
    const maxResultBytes = options.maxResultBytes ?? defaultMaxResultBytes;
    this.requestMaxBytes = maxResultBytes + resultEnvelopeBytes;
    this.resultBufferBytes = options.resultBufferBytes ?? defaultResultBufferBytes;
    this.leaseBackoff = new Backoff(this.initialBackoffMs, this.maxBackoffMs);
    this.resultsBackoff = new Backoff(this.initialBackoffMs, this.maxBackoffMs);
    this.pool = new TaskPool({
      tasksDirectory: options.tasks.directory,
      size: options.concurrency,
      maxResultBytes,
      abortGraceMs: options.abortGraceMs,
      logger: options.logger,
    });
  }

  /** Tasks this worker holds right now (running, or waiting to be released). */
  get heldCount(): number {
    return this.held.size;
  }

  /**
   * Starts pulling work. The promise settles when the worker has stopped: it resolves after
   * {@link shutdown}, and rejects if the master refuses this worker's token (nothing can work then).
   */
  run(): Promise<void> {
    this.loop ??= this.leaseLoop();
    return this.loop;
  }

  /**
   * Stops leasing at once, lets running tasks finish for up to `graceMs`, then aborts and
   * releases the rest, sends every result it has and stops the task threads. Calling it again
   * returns the same promise.
   */
  shutdown(graceMs: number): Promise<void> {
    this.stopping ??= this.stop(graceMs);
    return this.stopping;
  }

  private get stopped(): boolean {
    return this.stopController.signal.aborted;
  }

  private async leaseLoop(): Promise<void> {
    while (!this.stopped) {
      const free = this.concurrency - this.held.size;
      if (free <= 0 || this.resultBufferFull()) {
        await new Promise<void>((resolve) => {
          this.capacityWaiter = resolve;
        });
        // Let the other outcomes that already arrived land first, so one lease asks for all the
        // slots they free rather than one lease per slot.
        await yieldToEventLoop();
        continue;
      }
      const askedAt = performance.now();
      let answer: LeaseAnswer;
      try {
        answer = await this.master.lease(
          this.workerId,
          free,
          this.longPollMs,
          this.stopController.signal,
        );
      } catch (error) {
        if (this.stopped) break;
        if (error instanceof MasterRejectedError && error.status === 401) {
          this.log.fatal({ err: error }, "the master refused WORKER_TOKEN");
          throw error;
        }
        await this.backOff(this.leaseBackoff, error);
        continue;
      }
      if (answer.leaseSeconds > 0) this.setLeaseSeconds(answer.leaseSeconds);
      const giveBack = [...answer.giveBack];
      for (const task of answer.tasks) {
        // Already running under an older lease: running it twice would report it twice.
        if (this.stopped || this.held.has(task.id)) giveBack.push(task);
        else this.start(task);
      }
      if (giveBack.length > 0) await this.releaseQuietly(giveBack);
      if (this.stopped) break;
      if (answer.problemCount > 0) {
        const problem = new MasterProtocolError(
          `POST /worker/v1/lease: ${answer.problemCount} problems in the answer: ${answer.problems.join("; ")}`,
        );
        this.log.debug({ err: problem, gaveBack: giveBack.length }, "bad lease answer");
        await this.backOff(this.leaseBackoff, problem);
        continue;
      }
      this.markReachable();
      // An empty answer long before the wait was up: a draining master, or one that ignores
      // waitMs. Asking again at once would spin, so wait as after a failure.
      if (answer.tasks.length === 0 && performance.now() - askedAt < this.longPollMs / 2) {
        await this.pause(this.leaseBackoff.next());
        continue;
      }
      this.leaseBackoff.reset();
    }
  }

  /** True while the results not yet accepted fill the buffer: leasing waits for them to drain. */
  private resultBufferFull(): boolean {
    const full = this.bufferedBytes >= this.resultBufferBytes;
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

  private wakeLeaseLoop(): void {
    const waiter = this.capacityWaiter;
    this.capacityWaiter = undefined;
    waiter?.();
  }

  private start(task: LeasedTask): void {
    const entry: HeldTask = {
      id: task.id,
      leaseId: task.leaseId,
      type: task.type,
      attempt: task.attempt,
      controller: new AbortController(),
    };
    this.held.set(task.id, entry);
    if (!this.taskTypes.has(task.type)) {
      this.finish(entry, {
        ok: false,
        error: `unknown task type "${task.type}": this worker runs ${[...this.taskTypes].join(", ")}`,
        retryable: false,
      });
      return;
    }
    entry.timer = setTimeout(() => {
      entry.controller.abort(new TaskTimeout(`timed out after ${task.timeoutSeconds} s`));
    }, task.timeoutSeconds * 1000);
    this.log.debug({ taskId: task.id, type: task.type, attempt: task.attempt }, "task started");
    void this.execute(entry, task.payload);
  }

  private async execute(entry: HeldTask, payload: unknown): Promise<void> {
    let run: RunOutcome;
    try {
      run = await this.pool.run(
        { id: entry.id, type: entry.type, payload, attempt: entry.attempt },
        entry.controller.signal,
      );
    } catch (error) {
      // No thread could be started (out of memory, too many threads): the worker's trouble, not
      // the task's, so the task goes back without counting an attempt.
      this.log.error({ taskId: entry.id, err: error }, "could not run a task; giving it back");
      await this.giveBack(entry);
      return;
    }
    if (run.kind === "aborted") {
      if (run.reason instanceof TaskTimeout) {
        this.finish(entry, { ok: false, error: run.reason.message, retryable: true });
      } else {
        // Lease lost or shutting down: the result is no longer this worker's to report.
        this.drop(entry);
      }
      return;
    }
    if (run.kind === "interrupted") {
      // Another task's leftover code killed the thread: this attempt did nothing wrong, so it
      // goes back to the queue without counting.
      this.log.warn(
        { taskId: entry.id, type: entry.type, cause: run.error },
        "task's thread crashed because of another task; giving the task back",
      );
      await this.giveBack(entry);
      return;
    }
    if (!run.outcome.ok) {
      this.log.debug(
        { taskId: entry.id, type: entry.type, error: run.outcome.error },
        "task attempt failed",
      );
    }
    this.finish(entry, run.outcome);
  }

  /** Hands a task back unfinished, its attempt not counted. */
  private async giveBack(entry: HeldTask): Promise<void> {
    if (this.held.get(entry.id) !== entry) return;
    this.drop(entry);
    await this.releaseQuietly([entry]);
  }

  private finish(entry: HeldTask, outcome: HandlerOutcome): void {
    if (this.held.get(entry.id) !== entry) return;
    this.drop(entry);
    this.log.debug({ taskId: entry.id, type: entry.type, ok: outcome.ok }, "task done");
    this.enqueue(
      outcome.ok
        ? { id: entry.id, leaseId: entry.leaseId, ok: true, resultJson: outcome.resultJson }
        : { id: entry.id, leaseId: entry.leaseId, ...outcome },
    );
  }

  private enqueue(result: Parameters<typeof encodeResult>[0]): void {
    const encoded = { ...encodeResult(result), ok: result.ok };
    this.pendingResults.push(encoded);
    this.bufferedBytes += encoded.bytes;
    this.scheduleFlush();
  }

  /** A result the master has answered for (accepted, rejected or refused): its bytes are free. */
  private settled(result: HeldResult): void {
    this.bufferedBytes -= result.bytes;
  }

  private drop(entry: HeldTask): void {
    clearTimeout(entry.timer);
    if (this.held.get(entry.id) === entry) this.held.delete(entry.id);
    this.wakeLeaseLoop();
    if (this.held.size === 0) {
      const idle = this.idleWaiter;
      this.idleWaiter = undefined;
      idle?.();
    }
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
    });
    return this.flushing;
  }

  /** Waits out a flush already under way (it gives up once stopped), then sends what is left. */
  private async drainResults(deadline: number): Promise<void> {
    await this.flushing;
    await this.flush(deadline);
  }

  /**
   * The oldest pending results that fit one request: within the master's body limit (each result
   * alone fits, since a larger one failed its task) and its count limit.
   */
  private takeBatch(): HeldResult[] {
    let bytes = 64 + Buffer.byteLength(JSON.stringify(this.workerId));
    let count = 0;
    for (const result of this.pendingResults) {
      if (count === masterLimits.workerBatchMax) break;
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
      try {
        const answer = await this.master.complete(this.workerId, batch);
        for (const result of batch) this.settled(result);
        this.resultsBackoff.reset();
        this.markReachable();
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
          if (this.stopped && deadline === undefined) return;
          await this.backOff(this.resultsBackoff, error, deadline);
        }
      } finally {
        this.sendingResults = [];
        this.wakeLeaseLoop();
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
        this.enqueue({
          id: result.id,
          leaseId: result.leaseId,
          ok: false,
          error: `the master refused the result: ${cause.message}`.slice(
            0,
            masterLimits.errorMaxChars,
          ),
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

  private setLeaseSeconds(seconds: number): void {
    const changed = this.leaseSeconds !== seconds;
    this.leaseSeconds = seconds;
    if (changed || !this.renewTimer) this.scheduleRenewal();
  }

  /** About three renewals per lease, so one lost request does not cost a lease. */
  private scheduleRenewal(): void {
    clearTimeout(this.renewTimer);
    if (this.leaseSeconds === undefined) return;
    this.renewTimer = setTimeout(
      () => {
        void this.renew().finally(() => this.scheduleRenewal());
      },
      (this.leaseSeconds * 1000) / 3,
    );
    this.renewTimer.unref();
  }

  private async renew(): Promise<void> {
    const leases: LeaseRef[] = [];
    for (const entry of this.held.values()) leases.push({ id: entry.id, leaseId: entry.leaseId });
    // A result not yet accepted still needs its lease, or the master would reject it.
    for (const result of this.sendingResults)
      leases.push({ id: result.id, leaseId: result.leaseId });
    for (const result of this.pendingResults)
      leases.push({ id: result.id, leaseId: result.leaseId });
    for (let start = 0; start < leases.length; start += leasesPerRequest) {
      try {
        const answer = await this.master.renew(
          this.workerId,
          leases.slice(start, start + leasesPerRequest),
        );
        this.markReachable();
        // Checked against the master's own range: a tiny value would make renewals spin.
        this.leaseSeconds = answer.leaseSeconds;
        for (const id of answer.lost) {
          const entry = this.held.get(id);
          if (!entry) continue;
          this.log.warn({ taskId: id, type: entry.type }, "lease lost; abandoning the task");
          entry.controller.abort(new LeaseLost("lease lost"));
        }
      } catch (error) {
        this.markUnreachable(error);
        return;
      }
    }
  }

  private async stop(graceMs: number): Promise<void> {
    this.log.info({ held: this.held.size, graceMs }, "shutting down: leasing stopped");
    this.stopController.abort(new ShuttingDown("worker shutting down"));
    this.wakeLeaseLoop();
    await this.loop?.catch(() => undefined);

    if (this.held.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => {
          this.idleWaiter = resolve;
        }),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, graceMs);
        }),
      ]);
      clearTimeout(timer);
    }

    const deadline = Date.now() + this.finalFlushMs;
    const unfinished = [...this.held.values()];
    for (const entry of unfinished)
      entry.controller.abort(new ShuttingDown("worker shutting down"));
    await Promise.all([this.releaseQuietly(unfinished, deadline), this.drainResults(deadline)]);
    clearTimeout(this.renewTimer);
    this.renewTimer = undefined;
    await this.pool.close();
    if (this.pendingResults.length > 0) {
      this.log.warn(
        { results: this.pendingResults.length },
        "shutdown: results not delivered; their tasks will run again after their leases expire",
      );
    }
    this.log.info({ released: unfinished.length }, "shut down");
  }

  /** Gives tasks back to the queue; on failure their leases simply expire on the master. */
  private async releaseQuietly(
    tasks: readonly { id: string; leaseId: string }[],
    deadline = Date.now() + this.finalFlushMs,
  ): Promise<void> {
    const backoff = new Backoff(this.initialBackoffMs, this.maxBackoffMs);
    for (let start = 0; start < tasks.length; start += leasesPerRequest) {
      const leases = tasks
        .slice(start, start + leasesPerRequest)
        .map(({ id, leaseId }) => ({ id, leaseId }));
      while (Date.now() < deadline) {
        try {
          const answer = await this.master.release(this.workerId, leases);
          this.log.info({ released: answer.released.length }, "gave tasks back");
          break;
        } catch (error) {
          if (error instanceof MasterRejectedError) {
            this.log.error({ err: error }, "the master refused to take tasks back");
            break;
          }
          await this.backOff(backoff, error, deadline);
        }
      }
    }
  }

  private markReachable(): void {
    if (this.reachable) return;
    this.reachable = true;
    this.log.info({ workerId: this.workerId }, "master reachable again");
  }

  /** Logs on the change of state only, not on every failed retry. */
  private markUnreachable(error: unknown): void {
    if (!this.reachable) return;
    this.reachable = false;
    if (error instanceof MasterRejectedError) {
      this.log.error({ err: error }, "the master refused a request; retrying with backoff");
    } else if (error instanceof MasterProtocolError) {
      this.log.error(
        { err: error },
        "the master's answer broke the protocol; retrying with backoff",
      );
    } else {
      this.log.warn({ err: error }, "master unreachable; retrying with backoff");
    }
  }

  /** Waits the backoff's next delay; cut short when the worker stops or the deadline nears. */
  private async backOff(backoff: Backoff, error: unknown, deadline?: number): Promise<void> {
    this.markUnreachable(error);
    let wait = backoff.next();
    if (deadline !== undefined) wait = Math.max(0, Math.min(wait, deadline - Date.now()));
    if (deadline === undefined) await this.pause(wait);
    else await delay(wait);
  }

  private pause(ms: number): Promise<void> {
    return delay(ms, this.stopController.signal).catch(() => undefined);
  }
}
