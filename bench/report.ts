/**
 * Turns per-round results into medians, a table (markdown, printed and written) and an SVG chart.
 * Pure functions of the results, so the files can be redrawn from a results JSON alone
 * (`npx tsx bench/report.ts bench/results/latest.json`).
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
  /** Two-line label under a chart panel. */
  short: [string, string];
  unit: string;
  better: "higher" | "lower";
  value(round: RoundResult): number;
  /** What the issue asks of taskfleet, if anything; `met` gets both medians. */
  target?: { text: string; line?: number; met(taskfleet: number, bullmq: number): boolean };
}

export function figures(config: Pick<BenchConfig, "rate">): Figure[] {
  return [
    {
      key: "throughput",
      label: "Throughput, no-op tasks",
      short: ["throughput", "no-op tasks"],
      unit: "tasks/s",
      better: "higher",
      value: (r) => r.throughput.tasksPerSecond,
      target: { text: "≥ BullMQ", met: (t, b) => t >= b },
    },
    {
      key: "brokerCpu",
      label: "CPU per task, broker (master / Redis)",
      short: ["CPU per task", "broker"],
      unit: "ms",
      better: "lower",
      value: (r) => r.throughput.brokerCpuMsPerTask,
    },
    {
      key: "workersCpu",
      label: "CPU per task, worker processes",
      short: ["CPU per task", "workers"],
      unit: "ms",
      better: "lower",
      value: (r) => r.throughput.workersCpuMsPerTask,
    },
    {
      key: "latencyIdleP50",
      label: "Latency p50, single task, idle",
      short: ["latency p50", "idle"],
      unit: "ms",
      better: "lower",
      value: (r) => r.latency.idle.p50Ms,
      target: { text: "< 2 ms", line: 2, met: (t) => t < 2 },
    },
    {
      key: "latencyIdleP99",
      label: "Latency p99, single task, idle",
      short: ["latency p99", "idle"],
      unit: "ms",
      better: "lower",
      value: (r) => r.latency.idle.p99Ms,
    },
    {
      key: "latencyLoadP50",
      label: `Latency p50 at ${config.rate} tasks/s`,
      short: ["latency p50", `${config.rate}/s`],
      unit: "ms",
      better: "lower",
      value: (r) => r.latency.underLoad.p50Ms,
    },
    {
      key: "latencyLoadP99",
      label: `Latency p99 at ${config.rate} tasks/s`,
      short: ["latency p99", `${config.rate}/s`],
      unit: "ms",
      better: "lower",
      value: (r) => r.latency.underLoad.p99Ms,
    },
    {
      key: "singleTaskCapacity",
      label: "Single tasks/s, 16 clients submitting and waiting",
      short: ["single tasks/s", "16 clients"],
      unit: "tasks/s",
      better: "higher",
      value: (r) => r.latency.capacity?.tasksPerSecond ?? Number.NaN,
    },
    {
      key: "scaleOut",
      label: "Scale-out, cpu tasks, 2 workers vs 1",
      short: ["speed-up", "1 → 2 workers"],
      unit: "×",
      better: "higher",
      value: (r) => r.scaleOut.speedup,
      target: { text: "≥ 1.8×", line: 1.8, met: (t) => t >= 1.8 },
    },
    {
      key: "memoryPerTask",
      label: "Memory per queued task",
      short: ["memory per", "queued task"],
      unit: "B",
      better: "lower",
      value: (r) => r.memory.bytesPerTask,
      target: { text: "< 1 KB", line: 1024, met: (t) => t < 1024 },
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

const COLORS: Record<SystemName, string> = { taskfleet: "#2563eb", bullmq: "#d97706" };
const TARGET_COLOR = "#15803d";

function escapeXml(text: string): string {
  return text.replace(
    /[<>&"]/g,
    (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;" })[c] ?? c,
  );
}

/**
 * A grouped bar chart: one panel per figure with its own scale (the units differ), a bar per
 * system with its value, and the target as a dashed line where the issue sets one.
 */
export function svgChart(list: readonly Figure[], med: Medians, caption: string): string {
  const panelWidth = 124;
  const plotTop = 70;
  const plotHeight = 200;
  const barWidth = 40;
  const left = 20;
  const width = left * 2 + panelWidth * list.length;
  const height = plotTop + plotHeight + 76;
  const baseline = plotTop + plotHeight;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, -apple-system, Segoe UI, sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${left}" y="24" font-size="16" font-weight="600" fill="#111827">taskfleet vs BullMQ, same machine, same run (medians)</text>`,
    `<text x="${left}" y="44" fill="#4b5563">${escapeXml(caption)}</text>`,
  ];
  let legendX = width - left - 190;
  for (const system of systemOrder) {
    parts.push(
      `<rect x="${legendX}" y="14" width="12" height="12" fill="${COLORS[system]}"/>`,
      `<text x="${legendX + 18}" y="24" fill="#111827">${systemLabels[system]}</text>`,
    );
    legendX += 95;
  }
  list.forEach((figure, index) => {
    const x0 = left + index * panelWidth;
    const values = med[figure.key];
    const top = Math.max(values.taskfleet, values.bullmq, figure.target?.line ?? 0) * 1.18 || 1;
    const scale = (v: number) => (v / top) * plotHeight;
    parts.push(
      `<line x1="${x0 + 10}" y1="${baseline}" x2="${x0 + panelWidth - 10}" y2="${baseline}" stroke="#9ca3af"/>`,
    );
    if (figure.target?.line !== undefined) {
      const y = (baseline - scale(figure.target.line)).toFixed(1);
      parts.push(
        `<line x1="${x0 + 12}" y1="${y}" x2="${x0 + panelWidth - 12}" y2="${y}" stroke="${TARGET_COLOR}" stroke-width="1.5" stroke-dasharray="5 3"/>`,
      );
    }
    systemOrder.forEach((system, i) => {
      const value = values[system];
      const label = shortValue(value, figure.unit);
      const h = Math.max(scale(value), 1);
      const x = x0 + panelWidth / 2 - barWidth - 2 + i * (barWidth + 4);
      parts.push(
        `<rect x="${x}" y="${(baseline - h).toFixed(1)}" width="${barWidth}" height="${h.toFixed(1)}" fill="${COLORS[system]}"><title>${systemLabels[system]}: ${escapeXml(formatValue(value, figure.unit))}</title></rect>`,
        // A white box behind the value keeps it legible where the target line crosses it.
        `<rect x="${(x + barWidth / 2 - label.length * 3.3 - 3).toFixed(1)}" y="${(baseline - h - 17).toFixed(1)}" width="${(label.length * 6.6 + 6).toFixed(1)}" height="14" fill="#ffffff"/>`,
        `<text x="${x + barWidth / 2}" y="${(baseline - h - 6).toFixed(1)}" text-anchor="middle" font-size="11" fill="#111827">${escapeXml(label)}</text>`,
      );
    });
    if (figure.target !== undefined) {
      parts.push(
        `<text x="${x0 + panelWidth / 2}" y="${baseline + 64}" text-anchor="middle" font-size="10" fill="${TARGET_COLOR}">target ${escapeXml(figure.target.text)}${figure.target.line === undefined ? "" : " (dashed)"}</text>`,
      );
    }
    const arrow = figure.better === "higher" ? "higher is better" : "lower is better";
    parts.push(
      `<text x="${x0 + panelWidth / 2}" y="${baseline + 18}" text-anchor="middle" font-weight="600" fill="#111827">${escapeXml(figure.short[0])}</text>`,
      `<text x="${x0 + panelWidth / 2}" y="${baseline + 33}" text-anchor="middle" fill="#111827">${escapeXml(figure.short[1])}</text>`,
      `<text x="${x0 + panelWidth / 2}" y="${baseline + 48}" text-anchor="middle" font-size="10" fill="#6b7280">${escapeXml(figure.unit)}, ${arrow}</text>`,
    );
  });
  parts.push("</svg>");
  return `${parts.join("\n")}\n`;
}

function shortValue(value: number, unit: string): string {
  if (unit === "×") return `${value.toFixed(2)}×`;
  if (unit === "ms") {
    return value < 1 ? value.toFixed(3) : value < 10 ? value.toFixed(2) : String(round(value, 3));
  }
  if (value >= 10_000) return `${round(value / 1000, 3)}k`;
  return String(Math.round(value));
}
