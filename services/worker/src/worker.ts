import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import { Backoff } from "@taskfleet/protocol/backoff";
import { workerEnv } from "@taskfleet/protocol/worker-env";
import { describeThrown, type HandlerOutcome } from "./handler-outcome.js";
import { runInline } from "./inline-run.js";
import { LeaseRenewal, leasesPerRequest } from "./lease-renewal.js";
import type { Logger } from "./logger.js";
import {
  type LeaseAnswer,
  type LeasedTask,
  type MasterApi,
  MasterProtocolError,
  MasterRejectedError,
} from "./master-client.js";
import { ResultBatcher } from "./result-batcher.js";
import { handlerOwner } from "./run-handler.js";
import { delay } from "./task.js";
import { type RunOutcome, TaskPool } from "./task-pool.js";
import type { TaskCatalog, TaskRegistry } from "./tasks/registry.js";

export interface WorkerOptions {
  /** The master's worker routes. */
  master: MasterApi;
  /** The task files: the folder the task threads load, and the types it defines. */
  tasks: TaskCatalog;
  /** Names this worker on the master. */
  workerId: string;
  /** Tasks run at once, each on its own thread (or this one, for `inline` types). */
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
   * On shutdown, a lease request sent less than this long ago is left to answer (its tasks are
   * given back) before it is cut; an older one, a long poll the master holds for want of work, is
   * cut at once. Counts within the grace time, not after it. Default 1,000.
   */
  leaseAnswerWaitMs?: number;
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

/**
 * Why a task's signal aborted; decides what the worker reports for it. The third reason,
 * `LeaseLost`, comes from lease-renewal.ts.
 */
class TaskTimeout extends Error {
  override name = "TaskTimeout";
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

/**
 * Pulls tasks from the master and runs them, each in a task thread (task-pool.ts), all of which
 * it starts before it leases anything, or on this thread for `inline` types (inline-run.ts):
 * leases up to the free concurrency per long poll and gives back anything beyond that, renews
 * every held lease from the main thread (lease-renewal.ts), sends completions in batches bounded
 * in bytes (result-batcher.ts), backs off when the master fails or breaks the protocol, and on
 * {@link shutdown} stops leasing, lets running tasks finish within a grace time and gives back
 * the rest. Owns no process concerns (signals, exit), so tests drive it directly.
 */
export class Worker {
  private readonly master: MasterApi;
  private readonly taskTypes: ReadonlySet<string>;
  /** The handlers of `inline` types, run on this thread; every other type runs in {@link pool}. */
  private readonly inline: TaskRegistry;
  private readonly maxResultBytes: number;
  private readonly pool: TaskPool;
  private readonly workerId: string;
  private readonly concurrency: number;
  private readonly log: Logger;
  private readonly longPollMs: number;
  private readonly initialBackoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly finalFlushMs: number;
  private readonly leaseAnswerWaitMs: number;

  private readonly held = new Map<string, HeldTask>();
  private readonly results: ResultBatcher;
  private readonly renewal: LeaseRenewal;

  private readonly leaseBackoff: Backoff;
  private readonly stopController = new AbortController();
  /** Cuts the lease request in flight on shutdown (see {@link leaseAnswerWaitMs}). */
  private readonly leaseController = new AbortController();
  /** When the last lease request was sent (`performance.now()`). */
  private leaseSentAt = 0;
  /** Settles when the worker stops. */
  private readonly whenStopped: Promise<void>;
  /** A lease request of the lease loop is in flight. */
  private leasing = false;
  /**
   * A lease carried by a `complete` request in flight (result-batcher.ts): settles once its
   * answer's tasks are started or given back. The lease loop sends no lease of its own meanwhile.
   */
  private carried: Promise<void> | undefined;
  private settleCarried: (() => void) | undefined;
  /** What was wrong with the last carried lease's answer, for the lease loop to back off on. */
  private carriedProblem: MasterProtocolError | undefined;
  private capacityWaiter: (() => void) | undefined;
  private idleWaiter: (() => void) | undefined;
  private reachable = true;
  private loop: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;

