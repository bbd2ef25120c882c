import { newTaskId } from "./ids.js";
import { Deque, MinHeap } from "./queues.js";
import type {
  CompleteOutcome,
  Completion,
  LeasedTask,
  LeaseRef,
  StoreObserver,
  StoreStats,
  SubmitOutcome,
  TaskSpec,
  TaskStatus,
  TaskStore,
  TaskView,
} from "./task-store.js";

/** Longer errors are cut: a stack trace per retained task would dominate the master's memory. */
export const ERROR_MAX_CHARS = 4096;
/** Retry backoff never grows past this (or past the base, when the base is larger). */
export const BACKOFF_CAP_MS = 300_000;

export interface MemoryStoreOptions {
  leaseSeconds: number;
  resultTtlSeconds: number;
  resultMaxCount: number;
  /** First retry waits about this long; each further retry doubles it, with jitter. */
  retryBackoffMs: number;
  /** How often expired leases, due retries and old results are handled; 0 turns it off. */
  sweepIntervalMs?: number;
  /** A worker counts as active this long after its last call. */
  activeWorkerWindowMs?: number;
  observer?: StoreObserver;
  /** Milliseconds since the epoch; tests pass a fake clock. */
  now?: () => number;
  /** In [0, 1); tests pass a fixed one to make the jitter predictable. */
  random?: () => number;
}

// One object per task with every field set in the constructor, so all records share one hidden
// class and stay small: no closures, timers or per-task promises hang off a record.
class TaskRecord {
  status: TaskStatus = "queued";
  attempts = 0;
  startedAt = 0;
  finishedAt = 0;
  /** Number of the current (or last accepted) lease; 0 when the task holds none. */
  lease = 0;
  leasedAt = 0;
  leaseExpiresAt = 0;
  /** When a task waiting out a retry backoff may run again. */
  availableAt = 0;
  result: unknown = undefined;
  error: string | undefined = undefined;

  constructor(
    readonly id: string,
    readonly type: string,
    public payload: unknown,
    readonly idempotencyKey: string | undefined,
    readonly maxAttempts: number,
    readonly timeoutSeconds: number,
    readonly createdAt: number,
  ) {}
}

interface LeaseWaiter {
  max: number;
  resolve: (tasks: LeasedTask[]) => void;
  timer: NodeJS.Timeout;
  signal: AbortSignal | undefined;
  onAbort: () => void;
}

interface FinishWaiter {
  /** Answers with the task as it stands and forgets the waiter. */
  settle: () => void;
  timer: NodeJS.Timeout;
}

const noopObserver: StoreObserver = {
  submitted() {},
  attemptEnded() {},
  finished() {},
};

/**
 * Keeps every task in this process. Queued tasks sit in a ring-buffer queue, tasks waiting out a
 * retry backoff in a heap by due time, leased tasks in a set; one periodic sweep handles lease
 * expiry, due retries and retention, so no timer exists per task. A lease or completion that
 * arrives after its lease has ended is judged by the clock, not by whether the sweep has run yet.
 */
export class MemoryTaskStore implements TaskStore {
  readonly leaseSeconds: number;
  private readonly leaseMs: number;
  private readonly resultTtlMs: number;
  private readonly resultMaxCount: number;
  private readonly retryBackoffMs: number;
  private readonly activeWorkerWindowMs: number;
  private readonly observer: StoreObserver;
  private readonly now: () => number;
  private readonly random: () => number;

  private readonly tasks = new Map<string, TaskRecord>();
  private readonly byKey = new Map<string, TaskRecord>();
  private readonly ready = new Deque<TaskRecord>();
  private readonly delayed = new MinHeap<TaskRecord>((task) => task.availableAt);
  private readonly running = new Set<TaskRecord>();
  /** Finished tasks in the order they finished, which is also the order they expire in. */
  private readonly finished = new Deque<TaskRecord>();
  private readonly leaseWaiters = new Set<LeaseWaiter>();
  private readonly finishWaiters = new Map<string, Set<FinishWaiter>>();
  private readonly workers = new Map<string, number>();
  private readonly sweepTimer: NodeJS.Timeout | undefined;

  private leaseSequence = 0;
  private queuedCount = 0;
  private succeededTotal = 0;
  private failedTotal = 0;
  private isDraining = false;

