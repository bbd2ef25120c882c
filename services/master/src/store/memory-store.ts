import { backoffDelayMs } from "@taskfleet/protocol/backoff";
import { limits } from "@taskfleet/protocol/limits";
import { HEAP_BYTES, jsonBytes, measureHeap } from "../json-body.js";
import { TASK_OVERHEAD_BYTES, TRACKED_WORKERS_MAX } from "../limits.js";
import { newLeaseId } from "./ids.js";
import { Deque, MinHeap } from "./queues.js";
import { SlotTable } from "./slot-table.js";
import {
  BACKOFF_CAP_MS,
  type CompleteOutcome,
  type Completion,
  type LeasedTask,
  type LeaseOptions,
  type LeaseRef,
  type NextLease,
  OverBudgetError,
  StoreFullError,
  type StoreObserver,
  type StoreOptions,
  type StoreStats,
  type SubmitOutcome,
  type SubmittedAndWaited,
  type TaskSpec,
  type TaskStatus,
  type TaskStore,
  type TaskView,
} from "./task-store.js";

/** The memory store takes the options every store takes, and one for tests. */
export interface MemoryStoreOptions extends StoreOptions {
  /**
   * The most tasks the store holds, queued, running and retained together; past it a submission
   * is refused like one over the memory budget. For tests: the default is also the maximum,
   * `SLOTS_MAX` (2^24), as many as the ids can name.
   */
  tasksMax?: number;
}

// One object per task with every field set in the constructor, so all records share one hidden
// class and stay small: no closures, timers or per-task promises hang off a record, and what many
// tasks share or few tasks have is kept elsewhere: 6 fields, not 13. On 100,000 queued tasks with
// small payloads that is 158 bytes of heap a task, all told (the record 72, its id 32, its
// payload 32, its slot in the `SlotTable` and in the ready queue 8 to 16 each), against 234 with a
// field for each and a `Map` by id.
// - What a task gets from its first lease on (its attempts, lease, times, outcome) is in an
//   `Attempts` of its own, created then: a long queue of tasks never leased holds none.
// - Type, maxAttempts and timeoutSeconds are one `TaskShape`, shared by every task submitted
//   with the same three (see `MemoryTaskStore.shapeOf`). A task holds its shape until its first
//   lease and its `Attempts` (which hold the shape) from then on: one field for both.
// - The idempotency key, which few tasks have, is in `keyOf`.
// - A task's status and budget charge are implied until its first lease (`queued`, what it was
//   counted at its submission), and kept in its `Attempts` from then on.
class TaskRecord {
  private state: TaskShape | Attempts;

  constructor(
    readonly id: string,
    shape: TaskShape,
    public payload: unknown,
    /** Size as JSON, which bounds what one lease answer carries. */
    readonly payloadBytes: number,
    /** Estimated size on the heap, which the memory budget counts. */
    readonly payloadMemoryBytes: number,
    readonly createdAt: number,
  ) {
    this.state = shape;
  }

  /** The task's leases and outcome; undefined until its first lease. */
  get run(): Attempts | undefined {
    const state = this.state;
    return state instanceof Attempts ? state : undefined;
  }

  /** Its `Attempts`, created by the first lease with what the task counts until then. */
  attemptsFromNow(): Attempts {
    const state = this.state;
    if (state instanceof Attempts) return state;
    const run = new Attempts(state, this.createdAt, chargeOf(this));
    this.state = run;
    return run;
  }

  get shape(): TaskShape {
    const state = this.state;
    return state instanceof Attempts ? state.shape : state;
  }

  /** `queued` until the first lease. */
  get status(): TaskStatus {
    const run = this.run;
    return run === undefined ? "queued" : run.status;
  }

  set status(status: TaskStatus) {
    attemptsOf(this).status = status;
  }

  /**
   * What this task counts against the memory budget right now (see `chargeOf`); until the first
   * lease, what it was counted at its submission.
   */
  get charge(): number {
    const run = this.run;
    return run === undefined ? chargeOf(this) : run.charge;
  }