  constructor(options: WorkerOptions) {
    this.master = options.master;
    this.taskTypes = new Set(options.tasks.types);
    this.inline = options.tasks.inline;
    this.workerId = options.workerId;
    this.concurrency = options.concurrency;
    this.log = options.logger;
    this.longPollMs = options.longPollMs ?? 20_000;
    this.initialBackoffMs = options.initialBackoffMs ?? 100;
    this.maxBackoffMs = options.maxBackoffMs ?? 5_000;
    this.finalFlushMs = options.finalFlushMs ?? 5_000;
    this.leaseAnswerWaitMs = options.leaseAnswerWaitMs ?? 1_000;
    const maxResultBytes = options.maxResultBytes ?? workerEnv.MAX_RESULT_BYTES.default;
    this.maxResultBytes = maxResultBytes;
    this.leaseBackoff = new Backoff(this.initialBackoffMs, this.maxBackoffMs);
    this.results = new ResultBatcher({
      master: this.master,
      workerId: this.workerId,
      logger: this.log,
      maxResultBytes,
      bufferBytes: options.resultBufferBytes ?? workerEnv.RESULT_BUFFER_BYTES.default,
      initialBackoffMs: this.initialBackoffMs,
      maxBackoffMs: this.maxBackoffMs,
      signal: this.stopController.signal,
      onReachable: () => this.markReachable(),
      onUnreachable: (error) => this.markUnreachable(error),
      afterSend: () => this.wakeLeaseLoop(),
      leaseToCarry: () => this.leaseToCarry(),
      onCarriedLease: (answer) => this.takeCarried(answer),
    });
    this.whenStopped = new Promise((resolve) =>
      this.stopController.signal.addEventListener("abort", () => resolve(), { once: true }),
    );
    this.renewal = new LeaseRenewal({
      master: this.master,
      workerId: this.workerId,
      logger: this.log,
      held: this.held,
      resultLeases: () => this.results.leases(),
      onReachable: () => this.markReachable(),
      onUnreachable: (error) => this.markUnreachable(error),
    });
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

  /**
   * For an error nothing caught (`uncaughtException`); call it synchronously from the listener.
   * When it came from the code of an `inline` task (a timer it set, a promise it left), that
   * task's attempt fails as a crash, as a task thread's would; the other tasks did nothing wrong
   * and are given back, no attempt counted. Then the worker stops, with no grace: the process's
   * state is suspect.
   */
  crashed(error: unknown): Promise<void> {
    const owner = handlerOwner();
    const entry = owner === undefined ? undefined : this.held.get(owner);
    // Stopped first, so that the failure's completion carries no lease request.
    const stopping = this.shutdown(0);
    if (entry) {
      this.finish(entry, {
        ok: false,
        error: `the handler crashed: ${describeThrown(error)}`,
        retryable: true,
      });
    } else if (owner !== undefined) {
      this.log.warn(
        { taskId: owner, error: describeThrown(error) },
        "code left behind by a finished inline task crashed the worker",
      );
    }
    return stopping;
  }

  private get stopped(): boolean {
    return this.stopController.signal.aborted;
  }

  private async leaseLoop(): Promise<void> {
    // Every task thread is started, and has loaded the task files, before the first lease. Were
    // threads started for tasks already leased, `concurrency` of them would start at once with
    // their leases running, and on a busy machine (each start costs about 0.1 s of CPU) the
    // tasks would sit `running` on the master, doing nothing, for seconds; past a lease period
    // their leases were lost and the half-started threads thrown away and started again.
    const warming = performance.now();
    const threaded = [...this.taskTypes].some((type) => !this.inline.has(type));
    if (threaded) await Promise.race([this.pool.warmUp(), this.whenStopped]);
    if (threaded && !this.stopped) {
      this.log.info(
        { threads: this.concurrency, ms: Math.round(performance.now() - warming) },
        "task threads ready",
      );
    }
    while (!this.stopped) {
      if (this.carried !== undefined) {
        // A completion carries the next lease: take its answer before asking on our own.
        await Promise.race([this.carried, this.whenStopped]);
        const problem = this.carriedProblem;
        this.carriedProblem = undefined;
        if (problem !== undefined && !this.stopped) await this.backOff(this.leaseBackoff, problem);
        // As after a lease answer of our own (below): inline tasks it started finish first.
        else await yieldToEventLoop();
        continue;
      }
      if (this.results.sendScheduled) {
        // Results go first, so that their request carries the lease: one request, not two.
        await yieldToEventLoop();
        continue;
      }
      const free = this.concurrency - this.held.size;
      if (free <= 0 || this.results.isFull()) {
        await new Promise<void>((resolve) => {
          this.capacityWaiter = resolve;
        });
        // Let the other outcomes that already arrived land first, so one lease asks for all the
        // slots they free rather than one lease per slot.
        await yieldToEventLoop();
        continue;
      }
      const askedAt = performance.now();
      this.leaseSentAt = askedAt;
      let answer: LeaseAnswer;
      this.leasing = true;
      try {
        answer = await this.master.lease(
          this.workerId,
          free,
          this.longPollMs,
          this.leaseController.signal,
        );
      } catch (error) {
        if (this.stopped) break;
        if (error instanceof MasterRejectedError && error.status === 401) {
          this.log.fatal({ err: error }, "the master refused WORKER_TOKEN");
          throw error;
        }
        await this.backOff(this.leaseBackoff, error);
        continue;
      } finally {
        this.leasing = false;
      }
      const problem = await this.take(answer, "lease");
      if (this.stopped) break;
      if (problem !== undefined) {
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
      // Tasks run inline finish within a few microtasks: let them, so that their results are
      // sent before the next lease, and carry it.
      if (answer.tasks.length > 0) await yieldToEventLoop();
    }
  }

  /**
   * Starts a lease answer's tasks and gives back what it cannot run; returns what was wrong with
   * the answer, if anything.
   */
  private async take(
    answer: LeaseAnswer,
    route: "lease" | "complete",
  ): Promise<MasterProtocolError | undefined> {
    if (answer.leaseSeconds > 0) this.renewal.setLeaseSeconds(answer.leaseSeconds);
    const giveBack = [...answer.giveBack];
    for (const task of answer.tasks) {
      // Already running under an older lease: running it twice would report it twice.
      if (this.stopped || this.held.has(task.id)) giveBack.push(task);
      else this.start(task);
    }
    if (giveBack.length > 0) await this.releaseQuietly(giveBack);
    if (answer.problemCount === 0) return undefined;
    const problem = new MasterProtocolError(
      `POST /worker/v1/${route}: ${answer.problemCount} problems in the lease answer: ${answer.problems.join("; ")}`,
    );
    this.log.debug({ err: problem, gaveBack: giveBack.length }, "bad lease answer");
    return problem;
  }

  /**
   * How many tasks the next `complete` request should lease too: the free slots, unless the
   * worker is stopping, leasing already or its result buffer is full. The lease loop then waits
   * for that answer ({@link takeCarried}) instead of sending a lease request of its own, so a
   * busy worker makes one request per batch of tasks instead of two.
   */
  private leaseToCarry(): number {
    if (this.stopped || this.leasing || this.carried !== undefined) return 0;
    const free = this.concurrency - this.held.size;
    if (free <= 0 || this.results.isFull()) return 0;
    this.carried = new Promise((resolve) => {
      this.settleCarried = resolve;
    });
    return free;
  }

  private async takeCarried(answer: LeaseAnswer | undefined): Promise<void> {
    try {
      if (answer !== undefined) this.carriedProblem = await this.take(answer, "complete");
    } finally {
      const settle = this.settleCarried;
      this.carried = undefined;
      this.settleCarried = undefined;
      settle?.();
    }
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
    const request = { id: entry.id, type: entry.type, payload, attempt: entry.attempt };
    const inline = this.inline.get(entry.type);
    try {
      run = inline
        ? await runInline(inline, request, entry.controller.signal, this.maxResultBytes)
        : await this.pool.run(request, entry.controller.signal);
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
    this.results.add(
      outcome.ok
        ? { id: entry.id, leaseId: entry.leaseId, ok: true, resultJson: outcome.resultJson }
        : { id: entry.id, leaseId: entry.leaseId, ...outcome },
    );
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

  private async stop(graceMs: number): Promise<void> {
    this.log.info({ held: this.held.size, graceMs }, "shutting down: leasing stopped");
    const graceEnds = Date.now() + graceMs;
    this.stopController.abort(new ShuttingDown("worker shutting down"));
    this.wakeLeaseLoop();
    // A lease request just sent is not cut at once: the master may have leased tasks to it
    // already, and an answer never read would leave them running on the master, under leases
    // nobody renews, until those expire (an attempt lost each, a task's last one failing it). Its
    // answer comes in moments, and the lease loop gives its tasks back. An older request is a
    // long poll the master holds for want of work: cut now, it leases nothing to a caller gone.
    const cutLease = setTimeout(
      () => this.leaseController.abort(new ShuttingDown("worker shutting down")),
      Math.max(0, this.leaseSentAt + this.leaseAnswerWaitMs - performance.now()),
    );
    await this.loop?.catch(() => undefined);
    clearTimeout(cutLease);

    if (this.held.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => {
          this.idleWaiter = resolve;
        }),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, Math.max(0, graceEnds - Date.now()));
        }),
      ]);
      clearTimeout(timer);
    }

    const deadline = Date.now() + this.finalFlushMs;
    const unfinished = [...this.held.values()];
    for (const entry of unfinished)
      entry.controller.abort(new ShuttingDown("worker shutting down"));
    await Promise.all([this.releaseQuietly(unfinished, deadline), this.results.drain(deadline)]);
    this.renewal.stop();
    await this.pool.close();
    if (this.results.pendingCount > 0) {
      this.log.warn(
        { results: this.results.pendingCount },
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