  constructor(options: MemoryStoreOptions) {
    this.leaseSeconds = options.leaseSeconds;
    this.leaseMs = options.leaseSeconds * 1000;
    this.resultTtlMs = options.resultTtlSeconds * 1000;
    this.resultMaxCount = options.resultMaxCount;
    this.retryBackoffMs = options.retryBackoffMs;
    this.activeWorkerWindowMs = options.activeWorkerWindowMs ?? 60_000;
    this.observer = options.observer ?? noopObserver;
    this.now = options.now ?? Date.now;
    this.random = options.random ?? Math.random;
    const sweepIntervalMs = options.sweepIntervalMs ?? 250;
    if (sweepIntervalMs > 0) {
      this.sweepTimer = setInterval(() => this.sweep(), sweepIntervalMs);
      // The sweep alone must not keep the process alive after the server has closed.
      this.sweepTimer.unref();
    }
  }

  get draining(): boolean {
    return this.isDraining;
  }

  async submit(specs: readonly TaskSpec[]): Promise<SubmitOutcome[]> {
    const now = this.now();
    const outcomes: SubmitOutcome[] = new Array(specs.length);
    let created = 0;
    for (let i = 0; i < specs.length; i++) {
      const spec = specs[i] as TaskSpec;
      const key = spec.idempotencyKey;
      const existing = key === undefined ? undefined : this.byKey.get(key);
      if (existing !== undefined) {
        outcomes[i] = { id: existing.id, status: existing.status, created: false };
        continue;
      }
      let id = newTaskId();
      while (this.tasks.has(id)) id = newTaskId();
      const task = new TaskRecord(
        id,
        spec.type,
        spec.payload,
        key,
        spec.maxAttempts,
        spec.timeoutSeconds,
        now,
      );
      this.tasks.set(id, task);
      if (key !== undefined) this.byKey.set(key, task);
      this.ready.push(task);
      this.queuedCount++;
      created++;
      outcomes[i] = { id, status: "queued", created: true };
    }
    if (created > 0) this.observer.submitted(created);
    this.handOff(now);
    return outcomes;
  }

  async get(id: string): Promise<TaskView | undefined> {
    const task = this.tasks.get(id);
    return task === undefined ? undefined : view(task);
  }

