import { limits } from "@taskfleet/protocol/limits";
import { Redis, type RedisOptions, ReplyError } from "ioredis";
import { HEAP_BYTES, measureHeap } from "../json-body.js";
import { TASK_OVERHEAD_BYTES, TRACKED_WORKERS_MAX } from "../limits.js";
import { newLeaseId, newTaskId } from "./ids.js";
import { type ScriptName, scripts, VIEW_FIELDS } from "./redis-scripts.js";
import {
  BACKOFF_CAP_MS,
  type CompleteOutcome,
  type Completion,
  type LeasedTask,
  type LeaseOptions,
  type LeaseRef,
  type NextLease,
  OverBudgetError,
  type RejectReason,
  type StoreObserver,
  type StoreOptions,
  type StoreStats,
  StoreUnavailableError,
  type SubmitOutcome,
  type SubmittedAndWaited,
  type TaskSpec,
  type TaskStatus,
  type TaskStore,
  type TaskView,
} from "./task-store.js";

/**
 * The options of every store, and where Redis is. Two differ in meaning from the memory store's:
 * - `memoryBudgetBytes` counts queued and running tasks only: retained results and errors live in
 *   Redis, not in the master's heap, count nothing and are never dropped early to make room
 *   (RESULT_TTL_SECONDS and RESULT_MAX_COUNT still bound them); `budgetUsedBytes` shows that part;
 * - `now`: every master sharing a Redis must have the same idea of the time (NTP), since a lease
 *   runs out by the clock of whoever looks.
 */
export interface RedisStoreOptions extends StoreOptions {
  /** Where Redis is; the store opens two connections (commands, and pub/sub) and closes them. */
  redis: RedisOptions;
  /** Put before every key and channel, so several fleets (or tests) can share one Redis. */
  prefix?: string;
  /** Told when the connection to Redis is lost and when it is back (a pino logger fits). */
  log?: ConnectionLog;
}

export interface ConnectionLog {
  warn(details: object, message: string): void;
  info(details: object, message: string): void;
}

/**
 * How the connections behave when Redis goes away, under what the caller passes: reconnecting
 * never stops (every half second at most), and a command sent meanwhile waits for two attempts at
 * most (about a second) before it fails, so that a request is answered 503 within a second or so
 * instead of hanging, while a blip shorter than that costs nothing.
 */
export const redisConnectionDefaults: RedisOptions = {
  connectTimeout: 2000,
  maxRetriesPerRequest: 1,
  retryStrategy: (times) => Math.min(50 * 2 ** (times - 1), 500),
};

/**
 * Redis answers that mean it cannot take the command now, not that the command is wrong: loading
 * its data after a restart, a replica being promoted, a full memory, a failed persistence, a
 * password it does not take.
 */
const UNAVAILABLE_REPLIES =
  /^(LOADING|BUSY|MASTERDOWN|READONLY|MISCONF|OOM|NOAUTH|WRONGPASS|NOPERM|CLUSTERDOWN|TRYAGAIN)\b/;

