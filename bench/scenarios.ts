/**
 * The four measures, written once against {@link System} so both systems are driven by exactly the
 * same client-side code. Each run starts the system fresh (broker and workers) and stops it after.
 */
import { cpuSeconds, sleep } from "./lib/processes.js";
import { percentile } from "./lib/stats.js";
import type { Deployment, System, TaskSpec } from "./systems/system.js";

export interface BenchConfig {
  mode: "full" | "quick";
  /** Rounds of A B alternation; every figure is the median over rounds. */
  rounds: number;
  /** Worker processes for throughput and latency (the same for both systems). */
  workers: number;
  /** Tasks each worker process runs at once (the same for both systems). */
  concurrency: number;
  /** Tasks per submit request. */
  batchSize: number;
  throughputTasks: number;
  /** Single tasks, one after another, on an idle system. */
  idleSamples: number;
  /** Open-loop arrival rate for the latency-under-load figure, tasks per second. */
  rate: number;
  rateSeconds: number;
  /** How long the closed-loop single-task capacity run lasts. */
  capacitySeconds: number;
  /** `cpu` tasks per scale-out run, and their `n`. */
  cpuTasks: number;
  cpuN: number;
  /** Tasks queued (with no workers) for the memory figure. */
  memoryTasks: number;
  /** Directory for CPU profiles of taskfleet's master during throughput runs; none when unset. */
  profileDir?: string | undefined;
}

export interface ThroughputResult {
  tasks: number;
  seconds: number;
  tasksPerSecond: number;
  /**
   * CPU time (user + system) the broker used per task during the measured part, ms: the master,
   * the master and its redis-server, or BullMQ's redis-server.
   */
  brokerCpuMsPerTask: number;
  /** The share of `brokerCpuMsPerTask` that redis-server used, where the system has one. */
  redisCpuMsPerTask?: number;
  /** CPU time all worker processes together used per task, ms. */
  workersCpuMsPerTask: number;
}

export interface LatencyResult {
  idle: { samples: number; p50Ms: number; p99Ms: number; meanMs: number };
  underLoad: {
    targetRate: number;
    achievedRate: number;
    samples: number;
    p50Ms: number;
    p99Ms: number;
  };
  /** Single tasks per second that `clients` concurrent submit-and-wait loops get through. */
  capacity: {
    clients: number;
    seconds: number;
    tasksPerSecond: number;
    /** CPU time per task of the broker, the workers and the bench's own client, ms. */
    brokerCpuMsPerTask: number;
    workersCpuMsPerTask: number;
    clientCpuMsPerTask: number;
  };
}

export interface ScaleOutResult {
  tasks: number;
  n: number;
  oneWorkerSeconds: number;
  twoWorkersSeconds: number;
  speedup: number;
}

export interface MemoryResult {
  /** Tasks in each of the two fills. */
  tasks: number;
  baselineBytes: number;
  /** After the first fill. */
  halfBytes: number;
  /** After the second. */
  loadedBytes: number;
  /** What the second fill added, per task: the figure compared. */
  bytesPerTask: number;
  /**
   * What the first fill added, per task: also what the broker grows by once, to its working size
   * (taskfleet: V8's young generation, about 32 MB, grows with the first fill's allocations).
   */
  firstBytesPerTask: number;
  /** taskfleet: V8 heap in use after GC, per task; BullMQ: Redis RSS per task (second fill). */
  detailBytesPerTask: number;
}

export interface RoundResult {
  throughput: ThroughputResult;
  latency: LatencyResult;
  scaleOut: ScaleOutResult;
  memory: MemoryResult;
}

export type ScenarioName = keyof RoundResult;
export const scenarioNames: readonly ScenarioName[] = [
  "throughput",
  "latency",
  "scaleOut",
  "memory",
];

/** Tasks not counted, run first so each run measures warm code (JIT, connection pools). */
const WARMUP_TASKS = 1_000;
const WARMUP_SINGLE = 30;
/** Concurrent submit-and-wait loops for the single-task capacity figure. */
const CAPACITY_CLIENTS = 16;
/** How often the throughput run asks how many tasks have finished. */
const POLL_MS = 10;

function echoTasks(count: number, offset = 0): TaskSpec[] {
  return Array.from({ length: count }, (_, i) => ({ type: "echo", payload: { i: offset + i } }));
}

async function submitInBatches(
  deployment: Deployment,
  tasks: readonly TaskSpec[],
  batchSize: number,
): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < tasks.length; i += batchSize) {
    ids.push(...(await deployment.submitBatch(tasks.slice(i, i + batchSize))));
  }
  return ids;
}

/** Polls until `target` tasks have finished, for at most `timeoutMs`. */
async function waitFinished(
  deployment: Deployment,
  target: number,
  timeoutMs: number,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const done = await deployment.finished();
    if (done >= target) return;
    if (performance.now() > deadline) {
      throw new Error(`only ${done} of ${target} tasks finished within ${timeoutMs / 1000} s`);
    }
    await sleep(POLL_MS);
  }
}

