import type {
  LeasedTask,
  LeaseRef,
  RejectReason,
  Completion as WireCompletion,
} from "@taskfleet/protocol/wire";

export type { LeasedTask, LeaseRef, RejectReason };

/**
 * The master's state behind one interface, so the in-memory store can be swapped for a durable
 * one (Redis is next) without touching the routes. Every method returns a promise even where the
 * memory store could answer at once: a networked backend cannot.
 */

export type TaskStatus = "queued" | "running" | "succeeded" | "failed";

/** What a client asks for when it submits a task; defaults are already applied. */
export interface TaskSpec {
  type: string;
  payload: unknown;
  idempotencyKey?: string | undefined;
  maxAttempts: number;
  timeoutSeconds: number;
  /**
   * The payload's size as JSON (UTF-8 bytes) and on the heap (an estimate), which the route has
   * measured already; the store measures them itself when absent.
   */
  payloadBytes?: number;
  payloadMemoryBytes?: number;
}

/** A task as the public API shows it. Times are milliseconds since the epoch. */
export interface TaskView {
  id: string;
  type: string;
  status: TaskStatus;
  attempts: number;
  result?: unknown;
  error?: string;
  createdAt: number;
  startedAt?: number;
  finishedAt?: number;
}

export interface SubmitOutcome {
  id: string;
  status: TaskStatus;
  /** False when the idempotency key matched a task that already exists. */
  created: boolean;
}

/** What `submitAndWait` answers: the submission's outcome, and the task as the wait ended. */
export interface SubmittedAndWaited {
  outcome: SubmitOutcome;
  /** `undefined` when the task is gone (a wait that outlived its retention). */
  task: TaskView | undefined;
}

/** A completion as the store takes it: the wire's, with a success's measured result size. */
export type Completion = WireCompletion & { resultMemoryBytes?: number };

/** Retry backoff never grows past this (or past the base, when the base is larger). */
export const BACKOFF_CAP_MS = 300_000;

/** What every store is built with, from the master's configuration. */
export interface StoreOptions {
  leaseSeconds: number;
  resultTtlSeconds: number;
  resultMaxCount: number;
  /** First retry waits about this long; each further retry doubles it, with jitter. */
  retryBackoffMs: number;
  /** How often expired leases, due retries and old results are handled; 0 turns it off. */
  sweepIntervalMs?: number;
  /** A worker counts as active this long after its last call. */
  activeWorkerWindowMs?: number;
  /**
   * Bytes the tasks held may count (see `StoreStats.budgetUsedBytes`); past it retained results
   * are dropped oldest first, then submissions are refused. Unlimited when absent.
   */
  memoryBudgetBytes?: number;
  /** Payload bytes one lease answer carries at most (one task always goes). Unlimited when absent. */
  leaseMaxBytes?: number;
  observer?: StoreObserver;
  /** Milliseconds since the epoch; tests pass a fake clock. */
  now?: () => number;
  /** In [0, 1); tests pass a fixed one to make the jitter predictable. */
  random?: () => number;
}

/** What a lease request says besides its worker, `max` and `waitMs`. */
export interface LeaseOptions {
  /** Ends a long poll early (the client went away): it then answers with no tasks. */
  signal?: AbortSignal | undefined;
  /**
   * The worker's task slots (its CONCURRENCY), remembered for `StoreStats.workerSlots`; absent
   * (a worker that does not send them), the request's `max` counts instead.
   */
  slots?: number | undefined;
}

export interface CompleteOutcome {
  accepted: string[];
  rejected: { id: string; reason: RejectReason }[];
  /** The tasks of the lease the call asked for with its `next`; absent when it asked for none. */
  leased?: LeasedTask[];
}

/** The next lease a `complete` asks for, taken in the same step as the completions. */
export interface NextLease {
  max: number;
  /** As `LeaseOptions.slots`. */
  slots?: number | undefined;
}

export interface StoreStats {
  /** Tasks waiting for a worker, including those waiting out a retry backoff. */
  queued: number;
  /** The part of `queued` still waiting out a retry backoff. */
  delayed: number;
  running: number;
  /** Tasks that succeeded since the master started. */
  succeeded: number;
  /** Tasks that failed for good since the master started. */
  failed: number;
  /** Finished tasks still kept (until RESULT_TTL_SECONDS or RESULT_MAX_COUNT drops them). */
  retained: number;
  /** Distinct worker ids seen on the worker routes recently. */
  activeWorkers: number;
  /**
   * The task slots of those workers together: each counts the `slots` of its latest lease
   * request, or that request's `max` when it sent none (a worker older than the field); a worker
   * that has not leased since it was last forgotten (only renewed or completed) counts 0.
   */
  workerSlots: number;
  /**
   * How long, in seconds (to the millisecond), the task at the head of the ready queue (the next
   * one a lease takes) has been ready; 0 when no task is ready. A task is ready from its
   * submission, from when its lease ran out or its retry backoff ended (the time either was due,
   * not when a sweep noticed), or from a failure retried without backoff. A released task keeps
   * the time it had before it was leased: it goes back to the front of the queue as if it had
   * never been leased. The queue is first in, first out, so this is the longest any ready
   * task has waited, give or take a sweep interval (a retry that falls due, or a lease that runs
   * out, is queued by the next sweep or call, behind tasks submitted since). Tasks still waiting
   * out a backoff (`delayed`) do not count. Measured by the clock of the master that answers.
   */
  oldestQueuedSeconds: number;
  /**
   * What the tasks held count against MEMORY_BUDGET_BYTES: the estimated heap size of queued and
   * running payloads and of retained results and errors, plus a fixed overhead per task.
   */
  budgetUsedBytes: number;
}

