/**
 * What the scenarios need from a system under test; taskfleet (on each of its stores) and BullMQ
 * each implement it.
 */

/** taskfleet with its memory store, taskfleet with its Redis store, BullMQ. */
export type SystemName = "taskfleet" | "taskfleetRedis" | "bullmq";

/** One task to run: `echo` returns its payload, `cpu` counts the primes below `payload.n`. */
export type TaskSpec =
  | { type: "echo"; payload: { i: number } }
  | { type: "cpu"; payload: { n: number } };

export interface MemorySample {
  /**
   * The figure the benchmark compares, where the tasks are kept: the master's RSS (memory store),
   * or Redis's `used_memory` less its append-only buffer (Redis store, BullMQ).
   */
  bytes: number;
  /**
   * Extra detail: the master's V8 heap in use after a full GC (memory store), the master's RSS
   * after a full GC (Redis store: what the master itself holds per task), or Redis's RSS (BullMQ).
   */
  detailBytes: number;
}

export interface StartOptions {
  /** Worker processes to start (0: none, for the memory scenario). */
  workers: number;
  /** Tasks each worker process runs at once. */
  concurrency: number;
  /** Directory for a CPU profile of the master (taskfleet only); none when unset. */
  profileDir?: string | undefined;
  /** Prepare the broker for {@link Deployment.memory} (taskfleet: a GC hook in the master). */
  measureMemory?: boolean;
}

/** A running system: its broker (taskfleet's master, or Redis) and its worker processes. */
export interface Deployment {
  /**
   * Submits tasks in one request (taskfleet: `POST /v1/tasks/batch`; BullMQ: `addBulk`) and
   * resolves with their ids.
   */
  submitBatch(tasks: readonly TaskSpec[]): Promise<string[]>;
  /**
   * When each task finished (epoch ms, as the system recorded it), checking each result; fails if
   * one has not finished.
   */
  finishTimes(ids: readonly string[], tasks: readonly TaskSpec[]): Promise<number[]>;
  /** How many tasks have finished; fails as soon as any task has failed. */
  finished(): Promise<number>;
  /** Submits one task and resolves when its result is back, checking the result. */
  runOne(task: TaskSpec): Promise<void>;
  /** The broker's memory, after a forced settle where the broker allows one. */
  memory(): Promise<MemorySample>;
  /**
   * Process ids: of the broker (everything between clients and workers: the master, the master and
   * its redis-server, or BullMQ's redis-server), of its redis-server where it has one, and of the
   * worker processes.
   */
  readonly pids: { broker: readonly number[]; redis?: number; workers: readonly number[] };
  /** Stops the workers and the broker; every child process has exited when it resolves. */
  stop(): Promise<void>;
}

export interface System {
  readonly name: SystemName;
  /** For tables and progress lines. */
  readonly label: string;
  /** Versions of what runs, for the results file. */
  versions(): Promise<Record<string, string>>;
  start(options: StartOptions): Promise<Deployment>;
}

/** Prime counts from the literature, to check `cpu` results against something independent. */
export const PRIMES_BELOW: Readonly<Record<number, number>> = {
  100000: 9_592,
  1000000: 78_498,
  10000000: 664_579,
};

/** Fails unless `result` is what `task` must return: `echo` its payload, `cpu` the prime count. */
export function checkResult(task: TaskSpec, result: unknown): void {
  const ok =
    task.type === "echo"
      ? typeof result === "object" &&
        result !== null &&
        (result as { i?: unknown }).i === task.payload.i
      : result === PRIMES_BELOW[task.payload.n];
  if (!ok)
    throw new Error(`${task.type} returned ${JSON.stringify(result)} for ${JSON.stringify(task)}`);
}
