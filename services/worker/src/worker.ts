import type { Logger } from "./logger.js";
import {
  type LeasedTask,
  type LeaseRef,
  type MasterApi,
  MasterRejectedError,
  type TaskResult,
} from "./master-client.js";
import { delay, isPermanentTaskError, type TaskHandler } from "./task.js";
import type { TaskRegistry } from "./tasks/registry.js";

export interface WorkerOptions {
  /** The master's worker routes. */
  master: MasterApi;
  /** Task handlers by type. */
  registry: TaskRegistry;
  /** Names this worker on the master. */
  workerId: string;
  /** Tasks run at once. */
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

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown } | { aborted: unknown };

/**
 * Pulls tasks from the master and runs them: leases up to the free concurrency per long poll,
 * renews every held lease in one call per interval, sends completions in batches that are flushed
 * as soon as the event loop turns, and on {@link shutdown} stops leasing, lets running tasks
 * finish within a grace time and gives back the rest. Owns no process concerns (signals, exit),
 * so tests drive it directly.
 */
export class Worker {
  private readonly master: MasterApi;
  private readonly registry: TaskRegistry;
  private readonly workerId: string;
  private readonly concurrency: number;
  private readonly log: Logger;
  private readonly longPollMs: number;
  private readonly initialBackoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly finalFlushMs: number;

  private readonly held = new Map<string, HeldTask>();
  private pendingResults: TaskResult[] = [];
  private sendingResults: TaskResult[] = [];
  private flushScheduled = false;
  private flushing: Promise<void> | undefined;

  private readonly stopController = new AbortController();
  private slotWaiter: (() => void) | undefined;
  private idleWaiter: (() => void) | undefined;
  private renewTimer: NodeJS.Timeout | undefined;
  private leaseSeconds: number | undefined;
  private reachable = true;
  private failuresInARow = 0;
  private loop: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;