/** ioredis's own errors for a connection that is down or never came up. */
const CONNECTION_ERRORS =
  /^(Connection is closed|Stream isn't writeable|Reached the max retries per request limit)/;

/**
 * A connection error (ioredis's, or the socket's, which carry a code such as ECONNREFUSED), or a
 * reply that says Redis cannot serve now, as a StoreUnavailableError; anything else (a bug) as it
 * is, so that it is answered 500 and logged with its stack.
 */
function unavailable(error: unknown): unknown {
  if (!(error instanceof Error)) return error;
  const down =
    error instanceof ReplyError
      ? UNAVAILABLE_REPLIES.test(error.message)
      : CONNECTION_ERRORS.test(error.message) ||
        typeof (error as { code?: unknown }).code === "string";
  return down ? new StoreUnavailableError(error) : error;
}

/**
 * What every script answers: its own answer, the attempts that ended, the tasks that finished and
 * the views of those that were watched (redis-scripts.ts).
 */
type ScriptReply<T> = [T, (string | number)[], string[], string[]];

/** A task's id and its `VIEW_FIELDS`, as Redis holds them (null, or false from Lua, where absent). */
type ViewFields = (string | null | false)[];

interface LeaseWaiter {
  workerId: string;
  max: number;
  slots: number;
  /** A lease script is running for this waiter: its answer decides, not the timer. */
  inFlight: boolean;
  /** Its time ran out (or the store drained) while a script ran for it. */
  lapsed: boolean;
  /** Its client went away while a script ran for it: what the script leased goes back. */
  aborted: boolean;
  finish: (tasks: LeasedTask[]) => void;
}

interface FinishWaiter {
  /** Answers the wait: with the finished task, or as the task stands when given none. */
  settle: (view?: TaskView) => void;
}

/** A wait for one task's finish, filed under the task's id (`RedisTaskStore.listenForFinish`). */
interface FinishListener {
  /** The task when finished, or as it stands when the wait ends otherwise. */
  done: Promise<TaskView | undefined>;
  /** Files the wait under another id (a submission's id is drawn again after a collision). */
  moveTo(id: string): void;
  /** Ends the wait with `task` (a read found it finished or gone). */
  endWith(task: TaskView | undefined): void;
  /** Ends the wait with the task as it stands (read now). */
  endAsItStands(): void;
  /** Ends the wait for nobody: `done` is not read, and what it would have read cannot fail it. */
  abandon(): void;
}

const noopObserver: StoreObserver = {
  submitted() {},
  attemptEnded() {},
  finished() {},
};

/** How much of each kind of work one sweep script does before it lets other commands run. */
const SWEEP_BATCH = 1000;

/**
 * Keeps the tasks in Redis, so they outlive the master and several masters can share them. Each
 * operation is one Lua script (redis-scripts.ts), leasing a whole batch in one; any master may
 * sweep, and a lease runs out exactly once. Long polls span masters through pub/sub: a script that
 * queues tasks publishes on `<prefix>queued`, and every store hands them to the polls it holds,
 * oldest first; one that finishes a task somebody waits for publishes the task on
 * `<prefix>finished`.
 */
export class RedisTaskStore implements TaskStore {
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
  private readonly prefix: string;

  private readonly redis: Redis;
  private readonly subscriber: Redis;
  /** Settles once this store hears both channels; no wait starts before it. */
  private subscribed: Promise<void>;
  private readonly sweepTimer: NodeJS.Timeout | undefined;
  private readonly leaseWaiters = new Set<LeaseWaiter>();
  private readonly finishWaiters = new Map<string, Set<FinishWaiter>>();

  /** Counts `queued` messages, so a lease that found nothing can tell one came in meanwhile. */
  private wakes = 0;
  private handingOff = false;
  private wakeAgain = false;
  private sweeping = false;
  private isDraining = false;

  constructor(options: RedisStoreOptions) {
    this.leaseSeconds = options.leaseSeconds;
    this.leaseMs = options.leaseSeconds * 1000;
    this.resultTtlMs = options.resultTtlSeconds * 1000;
    this.resultMaxCount = options.resultMaxCount;
    this.retryBackoffMs = options.retryBackoffMs;
    this.activeWorkerWindowMs = options.activeWorkerWindowMs ?? 60_000;
    this.memoryBudgetBytes = options.memoryBudgetBytes ?? -1;
    this.leaseMaxBytes = options.leaseMaxBytes ?? -1;
    this.observer = options.observer ?? noopObserver;
    this.now = options.now ?? Date.now;
    this.random = options.random ?? Math.random;
    this.prefix = options.prefix ?? "taskfleet:";

    const redisOptions = { ...redisConnectionDefaults, ...options.redis };
    this.redis = new Redis(redisOptions);
    for (const [name, lua] of Object.entries(scripts)) {
      this.redis.defineCommand(name, { numberOfKeys: 0, lua });
    }
    this.subscriber = new Redis(redisOptions);
    watchConnection(this.redis, "commands", options.log);
    watchConnection(this.subscriber, "pub/sub", options.log);
    const queued = `${this.prefix}queued`;
    const finished = `${this.prefix}finished`;
    this.subscriber.on("message", (channel: string, message: string) => {
      if (channel === queued) this.wake();
      else if (channel === finished) this.finishedMessage(message);
    });
    const channels = [queued, finished];
    this.subscribed = this.subscribe(channels);
    // What was published while the subscriber was away is lost. Once it is back, the waiting
    // clients' tasks are read: a finish missed meanwhile costs the reconnect, not the rest of the
    // wait's `waitSeconds`. The read waits for a SUBSCRIBE of its own (sent before ioredis sends
    // its automatic one), so that nothing finishes unseen between the read and the subscription.
    // (A lost `queued` message is the sweep's.)
    let connectedBefore = false;
    this.subscriber.on("ready", () => {
      if (!connectedBefore) {
        connectedBefore = true;
        return;
      }
      this.subscribe(channels)
        .then(() => this.readWaitedTasks())
        .catch(() => {});
    });

    const sweepIntervalMs = options.sweepIntervalMs ?? 250;
    if (sweepIntervalMs > 0) {
      this.sweepTimer = setInterval(() => {
        // A failed sweep (Redis away) is tried again at the next tick.
        this.sweep().catch(() => {});
      }, sweepIntervalMs);
      this.sweepTimer.unref();
    }
  }

  /** The tasks live in Redis, shared by every master on it. */
  readonly shared = true;

  get draining(): boolean {
    return this.isDraining;
  }

  submit(specs: readonly TaskSpec[]): Promise<SubmitOutcome[]> {
    return this.submitTasks(specs);
  }

  /**
   * Listens for the finish under the id the submission will have before its script runs, and
   * the script marks the new task watched: one script where `submit` and `waitForFinish` take two
   * (the second, `tfWatch`, only for a task an idempotency key names, which exists already).
   */
  async submitAndWait(
    spec: TaskSpec,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<SubmittedAndWaited> {
    let listener: FinishListener | undefined;
    let listen: ((id: string) => void) | undefined;
    if (timeoutMs > 0 && !this.isDraining && !signal?.aborted) {
      await this.subscribed;
      listen = (id) => {
        if (listener === undefined) listener = this.listenForFinish(id, timeoutMs, signal);
        else listener.moveTo(id);
      };
    }
    let outcome: SubmitOutcome;
    try {
      [outcome] = (await this.submitTasks([spec], listen)) as [SubmitOutcome];
    } catch (error) {
      listener?.abandon();
      throw error;
    }
    if (outcome.created && listener !== undefined) return { outcome, task: await listener.done };
    // No wait (as `waitForFinish` then reads the task), or a key that named a task there before.
    listener?.abandon();
    return { outcome, task: await this.waitForFinish(outcome.id, timeoutMs, signal) };
  }

  /**
   * Submits `specs`; with `watch`, marks the tasks it creates watched, and calls `watch` with the
   * first task's id before each try of the script (each try draws fresh ids).
   */
  private async submitTasks(
    specs: readonly TaskSpec[],
    watch?: (id: string) => void,
  ): Promise<SubmitOutcome[]> {
    // A poll waiting here takes what it can of the batch in the same script.
    const waiter = this.isDraining ? undefined : this.idleWaiter();
    const leaseMax = waiter === undefined ? 0 : Math.min(waiter.max, specs.length);
    const args: (string | number)[] = [
      this.memoryBudgetBytes,
      waiter?.workerId ?? "",
      leaseMax,
      this.leaseMaxBytes,
      TRACKED_WORKERS_MAX,
      waiter?.slots ?? 0,
      watch === undefined ? 0 : 1,
    ];
    for (let i = 0; i < leaseMax; i++) args.push(newLeaseId());
    const first = args.length;
    for (const spec of specs) {
      const payload = JSON.stringify(spec.payload === undefined ? null : spec.payload);
      const key = spec.idempotencyKey;
      const memoryBytes =
        spec.payloadMemoryBytes ?? (measureHeap(spec.payload, Number.POSITIVE_INFINITY) as number);
      args.push(
        "",
        spec.type,
        payload,
        key ?? "",
        spec.maxAttempts,
        spec.timeoutSeconds,
        spec.payloadBytes ?? Buffer.byteLength(payload),
        TASK_OVERHEAD_BYTES + keyBytes(key) + memoryBytes,
      );
    }
    if (waiter !== undefined) waiter.inFlight = true;
    let leased: LeasedTask[] = [];
    try {
      for (;;) {
        // Fresh ids on every try: the script refuses the batch if one is taken already.
        for (let i = first; i < args.length; i += 8) args[i] = newTaskId();
        watch?.(args[first] as string);
        const answer = await this.run<[string, ...(string | number)[]]>("tfSubmit", args);
        if (answer[0] === "collision") continue;
        if (answer[0] === "over") {
          throw new OverBudgetError(this.memoryBudgetBytes, Number(answer[1]), Number(answer[2]));
        }
        const created = Number(answer[1]);
        leased = leasedTasks(answer[2] as unknown as (string | number)[]);
        const outcomes: SubmitOutcome[] = new Array(specs.length);
        for (let i = 0; i < specs.length; i++) {
          outcomes[i] = {
            id: String(answer[3 + 3 * i]),
            status: answer[4 + 3 * i] as TaskStatus,
            created: answer[5 + 3 * i] === 1,
          };
        }
        if (created > 0) this.observer.submitted(created);
        // This master's other polls need not wait for the `queued` message to come back.
        if (created > leased.length) this.wake();
        return outcomes;
      }
    } finally {
      if (waiter !== undefined) {
        waiter.inFlight = false;
        await this.handTo(waiter, leased);
      }
    }
  }

  async get(id: string): Promise<TaskView | undefined> {
    const fields = await this.redis
      .hmget(this.taskKey(id), ...VIEW_FIELDS)
      .catch((failure: unknown) => {
        throw unavailable(failure);
      });
    return viewOf([id, ...fields]);
  }

  async waitForFinish(
    id: string,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<TaskView | undefined> {
    if (timeoutMs <= 0 || this.isDraining || signal?.aborted) return this.get(id);
    await this.subscribed;
    const listener = this.listenForFinish(id, timeoutMs, signal);
    // Read only now that the waiter listens, so a finish in between is not missed; the read
    // marks the task watched, so that its finish is published from now on.
    this.watch(id).then((task) => {
      if (task === undefined || task.status === "succeeded" || task.status === "failed") {
        listener.endWith(task);
      }
    }, listener.endAsItStands);
    return listener.done;
  }

  /**
   * A wait for task `id` to finish, filed where a `finished` message or a script's view settles
   * it; it ends with the task as it stands when `timeoutMs` passes, `signal` aborts or the store
   * drains.
   */
  private listenForFinish(id: string, timeoutMs: number, signal?: AbortSignal): FinishListener {
    let filedAs = id;
    let ended = false;
    let resolveDone: (task: TaskView | undefined) => void = () => {};
    let rejectDone: (error: unknown) => void = () => {};
    const done = new Promise<TaskView | undefined>((resolve, reject) => {
      resolveDone = resolve;
      rejectDone = reject;
    });
    const file = () => {
      let waiters = this.finishWaiters.get(filedAs);
      if (waiters === undefined) {
        waiters = new Set();
        this.finishWaiters.set(filedAs, waiters);
      }
      waiters.add(waiter);
    };
    const unfile = () => {
      const waiters = this.finishWaiters.get(filedAs);
      waiters?.delete(waiter);
      if (waiters?.size === 0) this.finishWaiters.delete(filedAs);
    };
    const end = () => {
      if (ended) return false;
      ended = true;
      clearTimeout(timer);
      signal?.removeEventListener("abort", endAsItStands);
      unfile();
      return true;
    };
    const endWith = (task: TaskView | undefined) => {
      if (end()) resolveDone(task);
    };
    const endAsItStands = () => {
      if (end()) this.get(filedAs).then(resolveDone, rejectDone);
    };
    const waiter: FinishWaiter = {
      settle: (view) => (view === undefined ? endAsItStands() : endWith(view)),
    };
    const timer = setTimeout(endAsItStands, timeoutMs);
    signal?.addEventListener("abort", endAsItStands, { once: true });
    file();
    return {
      done,
      moveTo: (next) => {
        if (ended) return;
        unfile();
        filedAs = next;
        file();
      },
      endWith,
      endAsItStands,
      abandon: () => {
        done.catch(() => {});
        endWith(undefined);
      },
    };
  }

  async lease(
    workerId: string,
    max: number,
    waitMs: number,
    options: LeaseOptions = {},
  ): Promise<LeasedTask[]> {
    const { signal } = options;
    const slots = options.slots ?? max;
    if (this.isDraining) return [];
    if (waitMs > 0) await this.subscribed;
    const deadline = performance.now() + waitMs;
    for (;;) {
      const wakes = this.wakes;
      const tasks = await this.take(workerId, max, slots);
      if (tasks.length > 0 || waitMs <= 0 || this.isDraining) return tasks;
      if (signal?.aborted) return tasks;
      // Tasks queued while the script ran may have been announced before this poll listens.
      if (wakes === this.wakes || performance.now() >= deadline) break;
    }
    const remainingMs = deadline - performance.now();
    if (remainingMs <= 0) return [];
    return new Promise((resolve) => {
      const timer = setTimeout(() => lapse(false), remainingMs);
      const onAbort = () => lapse(true);
      const waiter: LeaseWaiter = {
        workerId,
        max,
        slots,
        inFlight: false,
        lapsed: false,
        aborted: false,
        finish: (leased) => {
          clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
          this.leaseWaiters.delete(waiter);
          resolve(leased);
        },
      };
      const lapse = (aborted: boolean) => {
        if (!waiter.inFlight) return waiter.finish([]);
        waiter.lapsed = true;
        waiter.aborted ||= aborted;
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.leaseWaiters.add(waiter);
    });
  }

  async renew(
    workerId: string,
    leases: readonly LeaseRef[],
  ): Promise<{ renewed: string[]; lost: string[] }> {
    const answer = await this.run<number[]>("tfRenew", [
      workerId,
      TRACKED_WORKERS_MAX,
      ...refArgs(leases),
    ]);
    const renewed: string[] = [];
    const lost: string[] = [];
    leases.forEach((ref, i) => {
      (answer[i] === 1 ? renewed : lost).push(ref.id);
    });
    return { renewed, lost };
  }

  async complete(
    workerId: string,
    results: readonly Completion[],
    next?: NextLease,
  ): Promise<CompleteOutcome> {
    const nextMax = next === undefined || this.isDraining ? 0 : next.max;
    const args: (string | number)[] = [
      workerId,
      TRACKED_WORKERS_MAX,
      this.retryBackoffMs,
      BACKOFF_CAP_MS,
      nextMax,
      this.leaseMaxBytes,
      next?.slots ?? nextMax,
    ];
    for (let i = 0; i < nextMax; i++) args.push(newLeaseId());
    for (const completion of results) {
      if (completion.ok) {
        const result = completion.result === undefined ? null : completion.result;
        args.push(completion.id, completion.leaseId, 1, JSON.stringify(result), 0, 0);
      } else {
        const error =
          completion.error.length > limits.errorMaxChars
            ? completion.error.slice(0, limits.errorMaxChars)
            : completion.error;
        const retryable = completion.retryable ? 1 : 0;
        args.push(completion.id, completion.leaseId, 0, error, retryable, this.random());
      }
    }
    const [verdicts, leased] = await this.run<[string[], (string | number)[]]>("tfComplete", args);
    const outcome: CompleteOutcome = { accepted: [], rejected: [] };
    results.forEach((completion, i) => {
      const verdict = verdicts[i];
      if (verdict === "accepted") outcome.accepted.push(completion.id);
      else outcome.rejected.push({ id: completion.id, reason: verdict as RejectReason });
    });
    if (next !== undefined) outcome.leased = leasedTasks(leased);
    return outcome;
  }

  async release(workerId: string, leases: readonly LeaseRef[]): Promise<{ released: string[] }> {
    const released = await this.run<string[]>("tfRelease", [
      workerId,
      TRACKED_WORKERS_MAX,
      ...refArgs(leases),
    ]);
    return { released };
  }

  async failUnsent(workerId: string, leases: readonly LeaseRef[], error: string): Promise<void> {
    await this.run("tfFailUnsent", [workerId, error, ...refArgs(leases)]);
  }

  async stats(): Promise<StoreStats> {
    const [
      ready,
      delayed,
      running,
      succeeded,
      failed,
      retained,
      activeWorkers,
      live,
      workerSlots,
      waitedMs,
    ] = await this.run<number[]>("tfStats", [this.activeWorkerWindowMs]);
    return {
      queued: Number(ready) + Number(delayed),
      delayed: Number(delayed),
      running: Number(running),
      succeeded: Number(succeeded),
      failed: Number(failed),
      retained: Number(retained),
      activeWorkers: Number(activeWorkers),
      budgetUsedBytes: Number(live),
      workerSlots: Number(workerSlots),
      oldestQueuedSeconds: Number(waitedMs) / 1000,
    };
  }

  /**
   * Expires leases that have run out, queues retries that are due, drops finished tasks past
   * their time and forgets workers not seen for a while. Any number of masters may sweep the same
   * Redis at once: each piece of work is done by whichever script gets to it first. Runs on a
   * timer; tests call it directly.
   */
  async sweep(): Promise<void> {
    if (this.sweeping) return;
    this.sweeping = true;
    try {
      let more = 1;
      let ready = 0;
      while (more === 1) {
        [more, ready] = await this.run<[number, number]>("tfSweep", [
          this.resultTtlMs,
          this.activeWorkerWindowMs,
          SWEEP_BATCH,
        ]);
      }
      // A `queued` message lost to a reconnect would leave polls waiting while tasks are queued.
      if (ready > 0) this.wake();
    } finally {
      this.sweeping = false;
    }
  }

  drain(): void {
    this.isDraining = true;
    for (const waiter of this.leaseWaiters) {
      if (waiter.inFlight) waiter.lapsed = true;
      else waiter.finish([]);
    }
    for (const waiters of [...this.finishWaiters.values()]) {
      for (const waiter of [...waiters]) waiter.settle();
    }
  }

  async close(): Promise<void> {
    this.drain();
    if (this.sweepTimer !== undefined) clearInterval(this.sweepTimer);
    await Promise.allSettled([this.redis.quit(), this.subscriber.quit()]);
    // A connection that is down (or refused its password) cannot quit: stop its reconnecting.
    this.redis.disconnect();
    this.subscriber.disconnect();
  }

  /**
   * Subscribes to the channels. ioredis subscribes again by itself after a reconnect, but only to
   * channels whose subscription succeeded: one that failed (Redis away when the master started)
   * is tried again once the connection is back, and meanwhile a wait fails as the store being
   * unavailable (a failed subscription surfaces there, not as an unhandled error).
   */
  private subscribe(channels: string[]): Promise<void> {
    const attempt = this.subscriber.subscribe(...channels).then(
      () => undefined,
      (error: unknown) => {
        this.subscriber.once("ready", () => {
          this.subscribed = this.subscribe(channels);
        });
        throw unavailable(error);
      },
    );
    attempt.catch(() => {});
    return attempt;
  }

  private taskKey(id: string): string {
    return `${this.prefix}t:${id}`;
  }

  /** Runs a script with the common leading arguments and tells the observer what it ended. */
  private async run<T>(name: ScriptName, args: readonly (string | number)[]): Promise<T> {
    const now = this.now();
    const command = (this.redis as unknown as Record<ScriptName, ScriptCall>)[name];
    let reply: ScriptReply<T>;
    try {
      reply = (await command.call(
        this.redis,
        this.prefix,
        now,
        this.leaseMs,
        String(this.leaseSeconds),
        this.resultMaxCount,
        ...args,
      )) as ScriptReply<T>;
    } catch (error) {
      throw unavailable(error);
    }
    const [answer, ended, finished, views] = reply;
    for (let i = 0; i < ended.length; i += 3) {
      const outcome = ended[i + 1] as "succeeded" | "failed" | "expired";
      this.observer.attemptEnded(outcome, (now - Number(ended[i + 2])) / 1000);
    }
    for (const status of finished) this.observer.finished(status as "succeeded" | "failed");
    // This master's own waiters need not wait for the `finished` message to come back.
    for (const view of views) this.finishedMessage(view);
    return answer;
  }

  /**
   * Answers the waits whose tasks have finished by now, whatever was published. A task not there
   * is left to its wait's own end: a submit-and-wait listens before its task is created.
   */
  private async readWaitedTasks(): Promise<void> {
    const ids = [...this.finishWaiters.keys()];
    const tasks = await Promise.all(ids.map((id) => this.get(id).catch(() => undefined)));
    for (const task of tasks) {
      if (task?.status === "succeeded" || task?.status === "failed")
        this.settleWaits(task.id, task);
    }
  }

  /** Reads the task and marks it watched when unfinished (the `tfWatch` script). */
  private async watch(id: string): Promise<TaskView | undefined> {
    return viewOf(await this.run<ViewFields | null>("tfWatch", [id]));
  }

  private async take(workerId: string, max: number, slots: number): Promise<LeasedTask[]> {
    const leaseIds = Array.from({ length: max }, newLeaseId);
    const answer = await this.run<(string | number)[]>("tfLease", [
      workerId,
      max,
      this.leaseMaxBytes,
      TRACKED_WORKERS_MAX,
      slots,
      ...leaseIds,
    ]);
    return leasedTasks(answer);
  }

  /** Tasks were queued somewhere: hands them to the polls waiting here, oldest first. */
  private wake(): void {
    this.wakes++;
    if (this.leaseWaiters.size === 0 || this.isDraining) return;
    if (this.handingOff) {
      this.wakeAgain = true;
      return;
    }
    this.handOff().catch(() => {});
  }

  private async handOff(): Promise<void> {
    this.handingOff = true;
    try {
      do {
        this.wakeAgain = false;
        for (const waiter of this.leaseWaiters) {
          if (this.isDraining) break;
          // A submission is leasing for it already.
          if (waiter.inFlight) continue;
          waiter.inFlight = true;
          let tasks: LeasedTask[];
          try {
            tasks = await this.take(waiter.workerId, waiter.max, waiter.slots);
          } finally {
            waiter.inFlight = false;
          }
          await this.handTo(waiter, tasks);
          if (tasks.length === 0) break;
        }
      } while (this.wakeAgain && this.leaseWaiters.size > 0 && !this.isDraining);
    } finally {
      this.handingOff = false;
      for (const waiter of this.leaseWaiters) {
        if (waiter.lapsed && !waiter.inFlight) waiter.finish([]);
      }
    }
  }

  /** The oldest poll waiting here that no script is leasing for, if any. */
  private idleWaiter(): LeaseWaiter | undefined {
    for (const waiter of this.leaseWaiters) if (!waiter.inFlight) return waiter;
    return undefined;
  }

  /**
   * Answers a poll with what a script just leased for it; a poll whose time ran out meanwhile is
   * answered too, and one whose client went away gives what it leased back at once (or, with
   * Redis away, when those leases run out). Never fails: a submission it follows has succeeded.
   */
  private async handTo(waiter: LeaseWaiter, tasks: LeasedTask[]): Promise<void> {
    if (waiter.aborted) {
      if (tasks.length > 0) await this.release(waiter.workerId, tasks).catch(() => {});
      waiter.finish([]);
    } else if (tasks.length > 0 || waiter.lapsed) {
      waiter.finish(tasks);
    }
  }

  /**
   * A watched task finished (the message, or a view in a script's answer): its waiters here are
   * answered with it. A message of a bare id comes from a master from before views were sent
   * (during a rolling update): its waiters read the task.
   */
  private finishedMessage(message: string): void {
    let fields: ViewFields = [message];
    if (message.startsWith("[")) {
      try {
        fields = JSON.parse(message) as ViewFields;
      } catch {
        // Not one of ours (anything with access to Redis can publish): no waiter has that id.
      }
    }
    if (!this.finishWaiters.has(fields[0] as string)) return;
    this.settleWaits(fields[0] as string, fields.length > 1 ? viewOf(fields) : undefined);
  }

  /** Answers the waits for task `id`: with the finished task, or as it stands when not given. */
  private settleWaits(id: string, task: TaskView | undefined): void {
    for (const waiter of [...(this.finishWaiters.get(id) ?? [])]) waiter.settle(task);
  }
}

/** The task a view array describes (a script's or HMGET's `ViewFields`); none without a type. */
function viewOf(fields: ViewFields | null): TaskView | undefined {
  if (fields === null) return undefined;
  const [id, type, status, attempts, result, error, createdAt, startedAt, finishedAt] = fields;
  if (typeof id !== "string" || typeof type !== "string") return undefined;
  const out: TaskView = {
    id,
    type,
    status: status as TaskStatus,
    attempts: Number(attempts),
    createdAt: Number(createdAt),
  };
  if (status === "succeeded") out.result = typeof result === "string" ? JSON.parse(result) : null;
  if (typeof error === "string") out.error = error;
  if (startedAt && startedAt !== "0") out.startedAt = Number(startedAt);
  if (finishedAt && finishedAt !== "0") out.finishedAt = Number(finishedAt);
  return out;
}

/** The tasks a lease script answers, 6 values each (`leaseTasks` in redis-scripts.ts). */
function leasedTasks(answer: readonly (string | number)[]): LeasedTask[] {
  const tasks: LeasedTask[] = new Array(answer.length / 6);
  for (let i = 0, n = 0; i < answer.length; i += 6, n++) {
    tasks[n] = {
      id: String(answer[i]),
      leaseId: String(answer[i + 1]),
      type: String(answer[i + 2]),
      payload: JSON.parse(String(answer[i + 3])),
      attempt: Number(answer[i + 4]),
      timeoutSeconds: Number(answer[i + 5]),
    };
  }
  return tasks;
}

type ScriptCall = (...args: (string | number)[]) => Promise<unknown>;

/**
 * Logs a connection's trouble once per outage (ioredis reports every failed reconnect) and its
 * return; with no log, errors are still listened for, so that ioredis does not print them itself.
 */
function watchConnection(redis: Redis, role: string, log: ConnectionLog | undefined): void {
  let lost: string | undefined;
  redis.on("error", (error: Error) => {
    if (lost === error.message) return;
    lost = error.message;
    log?.warn({ role, err: error.message }, "Redis connection failed; reconnecting");
  });
  redis.on("ready", () => {
    if (lost === undefined) return;
    lost = undefined;
    log?.info({ role }, "Redis connection back");
  });
}

function refArgs(leases: readonly LeaseRef[]): string[] {
  const args: string[] = new Array(leases.length * 2);
  leases.forEach((ref, i) => {
    args[2 * i] = ref.id;
    args[2 * i + 1] = ref.leaseId;
  });
  return args;
}

/** What an idempotency key counts against the budget, as the memory store counts it. */
function keyBytes(key: string | undefined): number {
  return key === undefined ? 0 : HEAP_BYTES.string + 2 * key.length;
}