interface CpuSample {
  broker: number;
  redis: number | undefined;
  workers: number;
}

async function cpuOf(deployment: Deployment): Promise<CpuSample> {
  const { pids } = deployment;
  const sum = async (list: readonly number[]) =>
    (await Promise.all(list.map((pid) => cpuSeconds(pid)))).reduce((a, b) => a + b, 0);
  return {
    broker: await sum(pids.broker),
    redis: pids.redis === undefined ? undefined : await cpuSeconds(pids.redis),
    workers: await sum(pids.workers),
  };
}

async function withDeployment<T>(
  system: System,
  options: Parameters<System["start"]>[0],
  body: (deployment: Deployment) => Promise<T>,
): Promise<T> {
  const deployment = await system.start(options);
  try {
    return await body(deployment);
  } finally {
    await deployment.stop();
  }
}

/**
 * Throughput: `throughputTasks` echo tasks submitted in batches while the workers run; the time
 * from the first submit until the last task has finished.
 */
export function throughput(system: System, config: BenchConfig): Promise<ThroughputResult> {
  const profileDir = system.name === "bullmq" ? undefined : config.profileDir;
  return withDeployment(
    system,
    { workers: config.workers, concurrency: config.concurrency, profileDir },
    async (deployment) => {
      await submitInBatches(deployment, echoTasks(WARMUP_TASKS), config.batchSize);
      await waitFinished(deployment, WARMUP_TASKS, 60_000);
      const tasks = echoTasks(config.throughputTasks, WARMUP_TASKS);
      const cpuBefore = await cpuOf(deployment);
      const start = performance.now();
      await submitInBatches(deployment, tasks, config.batchSize);
      await waitFinished(deployment, WARMUP_TASKS + tasks.length, 120_000);
      const seconds = (performance.now() - start) / 1000;
      const cpuAfter = await cpuOf(deployment);
      const perTask = (before: number, after: number) => ((after - before) * 1000) / tasks.length;
      return {
        tasks: tasks.length,
        seconds,
        tasksPerSecond: tasks.length / seconds,
        brokerCpuMsPerTask: perTask(cpuBefore.broker, cpuAfter.broker),
        ...(cpuBefore.redis === undefined || cpuAfter.redis === undefined
          ? {}
          : { redisCpuMsPerTask: perTask(cpuBefore.redis, cpuAfter.redis) }),
        workersCpuMsPerTask: perTask(cpuBefore.workers, cpuAfter.workers),
      };
    },
  );
}

/**
 * Latency, submit to result, as a client sees it: single tasks one after another on an idle
 * system, then an open-loop stream at a fixed rate (each task is sent at its scheduled time
 * whether or not earlier ones are done, so a slow system cannot slow the arrivals down).
 */
export function latency(system: System, config: BenchConfig): Promise<LatencyResult> {
  return withDeployment(
    system,
    { workers: config.workers, concurrency: config.concurrency },
    async (deployment) => {
      let next = 0;
      const nextTask = (): TaskSpec => ({ type: "echo", payload: { i: next++ } });
      for (let i = 0; i < WARMUP_SINGLE; i++) await deployment.runOne(nextTask());
      const idle: number[] = [];
      for (let i = 0; i < config.idleSamples; i++) {
        const start = performance.now();
        await deployment.runOne(nextTask());
        idle.push(performance.now() - start);
      }
      const loaded = await openLoop(deployment, config.rate, config.rateSeconds, nextTask);
      const capacity = await closedLoop(
        deployment,
        CAPACITY_CLIENTS,
        config.capacitySeconds,
        nextTask,
      );
      return {
        idle: {
          samples: idle.length,
          p50Ms: percentile(idle, 50),
          p99Ms: percentile(idle, 99),
          meanMs: idle.reduce((a, b) => a + b, 0) / idle.length,
        },
        underLoad: {
          targetRate: config.rate,
          achievedRate: loaded.achievedRate,
          samples: loaded.samples.length,
          p50Ms: percentile(loaded.samples, 50),
          p99Ms: percentile(loaded.samples, 99),
        },
        capacity,
      };
    },
  );
}

async function openLoop(
  deployment: Deployment,
  rate: number,
  seconds: number,
  nextTask: () => TaskSpec,
): Promise<{ samples: number[]; achievedRate: number }> {
  const count = Math.round(rate * seconds);
  const intervalMs = 1000 / rate;
  const samples: number[] = [];
  const inFlight: Promise<void>[] = [];
  let outstanding = 0;
  const start = performance.now();
  for (let i = 0; i < count; i++) {
    const wait = start + i * intervalMs - performance.now();
    if (wait > 0) await sleep(wait);
    // A system that falls this far behind is saturated: the figure would measure the backlog.
    if (outstanding > rate * 5) {
      throw new Error(
        `more than ${rate * 5} tasks outstanding at ${rate}/s: the system is saturated`,
      );
    }
    const sent = performance.now();
    outstanding++;
    inFlight.push(
      deployment.runOne(nextTask()).then(() => {
        outstanding--;
        samples.push(performance.now() - sent);
      }),
    );
  }
  const sentSeconds = (performance.now() - start) / 1000;
  await Promise.all(inFlight);
  return { samples, achievedRate: count / sentSeconds };
}

