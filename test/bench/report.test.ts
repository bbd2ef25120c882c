import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  figures,
  markdownTable,
  measuredFigures,
  medians,
  type Round,
  systemsIn,
} from "../../bench/report.js";
import type { RoundResult } from "../../bench/scenarios.js";

function round(tasksPerSecond: number, p50: number, speedup: number, bytes: number): RoundResult {
  return {
    throughput: {
      tasks: 20_000,
      seconds: 20_000 / tasksPerSecond,
      tasksPerSecond,
      brokerCpuMsPerTask: 1_000 / tasksPerSecond,
      workersCpuMsPerTask: 500 / tasksPerSecond,
    },
    latency: {
      idle: { samples: 300, p50Ms: p50, p99Ms: p50 * 3, meanMs: p50 * 1.2 },
      underLoad: {
        targetRate: 200,
        achievedRate: 199.8,
        samples: 1000,
        p50Ms: p50,
        p99Ms: p50 * 4,
      },
      capacity: {
        clients: 16,
        seconds: 3,
        tasksPerSecond: tasksPerSecond / 10,
        brokerCpuMsPerTask: 0.5,
        workersCpuMsPerTask: 0.4,
        clientCpuMsPerTask: 0.3,
      },
    },
    scaleOut: {
      tasks: 100,
      n: 10_000_000,
      oneWorkerSeconds: 3,
      twoWorkersSeconds: 3 / speedup,
      speedup,
    },
    memory: {
      tasks: 100_000,
      baselineBytes: 1e6,
      halfBytes: 1e6 + 2 * bytes * 1e5,
      loadedBytes: 1e6 + 3 * bytes * 1e5,
      bytesPerTask: bytes,
      firstBytesPerTask: 2 * bytes,
      detailBytesPerTask: bytes / 2,
    },
  };
}

/** A run from before taskfleet's Redis store: two systems per round. */
const twoSystemRounds: Round[] = [
  { taskfleet: round(9_000, 1.5, 1.9, 400), bullmq: round(6_000, 2.5, 1.7, 220) },
  { taskfleet: round(1_000, 9.0, 1.0, 900), bullmq: round(5_000, 2.0, 1.8, 230) },
  { taskfleet: round(8_000, 1.2, 1.95, 410), bullmq: round(5_500, 3.0, 1.75, 210) },
];

function onRedis(result: RoundResult, redisCpuMsPerTask: number): RoundResult {
  return { ...result, throughput: { ...result.throughput, redisCpuMsPerTask } };
}

const rounds: Round[] = [
  {
    taskfleet: round(9_000, 1.5, 1.9, 400),
    taskfleetRedis: onRedis(round(4_000, 3.5, 1.8, 520), 0.08),
    bullmq: onRedis(round(6_000, 2.5, 1.7, 220), 0.07),
  },
  {
    taskfleet: round(1_000, 9.0, 1.0, 900),
    taskfleetRedis: onRedis(round(7_000, 3.0, 1.7, 510), 0.06),
    bullmq: onRedis(round(5_000, 2.0, 1.8, 230), 0.06),
  },
  {
    taskfleet: round(8_000, 1.2, 1.95, 410),
    taskfleetRedis: onRedis(round(5_000, 4.0, 1.9, 530), 0.09),
    bullmq: onRedis(round(5_500, 3.0, 1.75, 210), 0.08),
  },
];
const list = figures({ rate: 200 });

/** The table's row for a figure, its cells trimmed. */
function row(table: string, label: string): string[] {
  const line = table.split("\n").find((l) => l.startsWith(`| ${label} |`));
  assert.ok(line, `no row "${label}" in\n${table}`);
  return line
    .split("|")
    .slice(1, -1)
    .map((cell) => cell.trim());
}

describe("medians", () => {
  it("takes each figure's median over rounds, so one bad round does not move it", () => {
    const med = medians(rounds, list);
    assert.deepEqual(med.throughput, { taskfleet: 8_000, taskfleetRedis: 5_000, bullmq: 5_500 });
    assert.deepEqual(med.latencyIdleP50, { taskfleet: 1.5, taskfleetRedis: 3.5, bullmq: 2.5 });
    assert.deepEqual(med.memoryPerTask, { taskfleet: 410, taskfleetRedis: 520, bullmq: 220 });
  });

  it("gives a figure only for the systems it applies to (Redis's CPU: not the memory store)", () => {
    assert.deepEqual(medians(rounds, list).redisCpu, { taskfleetRedis: 0.08, bullmq: 0.07 });
  });

  it("takes only the systems that every round has, so an older run's file still reads", () => {
    assert.deepEqual(systemsIn(twoSystemRounds), ["taskfleet", "bullmq"]);
    assert.deepEqual(systemsIn(rounds), ["taskfleet", "taskfleetRedis", "bullmq"]);
    assert.deepEqual(systemsIn([rounds[0], twoSystemRounds[0]]), ["taskfleet", "bullmq"]);
    assert.deepEqual(medians(twoSystemRounds, list).throughput, {
      taskfleet: 8_000,
      bullmq: 5_500,
    });
  });
});