  constructor(options: WorkerOptions) {
    this.master = options.master;
    this.registry = options.registry;
    this.workerId = options.workerId;
    this.concurrency = options.concurrency;
    this.log = options.logger;
    this.longPollMs = options.longPollMs ?? 20_000;
    this.initialBackoffMs = options.initialBackoffMs ?? 100;
    this.maxBackoffMs = options.maxBackoffMs ?? 5_000;
    this.finalFlushMs = options.finalFlushMs ?? 5_000;
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
   * releases the rest and sends every result it has. Calling it again returns the same promise.
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
      if (free <= 0) {
        await new Promise<void>((resolve) => {
          this.slotWaiter = resolve;
        });
        continue;
      }
      try {
        const answer = await this.master.lease(
          this.workerId,
          free,
          this.longPollMs,
          this.stopController.signal,
        );
        this.markReachable();
        this.setLeaseSeconds(answer.leaseSeconds);
        if (this.stopped) {
          await this.releaseQuietly(answer.tasks);
          break;
        }
        for (const task of answer.tasks) this.start(task);
      } catch (error) {
        if (this.stopped) break;
        if (error instanceof MasterRejectedError && error.status === 401) {
          this.log.fatal({ err: error }, "the master refused WORKER_TOKEN");
          throw error;
        }
        await this.backOff(error);
      }
    }
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
    const handler = this.registry.get(task.type);
    if (!handler) {
      this.finish(entry, {
        ok: false,
        error: `unknown task type "${task.type}": this worker runs ${[...this.registry.keys()].join(", ")}`,
        retryable: false,
      });
      return;
    }
    const parsed = handler.payload.safeParse(task.payload);
    if (!parsed.success) {
      const problems = parsed.error.issues
        .map((issue) => `${["payload", ...issue.path].join(".")}: ${issue.message}`)
        .join("; ");
      this.finish(entry, {
        ok: false,
        error: `invalid payload for task type "${task.type}": ${problems}`,
        retryable: false,
      });
      return;
    }
    const timeoutMs = task.timeoutSeconds * 1000;
    entry.timer = setTimeout(() => {
      entry.controller.abort(new TaskTimeout(`timed out after ${task.timeoutSeconds} s`));
    }, timeoutMs);
    this.log.debug({ taskId: task.id, type: task.type, attempt: task.attempt }, "task started");
    void this.execute(entry, handler, parsed.data);
  }

  private async execute(entry: HeldTask, handler: TaskHandler, payload: unknown): Promise<void> {
    const signal = entry.controller.signal;
    // Whichever comes first wins: a handler that ignores its signal still frees its slot on abort.
    const outcome = await new Promise<Outcome>((resolve) => {
      signal.addEventListener("abort", () => resolve({ aborted: signal.reason }), { once: true });
      try {
        Promise.resolve(
          handler.run(payload, { signal, id: entry.id, attempt: entry.attempt }),
        ).then(
          (value) => resolve({ ok: true, value }),
          (error: unknown) => resolve({ ok: false, error }),
        );
      } catch (error) {
        resolve({ ok: false, error });
      }
    });
    if ("aborted" in outcome) {
      const reason = outcome.aborted;
      if (reason instanceof TaskTimeout) {
        this.finish(entry, { ok: false, error: reason.message, retryable: true });
      } else {
        // Lease lost or shutting down: the result is no longer this worker's to report.
        this.drop(entry);
      }
      return;
    }
    if (outcome.ok) {
      this.finish(entry, resultOf(outcome.value));
      return;
    }
    const error = outcome.error;
    this.log.debug({ taskId: entry.id, type: entry.type, err: error }, "task attempt failed");
    this.finish(entry, {
      ok: false,
      error: error instanceof Error ? error.message || error.name : String(error),
      retryable: !isPermanentTaskError(error),
    });
  }

  private finish(
    entry: HeldTask,
    outcome: { ok: true; result: unknown } | { ok: false; error: string; retryable: boolean },
  ): void {
    if (this.held.get(entry.id) !== entry) return;
    this.drop(entry);
    this.log.debug({ taskId: entry.id, type: entry.type, ok: outcome.ok }, "task done");
    this.pendingResults.push({ id: entry.id, leaseId: entry.leaseId, ...outcome });
    this.scheduleFlush();
  }

  private drop(entry: HeldTask): void {
    clearTimeout(entry.timer);
    if (this.held.get(entry.id) === entry) this.held.delete(entry.id);
    const slot = this.slotWaiter;
    this.slotWaiter = undefined;
    slot?.();
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

  private async sendResults(deadline?: number): Promise<void> {
    while (this.pendingResults.length > 0) {
      if (deadline !== undefined && Date.now() >= deadline) return;
      const batch = this.pendingResults;
      this.pendingResults = [];
      this.sendingResults = batch;
      try {
        const answer = await this.master.complete(this.workerId, batch);
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
          await this.backOff(error, deadline);
        }
      } finally {
        this.sendingResults = [];
      }
    }
  }

  /**
   * A refused batch (too large, or one result the master cannot take) must not lose the other
   * results in it: send them one at a time, and turn a refused result into a failure report.
   */
  private async sendOneByOne(batch: TaskResult[], cause: MasterRejectedError): Promise<void> {
    if (batch.length === 1) {
      const [result] = batch as [TaskResult];
      this.log.error({ taskId: result.id, err: cause }, "the master refused a task's result");
      if (result.ok) {
        this.pendingResults.push({
          id: result.id,
          leaseId: result.leaseId,
          ok: false,
          error: `the master refused the result: ${cause.message}`,
          retryable: false,
        });
      }
      return;
    }
    for (const result of batch) {
      try {
        await this.master.complete(this.workerId, [result]);
      } catch (error) {
        if (error instanceof MasterRejectedError) await this.sendOneByOne([result], error);
        else this.pendingResults.push(result);
      }
    }
  }

  private setLeaseSeconds(seconds: number): void {
    if (!Number.isFinite(seconds) || seconds <= 0) return;
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
    if (leases.length === 0) return;
    try {
      const answer = await this.master.renew(this.workerId, leases);
      this.markReachable();
      if (answer.leaseSeconds > 0) this.leaseSeconds = answer.leaseSeconds;
      for (const id of answer.lost) {
        const entry = this.held.get(id);
        if (!entry) continue;
        this.log.warn({ taskId: id, type: entry.type }, "lease lost; abandoning the task");
        entry.controller.abort(new LeaseLost("lease lost"));
      }
    } catch (error) {
      this.markUnreachable(error);
    }
  }

  private async stop(graceMs: number): Promise<void> {
    this.log.info({ held: this.held.size, graceMs }, "shutting down: leasing stopped");
    this.stopController.abort(new ShuttingDown("worker shutting down"));
    const slot = this.slotWaiter;
    this.slotWaiter = undefined;
    slot?.();
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
    if (tasks.length === 0) return;
    const leases = tasks.map(({ id, leaseId }) => ({ id, leaseId }));
    while (Date.now() < deadline) {
      try {
        const answer = await this.master.release(this.workerId, leases);
        this.log.info({ released: answer.released.length }, "gave unfinished tasks back");
        return;
      } catch (error) {
        if (error instanceof MasterRejectedError) {
          this.log.error({ err: error }, "the master refused to take tasks back");
          return;
        }
        await this.backOff(error, deadline);
      }
    }
  }

  private markReachable(): void {
    this.failuresInARow = 0;
    if (this.reachable) return;
    this.reachable = true;
    this.log.info({ workerId: this.workerId }, "master reachable again");
  }

  /** Logs on the change of state only, not on every failed retry. */
  private markUnreachable(error: unknown): void {
    this.failuresInARow++;
    if (!this.reachable) return;
    this.reachable = false;
    if (error instanceof MasterRejectedError) {
      this.log.error({ err: error }, "the master refused a request; retrying with backoff");
    } else {
      this.log.warn({ err: error }, "master unreachable; retrying with backoff");
    }
  }

  /** Capped exponential delay with jitter; cut short when the worker stops or the deadline nears. */
  private async backOff(error: unknown, deadline?: number): Promise<void> {
    this.markUnreachable(error);
    const exponent = Math.min(this.failuresInARow - 1, 20);
    const ceiling = Math.min(this.maxBackoffMs, this.initialBackoffMs * 2 ** exponent);
    let wait = ceiling / 2 + Math.random() * (ceiling / 2);
    if (deadline !== undefined) wait = Math.max(0, Math.min(wait, deadline - Date.now()));
    const signal = deadline === undefined ? this.stopController.signal : undefined;
    await delay(wait, signal).catch(() => undefined);
  }
}

function resultOf(
  value: unknown,
): { ok: true; result: unknown } | { ok: false; error: string; retryable: boolean } {
  const result = value === undefined ? null : value;
  if (result === null || typeof result !== "object") {
    if (typeof result === "bigint" || typeof result === "function" || typeof result === "symbol") {
      return {
        ok: false,
        error: `the handler returned a ${typeof result}, not JSON`,
        retryable: false,
      };
    }
    return { ok: true, result };
  }
  try {
    JSON.stringify(result);
    return { ok: true, result };
  } catch (error) {
    return {
      ok: false,
      error: `the handler's result is not JSON: ${error instanceof Error ? error.message : String(error)}`,
      retryable: false,
    };
  }
}