/**
 * As many single tasks as `clients` loops get through in `seconds`, each loop submitting one task
 * and waiting for its result before the next: what the system can sustain in the pattern the
 * latency figures use, and what each task costs in CPU there.
 */
async function closedLoop(
  deployment: Deployment,
  clients: number,
  seconds: number,
  nextTask: () => TaskSpec,
): Promise<LatencyResult["capacity"]> {
  let done = 0;
  const cpuBefore = await cpuOf(deployment);
  const clientBefore = process.cpuUsage();
  const start = performance.now();
  const end = start + seconds * 1000;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (performance.now() < end) {
        await deployment.runOne(nextTask());
        done++;
      }
    }),
  );
  const elapsed = (performance.now() - start) / 1000;
  const client = process.cpuUsage(clientBefore);
  const cpuAfter = await cpuOf(deployment);
  return {
    clients,
    seconds: elapsed,
    tasksPerSecond: done / elapsed,
    brokerCpuMsPerTask: ((cpuAfter.broker - cpuBefore.broker) * 1000) / done,
    workersCpuMsPerTask: ((cpuAfter.workers - cpuBefore.workers) * 1000) / done,
    clientCpuMsPerTask: (client.user + client.system) / 1000 / done,
  };
}

/**
 * Scale-out: the same batch of `cpu` tasks through one worker, then through two (concurrency 1
 * each), each on a fresh system; the time from submit to the last recorded finish.
 */
export async function scaleOut(system: System, config: BenchConfig): Promise<ScaleOutResult> {
  const run = (workers: number) =>
    withDeployment(system, { workers, concurrency: 1 }, async (deployment) => {
      const warmup: TaskSpec[] = Array.from({ length: 2 * workers }, () => ({
        type: "cpu",
        payload: { n: config.cpuN },
      }));
      await deployment.submitBatch(warmup);
      await waitFinished(deployment, warmup.length, 60_000);
      const tasks: TaskSpec[] = Array.from({ length: config.cpuTasks }, () => ({
        type: "cpu",
        payload: { n: config.cpuN },
      }));
      const start = Date.now();
      const ids = await deployment.submitBatch(tasks);
      // Polled slowly: the figure comes from the finish times the system recorded, and polling
      // must not take CPU from the two workers.
      await waitFinishedSlowly(deployment, warmup.length + tasks.length, 300_000);
      const finished = await deployment.finishTimes(ids, tasks);
      return (Math.max(...finished) - start) / 1000;
    });
  const oneWorkerSeconds = await run(1);
  const twoWorkersSeconds = await run(2);
  return {
    tasks: config.cpuTasks,
    n: config.cpuN,
    oneWorkerSeconds,
    twoWorkersSeconds,
    speedup: oneWorkerSeconds / twoWorkersSeconds,
  };
}

async function waitFinishedSlowly(deployment: Deployment, target: number, timeoutMs: number) {
  const deadline = performance.now() + timeoutMs;
  while ((await deployment.finished()) < target) {
    if (performance.now() > deadline)
      throw new Error(`scale-out did not finish in ${timeoutMs} ms`);
    await sleep(200);
  }
}

/**
 * Memory: with no workers, the broker's memory before and after each of two fills of
 * `memoryTasks` echo tasks. The figure is what the second fill adds per task, the slope: what
 * one more queued task costs. The first fill also pays what the broker grows by once whatever
 * the queue holds (taskfleet's young generation grows to about 32 MB under the submissions'
 * allocations, as it does under any load), which would count as per-task memory on one fill; it is
 * reported apart. A first batch is queued before the baseline so that code and buffers that any
 * first request allocates are not counted either.
 */
export function memory(system: System, config: BenchConfig): Promise<MemoryResult> {
  return withDeployment(
    system,
    { workers: 0, concurrency: 1, measureMemory: true },
    async (deployment) => {
      await submitInBatches(deployment, echoTasks(WARMUP_TASKS), config.batchSize);
      const before = await deployment.memory();
      const fill = (from: number) =>
        submitInBatches(deployment, echoTasks(config.memoryTasks, from), config.batchSize);
      await fill(WARMUP_TASKS);
      const half = await deployment.memory();
      await fill(WARMUP_TASKS + config.memoryTasks);
      const after = await deployment.memory();
      return {
        tasks: config.memoryTasks,
        baselineBytes: before.bytes,
        halfBytes: half.bytes,
        loadedBytes: after.bytes,
        bytesPerTask: (after.bytes - half.bytes) / config.memoryTasks,
        firstBytesPerTask: (half.bytes - before.bytes) / config.memoryTasks,
        detailBytesPerTask: (after.detailBytes - half.detailBytes) / config.memoryTasks,
      };
    },
  );
}

export const scenarios: {
  readonly [K in ScenarioName]: (system: System, config: BenchConfig) => Promise<RoundResult[K]>;
} = { throughput, latency, scaleOut, memory };