/**
 * Thrown by `submit` when the new tasks do not fit the store even with every retained result
 * dropped (its message says which limit); nothing of the submission is kept. The routes answer
 * 503 with `Retry-After`.
 */
export class StoreFullError extends Error {
  override name = "StoreFullError";
}

/** The store is full by its memory budget (`MEMORY_BUDGET_BYTES`). */
export class OverBudgetError extends StoreFullError {
  override name = "OverBudgetError";
  constructor(
    readonly budgetBytes: number,
    readonly liveBytes: number,
    readonly neededBytes: number,
  ) {
    super(
      `the master holds ${liveBytes} bytes of queued and running tasks; ${neededBytes} more would exceed MEMORY_BUDGET_BYTES (${budgetBytes})`,
    );
  }
}

/**
 * Thrown when the store cannot be reached or cannot take writes (Redis down, restarting, loading
 * its data, refusing the password): nothing is known to have changed, and the client should try
 * again (the master answers 503 with Retry-After). `cause` holds the underlying error.
 */
export class StoreUnavailableError extends Error {
  override name = "StoreUnavailableError";
  constructor(cause: unknown) {
    super(
      `the task store is unavailable: ${cause instanceof Error ? cause.message : String(cause)}`,
      {
        cause,
      },
    );
  }
}

export interface TaskStore {
  /** Creates tasks in order; a known idempotency key yields the existing task instead. */
  submit(specs: readonly TaskSpec[]): Promise<SubmitOutcome[]>;
  get(id: string): Promise<TaskView | undefined>;
  /**
   * Resolves with the task once it is finished, or as it stands when `timeoutMs` passes, `signal`
   * aborts or the store closes; `undefined` when the task does not exist.
   */
  waitForFinish(id: string, timeoutMs: number, signal?: AbortSignal): Promise<TaskView | undefined>;
  /**
   * `submit` of one task and then `waitForFinish` of the task it names (the new one, or the one
   * its idempotency key names), in one step: a store may listen for the finish before the task
   * exists (the Redis store marks it watched in the submit's own script).
   */
  submitAndWait(
    spec: TaskSpec,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<SubmittedAndWaited>;
  /**
   * Leases up to `max` queued tasks to `workerId`, fewer when their payloads together would pass
   * the store's byte cap for one answer (one task always goes). When none is queued, waits up to
   * `waitMs` for one (long poll); a task queued meanwhile is handed over at once. A lease belongs
   * to that worker: renewing, completing or releasing it under another `workerId` finds it lost.
   */
  lease(
    workerId: string,
    max: number,
    waitMs: number,
    options?: LeaseOptions,
  ): Promise<LeasedTask[]>;
  renew(
    workerId: string,
    leases: readonly LeaseRef[],
  ): Promise<{ renewed: string[]; lost: string[] }>;
  /**
   * Records results. With `next`, also leases up to `next.max` queued tasks to the worker right
   * after (as `lease` with no wait; nothing once draining), in one step: the room the
   * completions made is filled without another call.
   */
  complete(
    workerId: string,
    results: readonly Completion[],
    next?: NextLease,
  ): Promise<CompleteOutcome>;
  release(workerId: string, leases: readonly LeaseRef[]): Promise<{ released: string[] }>;
  /**
   * Ends leases that `lease` just granted but whose tasks could not be sent to the worker (their
   * payload would not serialize): the attempt does not count, and the task fails for good with
   * `error`, since the same payload will not serialize next time either.
   */
  failUnsent(workerId: string, leases: readonly LeaseRef[], error: string): Promise<void>;
  stats(): Promise<StoreStats>;
  /** Seconds a lease lasts unless renewed. */
  readonly leaseSeconds: number;
  /**
   * True when the tasks outlive this process and every master on the same store sees them
   * (Redis): a draining master then still takes submissions, which another master hands out.
   */
  readonly shared: boolean;
  /** True once `drain()` has been called. */
  readonly draining: boolean;
  /**
   * Stops handing out work: pending long polls are answered (leases empty, tasks as they stand)
   * and later leases return at once with nothing. Renewals and completions still work.
   */
  drain(): void;
  /** Drains and stops background timers. */
  close(): Promise<void>;
}

/** Hooks the store calls as tasks move, so metrics stay out of the store. */
export interface StoreObserver {
  submitted(count: number): void;
  /** One attempt ended: reported by the worker, or its lease expired. */
  attemptEnded(outcome: "succeeded" | "failed" | "expired", runSeconds: number): void;
  finished(status: "succeeded" | "failed"): void;
}
