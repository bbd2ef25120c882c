/**
 * Turns per-round results into medians and a table (markdown, printed and written). Pure functions
 * of the results, so the table can be rewritten from a results JSON alone
 * (`npm run bench -- --redraw bench/results/latest.json`).
 */

import { median, round } from "./lib/stats.js";
import type { BenchConfig, RoundResult } from "./scenarios.js";
import type { SystemName } from "./systems/system.js";

export const systemOrder: readonly SystemName[] = ["taskfleet", "bullmq"];
export const systemLabels: Readonly<Record<SystemName, string>> = {
  taskfleet: "taskfleet",
  bullmq: "BullMQ",
};

export interface Figure {
  key: string;
  /** Row label in the table. */
  label: string;
  unit: string;
  better: "higher" | "lower";
  value(round: RoundResult): number;
  /** What the issue asks of taskfleet, if anything; `met` gets both medians. */
  target?: { text: string; met(taskfleet: number, bullmq: number): boolean };
}

export function figures(config: Pick<BenchConfig, "rate">): Figure[] {
  return [
    {
      key: "throughput",
      label: "Throughput, no-op tasks",
      unit: "tasks/s",
      better: "higher",
      value: (r) => r.throughput.tasksPerSecond,
      target: { text: "≥ BullMQ", met: (t, b) => t >= b },
    },
    {
      key: "brokerCpu",
      label: "CPU per task, broker (master / Redis)",
      unit: "ms",
      better: "lower",
      value: (r) => r.throughput.brokerCpuMsPerTask,
    },
    {
      key: "workersCpu",
      label: "CPU per task, worker processes",
      unit: "ms",
      better: "lower",
      value: (r) => r.throughput.workersCpuMsPerTask,
    },
    {
      key: "latencyIdleP50",
      label: "Latency p50, single task, idle",
      unit: "ms",
      better: "lower",
      value: (r) => r.latency.idle.p50Ms,
      target: { text: "< 2 ms", met: (t) => t < 2 },
    },
    {
      key: "latencyIdleP99",
      label: "Latency p99, single task, idle",
      unit: "ms",
      better: "lower",
      value: (r) => r.latency.idle.p99Ms,
    },
    {
      key: "latencyLoadP50",
      label: `Latency p50 at ${config.rate} tasks/s`,
      unit: "ms",
      better: "lower",
      value: (r) => r.latency.underLoad.p50Ms,
    },
    {
      key: "latencyLoadP99",
      label: `Latency p99 at ${config.rate} tasks/s`,
      unit: "ms",
      better: "lower",
      value: (r) => r.latency.underLoad.p99Ms,
    },
    {
      key: "singleTaskCapacity",
      label: "Single tasks/s, 16 clients submitting and waiting",
      unit: "tasks/s",
      better: "higher",
      value: (r) => r.latency.capacity?.tasksPerSecond ?? Number.NaN,
    },
    {
      key: "scaleOut",
      label: "Scale-out, cpu tasks, 2 workers vs 1",
      unit: "×",
      better: "higher",
      value: (r) => r.scaleOut.speedup,
      target: { text: "≥ 1.8×", met: (t) => t >= 1.8 },
    },
    {
      key: "memoryPerTask",
      label: "Memory per queued task",
      unit: "B",
      better: "lower",
      value: (r) => r.memory.bytesPerTask,
      target: { text: "< 1 KB", met: (t) => t < 1024 },
    },
  ];
}

export type Medians = Record<string, Record<SystemName, number>>;

export function medians(
  rounds: readonly Record<SystemName, RoundResult>[],
  list: readonly Figure[],
): Medians {
  const out: Medians = {};
  for (const figure of list) {
    out[figure.key] = {
      taskfleet: median(rounds.map((r) => figure.value(r.taskfleet))),
      bullmq: median(rounds.map((r) => figure.value(r.bullmq))),
    };
  }
  return out;
}

function formatValue(value: number, unit: string): string {
  if (unit === "×") return `${value.toFixed(2)}×`;
  if (unit === "ms")
    return `${value < 1 ? value.toFixed(3) : value < 10 ? value.toFixed(2) : round(value, 3)} ms`;
  if (unit === "B") return `${Math.round(value).toLocaleString("en-US")} B`;
  return `${Math.round(value).toLocaleString("en-US")} ${unit}`;
}

/** The results as a markdown table: one row per figure, both systems, their ratio, the target. */
export function markdownTable(list: readonly Figure[], med: Medians): string {
  const rows = [
    "| measure | taskfleet | BullMQ | taskfleet ÷ BullMQ | target for taskfleet |",
    "|---|---:|---:|---:|---|",
  ];
  for (const figure of list) {
    const { taskfleet, bullmq } = med[figure.key];
    const ratio = bullmq === 0 ? "–" : `${(taskfleet / bullmq).toFixed(2)}`;
    const better = figure.better === "higher" ? "higher is better" : "lower is better";
    const target = figure.target
      ? `${figure.target.text}: ${figure.target.met(taskfleet, bullmq) ? "met" : "**missed**"}`
      : "";
    rows.push(
      `| ${figure.label} | ${formatValue(taskfleet, figure.unit)} | ${formatValue(bullmq, figure.unit)} | ${ratio} (${better}) | ${target} |`,
    );
  }
  return rows.join("\n");
}
