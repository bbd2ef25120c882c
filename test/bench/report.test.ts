import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { figures, markdownTable, medians } from "../../bench/report.js";
import type { RoundResult } from "../../bench/scenarios.js";
import type { SystemName } from "../../bench/systems/system.js";

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
      loadedBytes: 1e6 + bytes * 1e5,
      bytesPerTask: bytes,
      detailBytesPerTask: bytes / 2,
    },
  };
}

const rounds: Record<SystemName, RoundResult>[] = [
  { taskfleet: round(9_000, 1.5, 1.9, 400), bullmq: round(6_000, 2.5, 1.7, 220) },
  { taskfleet: round(1_000, 9.0, 1.0, 900), bullmq: round(5_000, 2.0, 1.8, 230) },
  { taskfleet: round(8_000, 1.2, 1.95, 410), bullmq: round(5_500, 3.0, 1.75, 210) },
];
const list = figures({ rate: 200 });

describe("medians", () => {
  it("takes each figure's median over rounds, so one bad round does not move it", () => {
    const med = medians(rounds, list);
    assert.deepEqual(med.throughput, { taskfleet: 8_000, bullmq: 5_500 });
    assert.deepEqual(med.latencyIdleP50, { taskfleet: 1.5, bullmq: 2.5 });
    assert.deepEqual(med.memoryPerTask, { taskfleet: 410, bullmq: 220 });
  });
});

describe("markdownTable", () => {
  const table = markdownTable(list, medians(rounds, list));

  it("shows both systems and taskfleet's ratio to BullMQ on each row", () => {
    assert.match(
      table,
      /\| Throughput, no-op tasks \| 8,000 tasks\/s \| 5,500 tasks\/s \| 1\.45 \(higher is better\) \| ≥ BullMQ: met \|/,
    );
    assert.match(
      table,
      /\| Latency p50, single task, idle \| 1\.50 ms \| 2\.50 ms \| 0\.60 \(lower is better\) \| < 2 ms: met \|/,
    );
  });

  it("marks a missed target as missed", () => {
    const slow = markdownTable(list, medians([rounds[1]], list));
    assert.match(slow, /Throughput, no-op tasks .*≥ BullMQ: \*\*missed\*\*/);
    assert.match(slow, /Scale-out.*≥ 1\.8×: \*\*missed\*\*/);
    assert.match(slow, /Memory per queued task .*< 1 KB: met/);
  });
});
