/**
 * `npx tsx bench/store-ops.ts [--tasks N] [--singles N] [--rounds N]`: the Redis store's own Lua
 * scripts against the same operations done through BullMQ (manual processing: `getNextJob`,
 * `moveToCompleted`), with no HTTP, no master and no worker processes in between: what each way of
 * building the store costs Redis and its client per task. Both run in this process against a
 * fresh redis-server each (bench/lib/redis-server.ts, the settings of `npm run bench`), alternating
 * round by round; medians. See docs/redis-store.md. Writes bench/results/store-ops.json.
 *
 * Per task, both do what the master does for a task: submit it (batches of 1,000), lease it (up to
 * 8 per lease, 2 leasing loops at once, like 2 workers), complete it under its lease, and for a
 * single task also read its result back. Neither side's long-poll wake-ups (taskfleet's pub/sub,
 * BullMQ's blocking fetch and QueueEvents) are exercised: the loops ask without waiting.
 */
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { Queue, Worker } from "bullmq";
import { Redis } from "ioredis";
import { fromRepoRoot } from "../infra/service-builds.js";
import { RedisTaskStore } from "../services/master/src/store/redis-store.js";
import { cpuSeconds, stopAllChildren } from "./lib/processes.js";
import { type BenchRedis, redisDataBytes, startRedis } from "./lib/redis-server.js";
import { median, percentile, round } from "./lib/stats.js";

const BATCH = 1_000;
const LEASE_MAX = 8;
const LOOPS = 2;

/** The store operations one approach provides, as the master would call them. */
interface Approach {
  /** Queues `count` echo tasks, numbered from `offset`, in one call. */
  submit(count: number, offset: number): Promise<void>;
  /** Leases up to `max` tasks and completes each with its payload; resolves with how many. */
  leaseAndComplete(max: number): Promise<number>;
  /** Submits one task, leases it, completes it and reads its result back. */
  single(i: number): Promise<void>;
  close(): Promise<void>;
}

type ApproachName = "ownScripts" | "bullmq";

function ownScripts(redis: BenchRedis): Approach {
  const store = new RedisTaskStore({
    leaseSeconds: 30,
    resultTtlSeconds: 3600,
    resultMaxCount: 1_000_000,
    retryBackoffMs: 1000,
    sweepIntervalMs: 0,
    redis: { host: "127.0.0.1", port: redis.port },
  });
  const spec = (i: number) => ({
    type: "echo",
    payload: { i },
    maxAttempts: 3,
    timeoutSeconds: 300,
  });
  let loop = 0;
  const leaseAndComplete = async (worker: string, max: number) => {
    const leased = await store.lease(worker, max, 0);
    if (leased.length === 0) return 0;
    const outcome = await store.complete(
      worker,
      leased.map((task) => ({
        id: task.id,
        leaseId: task.leaseId,
        ok: true,
        result: task.payload,
      })),
    );
    if (outcome.rejected.length > 0) throw new Error(`rejected: ${JSON.stringify(outcome)}`);
    return leased.length;
  };
  return {
    async submit(count, offset) {
      await store.submit(Array.from({ length: count }, (_, i) => spec(offset + i)));
    },
    leaseAndComplete: (max) => leaseAndComplete(`w${(loop++ % LOOPS) + 1}`, max),
    async single(i) {
      const [submitted] = await store.submit([spec(i)]);
      if ((await leaseAndComplete("single", 1)) !== 1) throw new Error("nothing to lease");
      const view = await store.get(submitted.id);
      if ((view?.result as { i?: number } | undefined)?.i !== i) throw new Error("wrong result");
    },
    close: () => store.close(),
  };
}

function onBullmq(redis: BenchRedis): Approach {
  const connection = new Redis({ host: "127.0.0.1", port: redis.port, maxRetriesPerRequest: null });
  const queue = new Queue("ops", { connection });
  // No processor: the master would fetch jobs itself, one token per lease, for its HTTP workers.
  const worker = new Worker("ops", null, { connection, autorun: false });
  let tokens = 0;
  const leaseAndComplete = async (max: number) => {
    // One fetch script per job (BullMQ has no batch fetch), sent together so they pipeline.
    const fetched = await Promise.all(
      Array.from({ length: max }, async () => {
        const token = `lease-${++tokens}`;
        const job = await worker.getNextJob(token, { block: false });
        return job ? { job, token } : undefined;
      }),
    );
    const leased = fetched.filter((entry) => entry !== undefined);
    await Promise.all(leased.map(({ job, token }) => job.moveToCompleted(job.data, token, false)));
    return leased.length;
  };
  return {
    async submit(count, offset) {
      await queue.addBulk(
        Array.from({ length: count }, (_, i) => ({ name: "echo", data: { i: offset + i } })),
      );
    },
    leaseAndComplete,
    async single(i) {
      const added = await queue.add("echo", { i });
      if ((await leaseAndComplete(1)) !== 1) throw new Error("nothing to fetch");
      const job = await queue.getJob(added.id as string);
      if ((job?.returnvalue as { i?: number } | undefined)?.i !== i)
        throw new Error("wrong result");
    },
    async close() {
      await worker.close();
      await queue.close();
      connection.disconnect();
    },
  };
}

