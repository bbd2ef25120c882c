import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { Worker as Thread } from "node:worker_threads";
import { describeThrown, type HandlerOutcome } from "./handler-outcome.js";
import type { Logger } from "./logger.js";
import type { HandlerRun } from "./run-handler.js";

/** What a task thread is started with. */
export interface ThreadData {
  /** The folder of task files it loads. */
  tasksDirectory: string;
  /** A result whose JSON is larger fails its task (`MAX_RESULT_BYTES`). */
  maxResultBytes: number;
}

/** Messages from the main thread to a task thread. */
export type ToThread =
  | { kind: "run"; id: string; type: string; payload: unknown; attempt: number }
  | { kind: "abort"; id: string; name: string; message: string };

/**
 * Messages from a task thread: it has loaded the task files (or failed to, which each run then
 * reports), a run's outcome, or the error that is about to end the thread.
 */
export type FromThread =
  | { kind: "ready" }
  | { kind: "done"; id: string; outcome: HandlerOutcome }
  | { kind: "crash"; owner: string | undefined; error: string };

/**
 * How a run ended: the handler's outcome (a crash of its own thread is a retryable failure);
 * `aborted` when its signal fired first; `interrupted` when its thread died of an error thrown by
 * code another task left behind (a timer that outlived its handler): this task did nothing wrong
 * and should be given back, not failed.
 */
export type RunOutcome =
  | { kind: "done"; outcome: HandlerOutcome }
  | { kind: "aborted"; reason: unknown }
  | { kind: "interrupted"; error: string };

export interface TaskPoolOptions {
  /** The folder of task files, one handler per file (tasks/registry.ts). */
  tasksDirectory: string;
  /** Threads at most: one per task run at once. */
  size: number;
  /** A result whose JSON is larger fails its task. */
  maxResultBytes: number;
  /**
   * After a run is aborted (timeout, lost lease, shutdown) its handler gets this long to notice its
   * signal and return; then its thread is terminated and replaced. Default 1,000.
   */
  abortGraceMs?: number;
  logger: Logger;
}

const ownExtension = path.extname(fileURLToPath(import.meta.url));
const threadScript = new URL(`./task-thread${ownExtension}`, import.meta.url);

interface Running {
  id: string;
  settled: boolean;
  settle(outcome: RunOutcome): void;
  graceTimer?: NodeJS.Timeout;
}

/**
 * Runs tasks in worker threads, one task per thread at a time, as BullMQ's sandboxed processors
 * do with processes: a handler that blocks cannot stop the main thread from renewing leases, and
 * one that crashes (whatever it throws, whenever) takes down only its own thread. {@link warmUp}
 * starts all `size` threads ahead of any run; a run that finds none free starts one, up to `size`;
 * threads are reused, and a dead or terminated one is replaced.
 */
export class TaskPool {
  private readonly options: Required<TaskPoolOptions>;
  private readonly threads = new Set<TaskThread>();
  private readonly idle: TaskThread[] = [];
  private readonly waiters: ((thread: TaskThread | undefined) => void)[] = [];
  private closed = false;
  private allGone: (() => void) | undefined;
  private started = 0;

  constructor(options: TaskPoolOptions) {
    // `??`, not a spread under a default: an option passed as undefined must not erase it.
    this.options = { ...options, abortGraceMs: options.abortGraceMs ?? 1000 };
  }

  /** Threads started so far, for logs and tests. */
  get threadsStarted(): number {
    return this.started;
  }

  /**
   * Starts every thread the pool may have and resolves once each has loaded the task files (or
   * died trying), so that a task handed over afterwards runs at once. Starting a thread costs about
   * 0.1 s of CPU (a Node environment, then the task files and what they import): `size` of them
   * starting at once on a busy machine can take many seconds, which a task should not spend
   * leased and waiting for its thread.
   */
  async warmUp(): Promise<void> {
    while (!this.closed && this.threads.size < this.options.size) this.idle.push(this.spawn());
    await Promise.all([...this.threads].map((thread) => thread.ready));
  }