describe("measuredFigures", () => {
  it("leaves out a figure that a run's rounds did not measure for a system it applies to", () => {
    // The two-system rounds predate the Redis CPU figure: BullMQ's rounds have no redisCpuMsPerTask.
    const keys = measuredFigures(list, twoSystemRounds).map((figure) => figure.key);
    assert.ok(!keys.includes("redisCpu"));
    assert.ok(keys.includes("throughput"));
    assert.ok(measuredFigures(list, rounds).some((figure) => figure.key === "redisCpu"));
  });
});

describe("markdownTable", () => {
  const table = markdownTable(list, medians(rounds, list));

  it("has a column per system and a ratio to BullMQ per taskfleet store", () => {
    assert.deepEqual(row(table, "measure"), [
      "measure",
      "better",
      "taskfleet, memory store",
      "taskfleet, Redis store",
      "BullMQ",
      "memory store ÷ BullMQ",
      "Redis store ÷ BullMQ",
      "targets",
    ]);
  });

  it("shows every system's median, both ratios and each store's targets on a row", () => {
    assert.deepEqual(row(table, "Throughput, no-op tasks"), [
      "Throughput, no-op tasks",
      "higher",
      "8,000 tasks/s",
      "5,000 tasks/s",
      "5,500 tasks/s",
      "1.45",
      "0.91",
      "memory store ≥ 1.5 × BullMQ: **missed**; memory store ≥ Redis store: met; Redis store ≥ BullMQ: **missed**",
    ]);
    assert.deepEqual(row(table, "Latency p50, single task, idle"), [
      "Latency p50, single task, idle",
      "lower",
      "1.50 ms",
      "3.50 ms",
      "2.50 ms",
      "0.60",
      "1.40",
      "memory store < 2 ms: met; memory store ≤ 0.8 × BullMQ: met; Redis store ≤ 1.5 × BullMQ: met",
    ]);
  });

  it("judges the Redis store's latency target against 1.5 × BullMQ's median", () => {
    const slow = medians(rounds, list);
    slow.latencyIdleP50 = { taskfleet: 1.5, taskfleetRedis: 3.8, bullmq: 2.5 };
    assert.match(
      markdownTable(list, slow),
      /Latency p50, single task, idle .*Redis store ≤ 1\.5 × BullMQ: \*\*missed\*\*/,
    );
  });

  it("shows a dash where a figure does not apply, not a number", () => {
    assert.deepEqual(row(table, "CPU per task, of which redis-server").slice(2, 7), [
      "–",
      "0.080 ms",
      "0.070 ms",
      "–",
      "1.14",
    ]);
  });

  it("marks a missed target as missed", () => {
    const slow = markdownTable(list, medians([rounds[1]], list));
    assert.match(slow, /Throughput, no-op tasks .*memory store ≥ 1\.5 × BullMQ: \*\*missed\*\*/);
    assert.match(slow, /Throughput, no-op tasks .*Redis store ≥ BullMQ: met/);
    assert.match(slow, /Scale-out.*memory store ≥ 1\.9×: \*\*missed\*\*/);
    assert.match(slow, /Memory per queued task .*memory store < 1 KB: met/);
  });

  it("draws a run without the Redis store with two system columns and no Redis-store targets", () => {
    const old = markdownTable(list, medians(twoSystemRounds, list));
    assert.deepEqual(row(old, "measure"), [
      "measure",
      "better",
      "taskfleet, memory store",
      "BullMQ",
      "memory store ÷ BullMQ",
      "targets",
    ]);
    assert.deepEqual(row(old, "Throughput, no-op tasks").slice(2), [
      "8,000 tasks/s",
      "5,500 tasks/s",
      "1.45",
      "memory store ≥ 1.5 × BullMQ: **missed**",
    ]);
  });
});