  set charge(bytes: number) {
    attemptsOf(this).charge = bytes;
  }

  get type(): string {
    return this.shape.type;
  }

  get maxAttempts(): number {
    return this.shape.maxAttempts;
  }

  get timeoutSeconds(): number {
    return this.shape.timeoutSeconds;
  }

  /** Attempts started that count (a lease given back does not). */
  get attempts(): number {
    const run = this.run;
    return run === undefined ? 0 : run.attempts;
  }

  get idempotencyKey(): string | undefined {
    return keyOf.get(this);
  }
}

/** A submission's type and settings, shared by the tasks submitted with the same. */
class TaskShape {
  constructor(
    readonly type: string,
    readonly maxAttempts: number,
    readonly timeoutSeconds: number,
  ) {}
}

/** The idempotency keys of the tasks submitted with one. */
const keyOf = new WeakMap<TaskRecord, string>();

/** Distinct shapes a store shares at most; a task of any other gets one of its own. */
const SHAPES_MAX = 1024;

/** Above every allowed `timeoutSeconds`, so that a shape's code names one pair of settings. */
const SHAPE_TIMEOUT_SPAN = limits.timeoutSeconds + 1;

/** A task's leases and outcome, from its first lease on. */
class Attempts {
  status: TaskStatus = "running";
  /** Attempts started that count (a lease given back does not). */
  attempts = 0;
  /** When the first attempt that counts started; 0 when every lease was given back. */
  startedAt = 0;
  finishedAt = 0;
  /** The current (or last accepted) lease; empty when the task holds none. */
  leaseId = "";
  /** The worker the lease was granted to; only it may renew, complete or release it. */
  leaseWorker = "";
  leasedAt = 0;
  leaseExpiresAt = 0;
  /** When a task waiting out a retry backoff may run again. */
  availableAt = 0;
  result: unknown = undefined;
  resultMemoryBytes = 0;
  error: string | undefined = undefined;

  constructor(
    readonly shape: TaskShape,
    /** Since when the task has been ready to lease (see `StoreStats.oldestQueuedSeconds`). */
    public readySince: number,
    /** See `TaskRecord.charge`. */
    public charge: number,
  ) {}
}

/** The attempts of a task that has been leased (running, waiting to retry or finished). */
function attemptsOf(task: TaskRecord): Attempts {
  if (task.run === undefined) throw new Error(`task ${task.id} has never been leased`);
  return task.run;
}

/** Since when a queued task has been ready: its submission, until a lease says otherwise. */
function readySinceOf(task: TaskRecord): number {
  return task.run === undefined ? task.createdAt : task.run.readySince;
}

interface LeaseWaiter {
  workerId: string;
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
 * What the tasks hold is counted against a memory budget: retained results make room for new
 * tasks, oldest first, and past it submissions are refused.
 */
export class MemoryTaskStore implements TaskStore {
  readonly leaseSeconds: number;
  private readonly leaseMs: number;
  private readonly resultTtlMs: number;
  private readonly resultMaxCount: number;
  private readonly retryBackoffMs: number;
  private readonly activeWorkerWindowMs: number;
  private readonly memoryBudgetBytes: number;
  private readonly leaseMaxBytes: number;
  private readonly observer: StoreObserver;
  private readonly now: () => number;
  private readonly random: () => number;