  waitForFinish(
    id: string,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<TaskView | undefined> {
    const task = this.tasks.get(id);
    if (task === undefined) return Promise.resolve(undefined);
    if (isFinished(task) || timeoutMs <= 0 || this.isDraining || signal?.aborted) {
      return Promise.resolve(view(task));
    }
    return new Promise((resolve) => {
      let waiters = this.finishWaiters.get(id);
      if (waiters === undefined) {
        waiters = new Set();
        this.finishWaiters.set(id, waiters);
      }
      const set = waiters;
      const settle = () => {
        clearTimeout(waiter.timer);
        signal?.removeEventListener("abort", settle);
        set.delete(waiter);
        if (set.size === 0 && this.finishWaiters.get(id) === set) this.finishWaiters.delete(id);
        resolve(view(task));
      };
      const waiter: FinishWaiter = { settle, timer: setTimeout(settle, timeoutMs) };
      signal?.addEventListener("abort", settle, { once: true });
      set.add(waiter);
    });
  }

  lease(
    workerId: string,
    max: number,
    waitMs: number,
    signal?: AbortSignal,
  ): Promise<LeasedTask[]> {
    const now = this.now();
    this.workers.set(workerId, now);
    if (this.isDraining) return Promise.resolve([]);
    const tasks = this.take(max, now);
    if (tasks.length > 0 || waitMs <= 0 || signal?.aborted) return Promise.resolve(tasks);
    return new Promise((resolve) => {
      const finish = (leased: LeasedTask[]) => {
        clearTimeout(waiter.timer);
        signal?.removeEventListener("abort", waiter.onAbort);
        this.leaseWaiters.delete(waiter);
        resolve(leased);
      };
      const waiter: LeaseWaiter = {
        max,
        resolve: finish,
        timer: setTimeout(() => finish([]), waitMs),
        signal,
        onAbort: () => finish([]),
      };
      signal?.addEventListener("abort", waiter.onAbort, { once: true });
      this.leaseWaiters.add(waiter);
    });
  }

  async renew(
    workerId: string,
    leases: readonly LeaseRef[],
  ): Promise<{ renewed: string[]; lost: string[] }> {
    const now = this.now();
    this.workers.set(workerId, now);
    const renewed: string[] = [];
    const lost: string[] = [];
    for (const ref of leases) {
      const task = this.tasks.get(ref.id);
      if (task !== undefined && this.holdsLiveLease(task, ref.leaseId, now)) {
        task.leaseExpiresAt = Math.min(now + this.leaseMs, this.attemptDeadline(task));
        renewed.push(ref.id);
      } else {
        lost.push(ref.id);
      }
    }
    this.handOff(now);
    return { renewed, lost };
  }

  async complete(workerId: string, results: readonly Completion[]): Promise<CompleteOutcome> {
    const now = this.now();
    this.workers.set(workerId, now);
    const outcome: CompleteOutcome = { accepted: [], rejected: [] };
    for (const completion of results) {
      const task = this.tasks.get(completion.id);
      if (task === undefined) {
        outcome.rejected.push({ id: completion.id, reason: "not_found" });
      } else if (this.holdsLiveLease(task, completion.leaseId, now)) {
        this.applyCompletion(task, completion, now);
        outcome.accepted.push(completion.id);
      } else if (
        task.status !== "running" &&
        task.lease !== 0 &&
        leaseIdOf(task) === completion.leaseId
      ) {
        // The same lease reporting again (a worker retrying a request whose answer it lost):
        // the first report stands and nothing is counted twice.
        outcome.accepted.push(completion.id);
      } else {
        outcome.rejected.push({ id: completion.id, reason: "lease_lost" });
      }
    }
    this.handOff(now);
    return outcome;
  }

  async release(workerId: string, leases: readonly LeaseRef[]): Promise<{ released: string[] }> {
    const now = this.now();
    this.workers.set(workerId, now);
    const released: string[] = [];
    for (const ref of leases) {
      const task = this.tasks.get(ref.id);
      if (task === undefined || !this.holdsLiveLease(task, ref.leaseId, now)) continue;
      this.running.delete(task);
      task.attempts--;
      if (task.attempts === 0) task.startedAt = 0;
      task.lease = 0;
      task.status = "queued";
      this.queuedCount++;
      // It was at the head of the queue once already; it should not wait behind the whole queue.
      this.ready.unshift(task);
      released.push(ref.id);
    }
    this.handOff(now);
    return { released };
  }

  async stats(): Promise<StoreStats> {
    return this.statsNow();
  }

  /** The same figures as `stats()`, synchronously, for metrics collected on scrape. */
  statsNow(): StoreStats {
    const since = this.now() - this.activeWorkerWindowMs;
    let activeWorkers = 0;
    for (const seen of this.workers.values()) if (seen >= since) activeWorkers++;
    return {
      queued: this.queuedCount,
      delayed: this.delayed.length,
      running: this.running.size,
      succeeded: this.succeededTotal,
      failed: this.failedTotal,
      retained: this.finished.length,
      activeWorkers,
    };
  }

  /**
   * Expires leases that have run out, queues retries that are due, drops finished tasks past
   * their time and forgets workers not seen for a while. Runs on a timer; tests call it directly.
   */
  sweep(): void {
    const now = this.now();
    for (const task of this.running) {
      if (now >= task.leaseExpiresAt) this.expire(task, now);
    }
    this.promoteDue(now);
    const oldest = now - this.resultTtlMs;
    for (let task = this.finished.peek(); task !== undefined; task = this.finished.peek()) {
      if (task.finishedAt > oldest) break;
      this.finished.shift();
      this.drop(task);
    }
    const since = now - this.activeWorkerWindowMs;
    for (const [workerId, seen] of this.workers) {
      if (seen < since) this.workers.delete(workerId);
    }
    this.handOff(now);
  }

  drain(): void {
    this.isDraining = true;
    for (const waiter of this.leaseWaiters) waiter.resolve([]);
    // Each waiter removes itself from its set when it resolves, so walk copies.
    for (const waiters of [...this.finishWaiters.values()]) {
      for (const waiter of [...waiters]) waiter.settle();
    }
  }

  async close(): Promise<void> {
    this.drain();
    if (this.sweepTimer !== undefined) clearInterval(this.sweepTimer);
  }

  private take(max: number, now: number): LeasedTask[] {
    this.promoteDue(now);
    const leased: LeasedTask[] = [];
    while (leased.length < max) {
      const task = this.ready.shift();
      if (task === undefined) break;
      leased.push(this.grantLease(task, now));
    }
    return leased;
  }

  private grantLease(task: TaskRecord, now: number): LeasedTask {
    this.queuedCount--;
    task.status = "running";
    task.attempts++;
    task.lease = ++this.leaseSequence;
    task.leasedAt = now;
    if (task.startedAt === 0) task.startedAt = now;
    task.leaseExpiresAt = now + this.leaseMs;
    this.running.add(task);
    return {
      id: task.id,
      leaseId: leaseIdOf(task),
      type: task.type,
      payload: task.payload,
      attempt: task.attempts,
      timeoutSeconds: task.timeoutSeconds,
    };
  }

  /** Gives queued tasks to waiting long polls, oldest poll first. */
  private handOff(now: number): void {
    if (this.leaseWaiters.size === 0) return;
    this.promoteDue(now);
    for (const waiter of this.leaseWaiters) {
      if (this.ready.length === 0) break;
      waiter.resolve(this.take(waiter.max, now));
    }
  }

  private promoteDue(now: number): void {
    for (let task = this.delayed.peek(); task !== undefined; task = this.delayed.peek()) {
      if (task.availableAt > now) break;
      this.delayed.pop();
      this.ready.push(task);
    }
  }

  /** The lease is the task's current one and has not run out; one that has is expired now. */
  private holdsLiveLease(task: TaskRecord, leaseId: string, now: number): boolean {
    if (task.status !== "running" || leaseIdOf(task) !== leaseId) return false;
    if (now < task.leaseExpiresAt) return true;
    this.expire(task, now);
    return false;
  }

  /**
   * Past this point renewals stop extending the lease: the worker should have given up on its
   * own at `timeoutSeconds`; one lease period more lets it report that first.
   */
  private attemptDeadline(task: TaskRecord): number {
    return task.leasedAt + task.timeoutSeconds * 1000 + this.leaseMs;
  }

  private applyCompletion(task: TaskRecord, completion: Completion, now: number): void {
    this.running.delete(task);
    const runSeconds = (now - task.leasedAt) / 1000;
    if (completion.ok) {
      this.observer.attemptEnded("succeeded", runSeconds);
      task.result = completion.result === undefined ? null : completion.result;
      task.error = undefined;
      this.finish(task, "succeeded", now);
      return;
    }
    this.observer.attemptEnded("failed", runSeconds);
    task.error =
      completion.error.length > ERROR_MAX_CHARS
        ? completion.error.slice(0, ERROR_MAX_CHARS)
        : completion.error;
    if (completion.retryable && task.attempts < task.maxAttempts) {
      this.requeueAfter(task, this.backoffMs(task.attempts), now);
    } else {
      this.finish(task, "failed", now);
    }
  }

  private expire(task: TaskRecord, now: number): void {
    this.running.delete(task);
    this.observer.attemptEnded("expired", (now - task.leasedAt) / 1000);
    task.error =
      now >= this.attemptDeadline(task)
        ? `attempt ${task.attempts} timed out after ${task.timeoutSeconds}s`
        : `attempt ${task.attempts} lost its lease (not renewed within ${this.leaseSeconds}s)`;
    task.lease = 0;
    if (task.attempts < task.maxAttempts) {
      this.requeueAfter(task, 0, now);
    } else {
      this.finish(task, "failed", now);
    }
  }

  private requeueAfter(task: TaskRecord, delayMs: number, now: number): void {
    task.status = "queued";
    this.queuedCount++;
    if (delayMs <= 0) {
      this.ready.push(task);
    } else {
      task.availableAt = now + delayMs;
      this.delayed.push(task);
    }
  }

  /** Exponential from the base, capped, with "equal jitter": half fixed, half random. */
  private backoffMs(attempt: number): number {
    const cap = Math.max(this.retryBackoffMs, BACKOFF_CAP_MS);
    const exponential = Math.min(cap, this.retryBackoffMs * 2 ** (attempt - 1));
    return Math.round(exponential / 2 + (exponential / 2) * this.random());
  }

  private finish(task: TaskRecord, status: "succeeded" | "failed", now: number): void {
    task.status = status;
    task.finishedAt = now;
    // The API never shows the payload of a finished task, so it need not be kept.
    task.payload = undefined;
    if (status === "succeeded") this.succeededTotal++;
    else this.failedTotal++;
    this.observer.finished(status);
    this.finished.push(task);
    while (this.finished.length > this.resultMaxCount) {
      this.drop(this.finished.shift() as TaskRecord);
    }
    const waiters = this.finishWaiters.get(task.id);
    if (waiters !== undefined) for (const waiter of [...waiters]) waiter.settle();
  }

  /** Forgets a finished task, and its idempotency key with it. */
  private drop(task: TaskRecord): void {
    this.tasks.delete(task.id);
    if (task.idempotencyKey !== undefined && this.byKey.get(task.idempotencyKey) === task) {
      this.byKey.delete(task.idempotencyKey);
    }
  }
}

function leaseIdOf(task: TaskRecord): string {
  return task.lease === 0 ? "" : task.lease.toString(36);
}

function isFinished(task: TaskRecord): boolean {
  return task.status === "succeeded" || task.status === "failed";
}

function view(task: TaskRecord): TaskView {
  const out: TaskView = {
    id: task.id,
    type: task.type,
    status: task.status,
    attempts: task.attempts,
    createdAt: task.createdAt,
  };
  if (task.status === "succeeded") out.result = task.result;
  if (task.error !== undefined) out.error = task.error;
  if (task.startedAt !== 0) out.startedAt = task.startedAt;
  if (task.finishedAt !== 0) out.finishedAt = task.finishedAt;
  return out;
}