interface OpsResult {
  submitTasksPerSecond: number;
  leaseCompleteTasksPerSecond: number;
  /** Redis's CPU per task over submit, lease and complete, ms. */
  redisCpuMsPerTask: number;
  /** This process's CPU per task (the client library: what the master would spend), ms. */
  clientCpuMsPerTask: number;
  /** Redis `used_memory` per queued task (submitted, not yet leased), bytes. */
  redisBytesPerQueuedTask: number;
  singleP50Ms: number;
  singleP99Ms: number;
}

async function measure(
  make: (redis: BenchRedis) => Approach,
  tasks: number,
  singles: number,
): Promise<OpsResult> {
  const redis = await startRedis();
  const ops = make(redis);
  try {
    // Warm-up: code paths, script cache, connection.
    await ops.submit(BATCH, 0);
    while ((await ops.leaseAndComplete(LEASE_MAX)) > 0) {}
    for (let i = 0; i < 30; i++) await ops.single(i);

    const memoryBefore = await redisDataBytes(redis.connection);
    const redisBefore = await cpuSeconds(redis.child.pid);
    const clientBefore = process.cpuUsage();
    const submitStart = performance.now();
    for (let i = 0; i < tasks; i += BATCH) await ops.submit(Math.min(BATCH, tasks - i), BATCH + i);
    const submitSeconds = (performance.now() - submitStart) / 1000;
    const memoryAfter = await redisDataBytes(redis.connection);
    const leaseStart = performance.now();
    let done = 0;
    await Promise.all(
      Array.from({ length: LOOPS }, async () => {
        for (;;) {
          const n = await ops.leaseAndComplete(LEASE_MAX);
          if (n === 0) return;
          done += n;
        }
      }),
    );
    const leaseSeconds = (performance.now() - leaseStart) / 1000;
    if (done !== tasks) throw new Error(`${done} of ${tasks} tasks leased and completed`);
    const client = process.cpuUsage(clientBefore);
    const redisCpu = (await cpuSeconds(redis.child.pid)) - redisBefore;

    const samples: number[] = [];
    for (let i = 0; i < singles; i++) {
      const start = performance.now();
      await ops.single(1_000_000 + i);
      samples.push(performance.now() - start);
    }
    return {
      submitTasksPerSecond: tasks / submitSeconds,
      leaseCompleteTasksPerSecond: tasks / leaseSeconds,
      redisCpuMsPerTask: (redisCpu * 1000) / tasks,
      clientCpuMsPerTask: (client.user + client.system) / 1000 / tasks,
      redisBytesPerQueuedTask: (memoryAfter.used - memoryBefore.used) / tasks,
      singleP50Ms: percentile(samples, 50),
      singleP99Ms: percentile(samples, 99),
    };
  } finally {
    await ops.close();
    await redis.stop();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      tasks: { type: "string", default: "20000" },
      singles: { type: "string", default: "300" },
      rounds: { type: "string", default: "3" },
    },
  });
  const tasks = Number(values.tasks);
  const singles = Number(values.singles);
  const rounds = Number(values.rounds);
  for (const [name, value] of Object.entries({ tasks, singles, rounds })) {
    if (!Number.isInteger(value) || value < 1)
      throw new Error(`--${name} must be a positive integer`);
  }
  const approaches: Record<ApproachName, (redis: BenchRedis) => Approach> = {
    ownScripts,
    bullmq: onBullmq,
  };
  const results: Record<ApproachName, OpsResult[]> = { ownScripts: [], bullmq: [] };
  for (let r = 1; r <= rounds; r++) {
    for (const name of Object.keys(approaches) as ApproachName[]) {
      const result = await measure(approaches[name], tasks, singles);
      results[name].push(result);
      process.stderr.write(
        `round ${r}/${rounds} ${name.padEnd(10)} ${JSON.stringify(result, (_k, v) => (typeof v === "number" ? round(v, 3) : v))}\n`,
      );
    }
  }
  const keys = Object.keys(results.ownScripts[0]) as (keyof OpsResult)[];
  const rows = [
    "| per task | own Lua scripts | on BullMQ | own ÷ BullMQ |",
    "|---|---:|---:|---:|",
  ];
  const medians: Record<string, Record<ApproachName, number>> = {};
  for (const key of keys) {
    const own = median(results.ownScripts.map((x) => x[key]));
    const bull = median(results.bullmq.map((x) => x[key]));
    medians[key] = { ownScripts: round(own, 4), bullmq: round(bull, 4) };
    rows.push(`| ${key} | ${round(own, 3)} | ${round(bull, 3)} | ${(own / bull).toFixed(2)} |`);
  }
  const out = { startedAt: new Date().toISOString(), tasks, singles, rounds, results, medians };
  writeFileSync(fromRepoRoot("bench/results/store-ops.json"), `${JSON.stringify(out, null, 2)}\n`);
  process.stdout.write(`${rows.join("\n")}\n\nresults: bench/results/store-ops.json\n`);
}

try {
  await main();
} catch (error) {
  process.stderr.write(
    `store-ops failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
  );
  process.exitCode = 1;
} finally {
  await stopAllChildren();
}