  private readonly tasks: SlotTable<TaskRecord>;
  private readonly byKey = new Map<string, TaskRecord>();
  /** Shapes by type, then by `maxAttempts × SHAPE_TIMEOUT_SPAN + timeoutSeconds`. */
  private readonly shapes = new Map<string, Map<number, TaskShape>>();
  private shapeCount = 0;
  private readonly ready = new Deque<TaskRecord>();
  private readonly delayed = new MinHeap<TaskRecord>((task) => task.run?.availableAt ?? 0);
  private readonly running = new Set<TaskRecord>();
  /** Finished tasks in the order they finished, which is also the order they expire in. */
  private readonly finished = new Deque<TaskRecord>();
  private readonly leaseWaiters = new Set<LeaseWaiter>();
  private readonly finishWaiters = new Map<string, Set<FinishWaiter>>();
  /** When each worker last called a worker route. */
  private readonly workers = new Map<string, number>();
  /** The slots each worker reported with its latest lease; forgotten with the worker. */
  private readonly workerSlots = new Map<string, number>();
  private readonly sweepTimer: NodeJS.Timeout | undefined;

  private queuedCount = 0;
  /** Budget counted by queued and running tasks, which are never dropped to make room. */
  private liveBytes = 0;
  /** Budget counted by retained finished tasks, which are dropped oldest first to make room. */
  private retainedBytes = 0;
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
    this.memoryBudgetBytes = options.memoryBudgetBytes ?? Number.POSITIVE_INFINITY;
    this.leaseMaxBytes = options.leaseMaxBytes ?? Number.POSITIVE_INFINITY;
    this.tasks = new SlotTable(options.tasksMax);
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

  /** The tasks live in this process only. */
  readonly shared = false;

  get draining(): boolean {
    return this.isDraining;
  }

  async submit(specs: readonly TaskSpec[]): Promise<SubmitOutcome[]> {
    const now = this.now();
    // What the new tasks will count, before any is created: a batch is taken whole or not at all.
    const payloadBytes: number[] = new Array(specs.length);
    const payloadMemoryBytes: number[] = new Array(specs.length);
    const newKeys = new Set<string>();
    let needed = 0;
    let newTasks = 0;
    for (let i = 0; i < specs.length; i++) {
      const spec = specs[i] as TaskSpec;
      const key = spec.idempotencyKey;
      if (key !== undefined && (this.byKey.has(key) || newKeys.has(key))) continue;
      if (key !== undefined) newKeys.add(key);
      payloadBytes[i] = spec.payloadBytes ?? jsonBytes(spec.payload);
      const memoryBytes = spec.payloadMemoryBytes ?? heapOf(spec.payload);
      payloadMemoryBytes[i] = memoryBytes;
      needed += TASK_OVERHEAD_BYTES + keyBytes(key) + memoryBytes;
      newTasks++;
    }
    this.makeRoom(needed, newTasks);

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
      const task = this.tasks.add(
        (id) =>
          new TaskRecord(
            id,
            this.shapeOf(spec),
            spec.payload,
            payloadBytes[i] as number,
            payloadMemoryBytes[i] as number,
            now,
          ),
      );
      if (key !== undefined) {
        keyOf.set(task, key);
        this.byKey.set(key, task);
      }
      // Its charge until the first lease (`TaskRecord.charge`).
      this.liveBytes += chargeOf(task);
      this.ready.push(task);
      this.queuedCount++;
      created++;
      outcomes[i] = { id: task.id, status: "queued", created: true };
    }
    if (created > 0) this.observer.submitted(created);
    this.handOff(now);
    return outcomes;
  }

  async get(id: string): Promise<TaskView | undefined> {
    const task = this.tasks.get(id);
    return task === undefined ? undefined : view(task);
  }