  /**
   * Runs one task on a free thread (waiting for one if all are busy: a thread whose run was
   * aborted stays busy until its handler returns or its grace ends). Rejects only when no thread
   * can be started at all.
   */
  async run(request: HandlerRun, signal: AbortSignal): Promise<RunOutcome> {
    const thread = signal.aborted ? undefined : await this.acquire(signal);
    if (!thread || signal.aborted) {
      if (thread) this.onIdle(thread);
      return { kind: "aborted", reason: signal.reason };
    }
    return thread.run(request, signal);
  }

  /**
   * Stops every thread: idle ones at once; one whose run was aborted when its handler returns or
   * its grace ends, so a handler that cleans up on abort gets to; anything left after that grace is
   * terminated. Runs still going are not reported on.
   */
  async close(): Promise<void> {
    this.closed = true;
    for (const waiter of this.waiters.splice(0)) waiter(undefined);
    const idle = this.idle.splice(0);
    await Promise.all(idle.map((thread) => thread.terminate()));
    if (this.threads.size > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, this.options.abortGraceMs);
        this.allGone = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    await Promise.all([...this.threads].map((thread) => thread.terminate()));
  }

  private acquire(signal: AbortSignal): Promise<TaskThread | undefined> {
    if (this.closed) return Promise.resolve(undefined);
    const idle = this.idle.pop();
    if (idle) return Promise.resolve(idle);
    if (this.threads.size < this.options.size) return Promise.resolve(this.spawn());
    return new Promise((resolve) => {
      const waiter = (thread: TaskThread | undefined) => {
        signal.removeEventListener("abort", onAbort);
        resolve(thread);
      };
      const onAbort = () => {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        resolve(undefined);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  private spawn(): TaskThread {
    this.started++;
    const thread = new TaskThread(
      {
        tasksDirectory: this.options.tasksDirectory,
        maxResultBytes: this.options.maxResultBytes,
      },
      `taskfleet-task-${this.started}`,
      this.options.abortGraceMs,
      this.options.logger,
      {
        idle: (free) => this.onIdle(free),
        gone: (dead) => this.onGone(dead),
      },
    );
    this.threads.add(thread);
    return thread;
  }

  private onIdle(thread: TaskThread): void {
    if (this.closed) {
      void thread.terminate();
      return;
    }
    const waiter = this.waiters.shift();
    if (waiter) waiter(thread);
    else this.idle.push(thread);
  }

  private onGone(thread: TaskThread): void {
    this.threads.delete(thread);
    const index = this.idle.indexOf(thread);
    if (index >= 0) this.idle.splice(index, 1);
    if (this.closed) {
      if (this.threads.size === 0) this.allGone?.();
      return;
    }
    if (this.waiters.length === 0) return;
    try {
      const fresh = this.spawn();
      this.waiters.shift()?.(fresh);
    } catch (error) {
      // The waiting run gets the next thread that frees up, or times out.
      this.options.logger.error({ err: error }, "could not start a task thread");
    }
  }
}

/** One worker thread and the run it is busy with, if any. */
class TaskThread {
  /** Settles once the thread has loaded the task files, or has died. */
  readonly ready: Promise<void>;
  private readonly thread: Thread;
  private running: Running | undefined;
  private gone = false;
  private markReady: () => void = () => {};

  constructor(
    data: ThreadData,
    name: string,
    private readonly abortGraceMs: number,
    private readonly log: Logger,
    private readonly events: { idle(thread: TaskThread): void; gone(thread: TaskThread): void },
  ) {
    this.ready = new Promise((resolve) => {
      this.markReady = resolve;
    });
    this.thread = new Thread(threadScript, { workerData: data, name });
    this.thread.on("message", (message: FromThread) => this.onMessage(message));
    // An error the thread's own handler did not get to (say, out of memory): nothing to attribute.
    this.thread.on("error", (error) =>
      this.die(undefined, `the handler crashed: ${describeThrown(error)}`),
    );
    this.thread.on("exit", (code) =>
      this.die(undefined, `the handler's thread stopped (exit code ${code})`),
    );
  }

  run(request: HandlerRun, signal: AbortSignal): Promise<RunOutcome> {
    return new Promise<RunOutcome>((resolve) => {
      const running: Running = {
        id: request.id,
        settled: false,
        settle: (outcome) => {
          if (running.settled) return;
          running.settled = true;
          signal.removeEventListener("abort", onAbort);
          resolve(outcome);
        },
      };
      const onAbort = () => {
        running.settle({ kind: "aborted", reason: signal.reason });
        const reason: unknown = signal.reason;
        this.post({
          kind: "abort",
          id: request.id,
          name: reason instanceof Error ? reason.name : "AbortError",
          message: reason instanceof Error ? reason.message : "aborted",
        });
        // A handler that ignores its signal, or blocks, does not get to keep the thread.
        running.graceTimer = setTimeout(() => void this.terminate(), this.abortGraceMs);
      };
      this.running = running;
      signal.addEventListener("abort", onAbort, { once: true });
      try {
        this.thread.postMessage({ kind: "run", ...request } satisfies ToThread);
      } catch (error) {
        this.running = undefined;
        running.settle({
          kind: "done",
          outcome: {
            ok: false,
            error: `the payload cannot be passed to the task's thread: ${describeThrown(error)}`,
            retryable: false,
          },
        });
        this.events.idle(this);
      }
    });
  }

  async terminate(): Promise<void> {
    this.die(undefined, "the handler's thread was stopped");
    await this.thread.terminate();
  }

  private post(message: ToThread): void {
    try {
      this.thread.postMessage(message);
    } catch {
      // The thread is already gone; its exit is handled on its own.
    }
  }

  private onMessage(message: FromThread): void {
    if (message?.kind === "ready") {
      this.markReady();
      return;
    }
    if (message?.kind === "crash") {
      this.die(
        typeof message.owner === "string" ? message.owner : undefined,
        `the handler crashed: ${describeThrown(message.error)}`,
      );
      return;
    }
    const running = this.running;
    // Only the answer for the run under way counts: anything else is stale or not ours to trust.
    if (message?.kind !== "done" || !running || message.id !== running.id) return;
    clearTimeout(running.graceTimer);
    this.running = undefined;
    running.settle({ kind: "done", outcome: readOutcome(message.outcome) });
    if (!this.gone) this.events.idle(this);
  }

  /**
   * The thread is ending. The run under way fails, unless the error came from code of another
   * task (`owner`), which ran earlier on this thread: then the run is interrupted, to be given back.
   */
  private die(owner: string | undefined, error: string): void {
    if (this.gone) return;
    this.gone = true;
    this.markReady();
    // Whatever ends it, a thread given up on is not left running (a no-op once it has exited).
    void this.thread.terminate();
    const running = this.running;
    this.running = undefined;
    if (running) clearTimeout(running.graceTimer);
    if (running && !running.settled) {
      if (owner === undefined || owner === running.id) {
        running.settle({ kind: "done", outcome: { ok: false, error, retryable: true } });
      } else {
        running.settle({ kind: "interrupted", error: `task ${owner}: ${error}` });
      }
    } else if (owner !== undefined) {
      this.log.warn(
        { taskId: owner, error },
        "code left behind by a finished task crashed its thread",
      );
    }
    this.events.gone(this);
  }
}

/** A thread's outcome message, checked: a handler could post on the thread's port itself. */
function readOutcome(outcome: unknown): HandlerOutcome {
  const value = outcome as Partial<Record<string, unknown>> | undefined;
  if (value?.ok === true && typeof value.resultJson === "string") {
    return { ok: true, resultJson: value.resultJson };
  }
  if (value?.ok === false && typeof value.error === "string") {
    return { ok: false, error: describeThrown(value.error), retryable: value.retryable !== false };
  }
  return { ok: false, error: "the task's thread sent an unreadable outcome", retryable: true };
}