  async submitAndWait(
    spec: TaskSpec,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<SubmittedAndWaited> {
    const [outcome] = (await this.submit([spec])) as [SubmitOutcome];
    return { outcome, task: await this.waitForFinish(outcome.id, timeoutMs, signal) };
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
    options: LeaseOptions = {},
  ): Promise<LeasedTask[]> {
    const { signal } = options;
    const now = this.now();
    if (this.noteWorker(workerId, now)) this.workerSlots.set(workerId, options.slots ?? max);
    if (this.isDraining) return Promise.resolve([]);
    const tasks = this.take(workerId, max, now);
    if (tasks.length > 0 || waitMs <= 0 || signal?.aborted) return Promise.resolve(tasks);
    return new Promise((resolve) => {
      const finish = (leased: LeasedTask[]) => {
        clearTimeout(waiter.timer);
        signal?.removeEventListener("abort", waiter.onAbort);
        this.leaseWaiters.delete(waiter);
        resolve(leased);
      };
      const waiter: LeaseWaiter = {
        workerId,
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
    this.noteWorker(workerId, now);
    const renewed: string[] = [];
    const lost: string[] = [];
    for (const ref of leases) {
      const task = this.tasks.get(ref.id);
      if (task !== undefined && this.holdsLiveLease(task, ref.leaseId, workerId, now)) {
        attemptsOf(task).leaseExpiresAt = Math.min(now + this.leaseMs, this.attemptDeadline(task));
        renewed.push(ref.id);
      } else {
        lost.push(ref.id);
      }
    }
    this.handOff(now);
    return { renewed, lost };
  }

  async complete(
    workerId: string,
    results: readonly Completion[],
    next?: NextLease,
  ): Promise<CompleteOutcome> {
    const now = this.now();
    this.noteWorker(workerId, now);
    const outcome: CompleteOutcome = { accepted: [], rejected: [] };
    for (const completion of results) {
      const task = this.tasks.get(completion.id);
      if (task === undefined) {
        outcome.rejected.push({ id: completion.id, reason: "not_found" });
      } else if (this.holdsLiveLease(task, completion.leaseId, workerId, now)) {
        this.applyCompletion(task, completion, now);
        outcome.accepted.push(completion.id);
      } else if (
        task.status !== "running" &&
        task.run !== undefined &&
        task.run.leaseId !== "" &&
        task.run.leaseId === completion.leaseId &&
        task.run.leaseWorker === workerId
      ) {
        // The same lease reporting again (a worker retrying a request whose answer it lost):
        // the first report stands and nothing is counted twice.
        outcome.accepted.push(completion.id);
      } else {
        outcome.rejected.push({ id: completion.id, reason: "lease_lost" });
      }
    }
    this.handOff(now);
    if (next !== undefined) {
      outcome.leased = await this.lease(workerId, next.max, 0, { slots: next.slots });
    }
    return outcome;
  }

  async release(workerId: string, leases: readonly LeaseRef[]): Promise<{ released: string[] }> {
    const now = this.now();
    this.noteWorker(workerId, now);
    const released: string[] = [];
    for (const ref of leases) {
      const task = this.tasks.get(ref.id);
      if (task === undefined || !this.holdsLiveLease(task, ref.leaseId, workerId, now)) continue;
      this.unlease(task);
      task.status = "queued";
      this.queuedCount++;
      // It was at the head of the queue once already; it should not wait behind the whole queue,
      // and it keeps the time it became ready then (its `readySince`).
      this.ready.unshift(task);
      released.push(ref.id);
    }
    this.handOff(now);
    return { released };
  }

  async failUnsent(workerId: string, leases: readonly LeaseRef[], error: string): Promise<void> {
    const now = this.now();
    for (const ref of leases) {
      const task = this.tasks.get(ref.id);
      if (task === undefined || !this.holdsLiveLease(task, ref.leaseId, workerId, now)) continue;
      this.unlease(task);
      attemptsOf(task).error = error;
      this.finish(task, "failed", now);
    }
  }

  async stats(): Promise<StoreStats> {
    return this.statsNow();
  }

  /** The same figures as `stats()`, synchronously, for metrics collected on scrape. */
  statsNow(): StoreStats {
    const now = this.now();
    const since = now - this.activeWorkerWindowMs;
    let activeWorkers = 0;
    let workerSlots = 0;
    for (const [workerId, seen] of this.workers) {
      if (seen < since) continue;
      activeWorkers++;
      workerSlots += this.workerSlots.get(workerId) ?? 0;
    }
    const head = this.ready.peek();
    return {
      queued: this.queuedCount,
      delayed: this.delayed.length,
      running: this.running.size,
      succeeded: this.succeededTotal,
      failed: this.failedTotal,
      retained: this.finished.length,
      activeWorkers,
      budgetUsedBytes: this.liveBytes + this.retainedBytes,
      workerSlots,
      oldestQueuedSeconds: head === undefined ? 0 : Math.max(0, now - readySinceOf(head)) / 1000,
    };
  }

  /**
   * Expires leases that have run out, queues retries that are due, drops finished tasks past
   * their time and forgets workers not seen for a while. Runs on a timer; tests call it directly.
   */
  sweep(): void {
    const now = this.now();
    for (const task of this.running) {
      if (now >= attemptsOf(task).leaseExpiresAt) this.expire(task, now);
    }
    this.promoteDue(now);
    const oldest = now - this.resultTtlMs;
    for (let task = this.finished.peek(); task !== undefined; task = this.finished.peek()) {
      if (attemptsOf(task).finishedAt > oldest) break;
      this.finished.shift();
      this.drop(task);
    }
    const since = now - this.activeWorkerWindowMs;
    for (const [workerId, seen] of this.workers) {
      if (seen >= since) continue;
      this.workers.delete(workerId);
      this.workerSlots.delete(workerId);
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

  /** The shape of the tasks submitted as `spec`: the shared one, while there are few enough. */
  private shapeOf(spec: TaskSpec): TaskShape {
    const { type, maxAttempts, timeoutSeconds } = spec;
    const code = maxAttempts * SHAPE_TIMEOUT_SPAN + timeoutSeconds;
    let ofType = this.shapes.get(type);
    const shared = ofType?.get(code);
    if (shared !== undefined) return shared;
    const shape = new TaskShape(type, maxAttempts, timeoutSeconds);
    // The routes allow no others; a caller that passes others gets a shape of its own.
    const codable =
      Number.isInteger(timeoutSeconds) &&
      timeoutSeconds >= 0 &&
      timeoutSeconds < SHAPE_TIMEOUT_SPAN;
    if (codable && this.shapeCount < SHAPES_MAX) {
      if (ofType === undefined) {
        ofType = new Map();
        this.shapes.set(spec.type, ofType);
      }
      ofType.set(code, shape);
      this.shapeCount++;
    }
    return shape;
  }

  /** Brings the budget up to date with what the task holds now. */
  private account(task: TaskRecord): void {
    const bytes = chargeOf(task);
    if (isFinished(task)) this.retainedBytes += bytes - task.charge;
    else this.liveBytes += bytes - task.charge;
    task.charge = bytes;
  }

  /**
   * Drops retained results, oldest first, until `tasks` more tasks holding `bytes` fit the budget
   * and the table; throws without dropping anything when they would not fit even with no result
   * retained.
   */
  private makeRoom(bytes: number, tasks: number): void {
    if (tasks === 0) return;
    if (this.liveBytes + bytes > this.memoryBudgetBytes) {
      throw new OverBudgetError(this.memoryBudgetBytes, this.liveBytes, bytes);
    }
    const unfinished = this.tasks.size - this.finished.length;
    if (unfinished + tasks > this.tasks.capacity) {
      throw new StoreFullError(
        `the master holds ${unfinished} queued and running tasks, and ${this.tasks.capacity} tasks at most: ${tasks} more do not fit`,
      );
    }
    while (
      this.liveBytes + this.retainedBytes + bytes > this.memoryBudgetBytes ||
      !this.tasks.fits(tasks)
    ) {
      const oldest = this.finished.shift();
      if (oldest === undefined) break;
      this.drop(oldest);
    }
  }

  /** Marks the worker active now; false when it is one too many to track (and is not). */
  private noteWorker(workerId: string, now: number): boolean {
    if (this.workers.size >= TRACKED_WORKERS_MAX && !this.workers.has(workerId)) return false;
    this.workers.set(workerId, now);
    return true;
  }

  /** Takes a running task out of its lease as if it had never been leased. */
  private unlease(task: TaskRecord): void {
    this.running.delete(task);
    const run = attemptsOf(task);
    run.attempts--;
    if (run.attempts === 0) run.startedAt = 0;
    run.leaseId = "";
    run.leaseWorker = "";
  }

  private take(workerId: string, max: number, now: number): LeasedTask[] {
    this.promoteDue(now);
    const leased: LeasedTask[] = [];
    let bytes = 0;
    while (leased.length < max) {
      const next = this.ready.peek();
      if (next === undefined) break;
      if (leased.length > 0 && bytes + next.payloadBytes > this.leaseMaxBytes) break;
      this.ready.shift();
      bytes += next.payloadBytes;
      leased.push(this.grantLease(next, workerId, now));
    }
    return leased;
  }

  private grantLease(task: TaskRecord, workerId: string, now: number): LeasedTask {
    this.queuedCount--;
    // Until now its charge was the one it was counted at its submission.
    const run = task.attemptsFromNow();
    run.status = "running";
    run.attempts++;
    run.leaseId = newLeaseId();
    run.leaseWorker = workerId;
    run.leasedAt = now;
    if (run.startedAt === 0) run.startedAt = now;
    run.leaseExpiresAt = now + this.leaseMs;
    this.running.add(task);
    return {
      id: task.id,
      leaseId: run.leaseId,
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
      waiter.resolve(this.take(waiter.workerId, waiter.max, now));
    }
  }

  private promoteDue(now: number): void {
    for (let task = this.delayed.peek(); task !== undefined; task = this.delayed.peek()) {
      const run = attemptsOf(task);
      if (run.availableAt > now) break;
      this.delayed.pop();
      run.readySince = run.availableAt;
      this.ready.push(task);
    }
  }

  /**
   * The lease is the task's current one, held by this worker, and has not run out; one that has
   * run out is expired now. Another worker presenting the lease id changes nothing.
   */
  private holdsLiveLease(
    task: TaskRecord,
    leaseId: string,
    workerId: string,
    now: number,
  ): boolean {
    const run = task.run;
    if (
      task.status !== "running" ||
      run === undefined ||
      run.leaseId !== leaseId ||
      run.leaseWorker !== workerId
    ) {
      return false;
    }
    if (now < run.leaseExpiresAt) return true;
    this.expire(task, now);
    return false;
  }

  /**
   * Past this point renewals stop extending the lease: the worker should have given up on its
   * own at `timeoutSeconds`; one lease period more lets it report that first.
   */
  private attemptDeadline(task: TaskRecord): number {
    return attemptsOf(task).leasedAt + task.timeoutSeconds * 1000 + this.leaseMs;
  }

  private applyCompletion(task: TaskRecord, completion: Completion, now: number): void {
    this.running.delete(task);
    const run = attemptsOf(task);
    const runSeconds = (now - run.leasedAt) / 1000;
    if (completion.ok) {
      this.observer.attemptEnded("succeeded", runSeconds);
      run.result = completion.result === undefined ? null : completion.result;
      run.resultMemoryBytes = completion.resultMemoryBytes ?? heapOf(run.result);
      run.error = undefined;
      this.finish(task, "succeeded", now);
      return;
    }
    this.observer.attemptEnded("failed", runSeconds);
    run.error =
      completion.error.length > limits.errorMaxChars
        ? completion.error.slice(0, limits.errorMaxChars)
        : completion.error;
    if (completion.retryable && task.attempts < task.maxAttempts) {
      this.account(task);
      this.requeueAfter(task, this.backoffMs(task.attempts), now);
    } else {
      this.finish(task, "failed", now);
    }
  }

  private expire(task: TaskRecord, now: number): void {
    this.running.delete(task);
    const run = attemptsOf(task);
    this.observer.attemptEnded("expired", (now - run.leasedAt) / 1000);
    run.error =
      now >= this.attemptDeadline(task)
        ? `attempt ${task.attempts} timed out after ${task.timeoutSeconds}s`
        : `attempt ${task.attempts} lost its lease (not renewed within ${this.leaseSeconds}s)`;
    run.leaseId = "";
    run.leaseWorker = "";
    if (task.attempts < task.maxAttempts) {
      this.account(task);
      this.requeueAfter(task, 0, now);
      // Ready again since the lease ran out, not since the sweep (or a late call) noticed.
      run.readySince = run.leaseExpiresAt;
    } else {
      this.finish(task, "failed", now);
    }
  }

  private requeueAfter(task: TaskRecord, delayMs: number, now: number): void {
    task.status = "queued";
    this.queuedCount++;
    const run = attemptsOf(task);
    if (delayMs <= 0) {
      run.readySince = now;
      this.ready.push(task);
    } else {
      run.availableAt = now + delayMs;
      this.delayed.push(task);
    }
  }

  /** Exponential from the base, capped (at the base, when that is larger), with jitter. */
  private backoffMs(attempt: number): number {
    const cap = Math.max(this.retryBackoffMs, BACKOFF_CAP_MS);
    return Math.round(backoffDelayMs(this.retryBackoffMs, cap, attempt - 1, this.random));
  }

  private finish(task: TaskRecord, status: "succeeded" | "failed", now: number): void {
    // The task moves from the live part of the budget to the retained part.
    this.liveBytes -= task.charge;
    task.charge = 0;
    task.status = status;
    attemptsOf(task).finishedAt = now;
    // The API never shows the payload of a finished task, so it need not be kept.
    task.payload = undefined;
    this.account(task);
    if (status === "succeeded") this.succeededTotal++;
    else this.failedTotal++;
    this.observer.finished(status);
    this.finished.push(task);
    while (this.finished.length > this.resultMaxCount) {
      this.drop(this.finished.shift() as TaskRecord);
    }
    // Over the budget, older results make room for this one; this one is kept even when it
    // alone is too many (a completion cannot be refused without losing the work), and the
    // next submissions are refused until the queue drains.
    while (
      this.liveBytes + this.retainedBytes > this.memoryBudgetBytes &&
      this.finished.peek() !== task
    ) {
      this.drop(this.finished.shift() as TaskRecord);
    }
    const waiters = this.finishWaiters.get(task.id);
    if (waiters !== undefined) for (const waiter of [...waiters]) waiter.settle();
  }

  /** Forgets a finished task, and its idempotency key with it. */
  private drop(task: TaskRecord): void {
    this.retainedBytes -= task.charge;
    task.charge = 0;
    this.tasks.delete(task);
    if (task.idempotencyKey !== undefined && this.byKey.get(task.idempotencyKey) === task) {
      this.byKey.delete(task.idempotencyKey);
    }
  }
}

/** What a task counts against the memory budget: see `StoreStats.budgetUsedBytes`. */
function chargeOf(task: TaskRecord): number {
  const run = task.run;
  return (
    TASK_OVERHEAD_BYTES +
    keyBytes(task.idempotencyKey) +
    (task.payload === undefined ? 0 : task.payloadMemoryBytes) +
    (run === undefined ? 0 : run.resultMemoryBytes) +
    (run?.error === undefined ? 0 : HEAP_BYTES.string + 2 * run.error.length)
  );
}

function keyBytes(key: string | undefined): number {
  return key === undefined ? 0 : HEAP_BYTES.string + 2 * key.length;
}

/** The heap estimate of a value given to the store without one (no depth limit applies here). */
function heapOf(value: unknown): number {
  return measureHeap(value, Number.POSITIVE_INFINITY) as number;
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
  const run = task.run;
  if (run === undefined) return out;
  if (task.status === "succeeded") out.result = run.result;
  if (run.error !== undefined) out.error = run.error;
  if (run.startedAt !== 0) out.startedAt = run.startedAt;
  if (run.finishedAt !== 0) out.finishedAt = run.finishedAt;
  return out;
}
