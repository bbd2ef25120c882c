/**
 * Turns per-round results into medians and a table (markdown, printed and written). Pure functions
 * of the results, so the table can be rewritten from a results JSON alone
 * (`npm run bench -- --redraw bench/results/latest.json`), also from a run that predates a system
 * (a results file from before taskfleet on Redis has two systems, and its table two columns).
 */

import { median, round } from "./lib/stats.js";
import type { BenchConfig, RoundResult } from "./scenarios.js";
import type { SystemName } from "./systems/system.js";

/** The order of the systems in every round and in the table; BullMQ, the reference, last. */
export const systemOrder: readonly SystemName[] = ["taskfleet", "taskfleetRedis", "bullmq"];
export const systemLabels: Readonly<Record<SystemName, string>> = {
  taskfleet: "taskfleet, memory store",
  taskfleetRedis: "taskfleet, Redis store",
  bullmq: "BullMQ",
};
/** For ratio headings and targets, where "taskfleet" goes without saying. */
const shortLabels: Readonly<Record<SystemName, string>> = {
  taskfleet: "memory store",
  taskfleetRedis: "Redis store",
  bullmq: "BullMQ",
};
/** What every ratio in the table is taken against. */
const REFERENCE: SystemName = "bullmq";

/** One round: each system's results (a system the run did not have is absent). */
export type Round = Partial<Record<SystemName, RoundResult>>;

/** A figure's median per system; a system the figure does not apply to is absent. */
export type SystemMedians = Partial<Record<SystemName, number>>;

export interface Target {
  /** Whose target it is. */
  system: SystemName;
  /** What is asked, as the table shows it after the system's label. */
  text: string;
  /** The systems whose medians `met` reads: the target is left out when one is missing. */
  needs: readonly SystemName[];
  met(medians: SystemMedians): boolean;
}

export interface Figure {
  key: string;
  /** Row label in the table. */
  label: string;
  unit: string;
  better: "higher" | "lower";
  /** The systems it means something for; all when unset. */
  appliesTo?: readonly SystemName[];
  /** The figure from one system's round; NaN when that round did not measure it. */
  value(round: RoundResult): number;
  /** What the issues ask, if anything; judged on the medians. */
  targets?: readonly Target[];
}

/** At least the reference's value (higher is better). */
function atLeast(system: SystemName, other: SystemName, text: string): Target {
  return {
    system,
    text,
    needs: [system, other],
    met: (m) => (m[system] as number) >= (m[other] as number),
  };
}

/**
 * A multiple of BullMQ's median: at least `factor` times it where higher is better, at most where
 * lower is better.
 */
function timesBullmq(system: SystemName, factor: number, better: "higher" | "lower"): Target {
  const text = `${better === "higher" ? "≥" : "≤"} ${factor === 1 ? "" : `${factor} × `}BullMQ`;
  return {
    system,
    text,
    needs: [system, REFERENCE],
    met: (m) =>
      better === "higher"
        ? (m[system] as number) >= factor * (m[REFERENCE] as number)
        : (m[system] as number) <= factor * (m[REFERENCE] as number),
  };
}

/** A bound on the system's own median. */
function bound(system: SystemName, text: string, ok: (value: number) => boolean): Target {
  return { system, text, needs: [system], met: (m) => ok(m[system] as number) };
}

export function figures(config: Pick<BenchConfig, "rate">): Figure[] {
  return [
    {
      key: "throughput",
      label: "Throughput, no-op tasks",
      unit: "tasks/s",
      better: "higher",
      value: (r) => r.throughput.tasksPerSecond,
      targets: [
        timesBullmq("taskfleet", 1.5, "higher"),
        // The memory store keeps its lead: Redis is what a master that may die pays for.
        atLeast("taskfleet", "taskfleetRedis", "≥ Redis store"),
        atLeast("taskfleetRedis", "bullmq", "≥ BullMQ"),
      ],
    },
    {
      key: "brokerCpu",
      label: "CPU per task, broker (master / master + Redis / Redis)",
      unit: "ms",
      better: "lower",
      value: (r) => r.throughput.brokerCpuMsPerTask,
    },
    {
      key: "redisCpu",
      label: "CPU per task, of which redis-server",
      unit: "ms",
      better: "lower",
      appliesTo: ["taskfleetRedis", "bullmq"],
      value: (r) => r.throughput.redisCpuMsPerTask ?? Number.NaN,
    },
    {
      key: "workersCpu",
      label: "CPU per task, worker processes",
      unit: "ms",
      better: "lower",
      value: (r) => r.throughput.workersCpuMsPerTask,
      targets: [timesBullmq("taskfleet", 1, "lower")],
    },
    {
      key: "latencyIdleP50",
      label: "Latency p50, single task, idle",
      unit: "ms",
      better: "lower",
      value: (r) => r.latency.idle.p50Ms,
      targets: [
        bound("taskfleet", "< 2 ms", (v) => v < 2),
        timesBullmq("taskfleet", 0.8, "lower"),
        {
          system: "taskfleetRedis",
          text: "≤ 1.5 × BullMQ",
          needs: ["taskfleetRedis", "bullmq"],
          met: (m) => (m.taskfleetRedis as number) <= 1.5 * (m.bullmq as number),
        },
      ],
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
      targets: [timesBullmq("taskfleet", 1.5, "higher")],
    },
    {
      key: "scaleOut",
      label: "Scale-out, cpu tasks, 2 workers vs 1",
      unit: "×",
      better: "higher",
      value: (r) => r.scaleOut.speedup,
      targets: [
        bound("taskfleet", "≥ 1.9×", (v) => v >= 1.9),
        timesBullmq("taskfleet", 1, "higher"),
      ],
    },
    {
      key: "memoryPerTask",
      label: "Memory per queued task (master RSS / Redis used_memory), second fill",
      unit: "B",
      better: "lower",
      value: (r) => r.memory.bytesPerTask,
      targets: [
        bound("taskfleet", "< 1 KB", (v) => v < 1024),
        timesBullmq("taskfleet", 1, "lower"),
      ],
    },
    {
      key: "memoryFirstPerTask",
      label: "Memory per queued task, first fill (with the broker's one-time growth)",
      unit: "B",
      better: "lower",
      // Runs from before this figure measured only one fill.
      value: (r) => r.memory.firstBytesPerTask ?? r.memory.bytesPerTask,
      targets: [],
    },
  ];
}

/** The systems that every round has results for, in table order. */
export function systemsIn(rounds: readonly Round[]): SystemName[] {
  return systemOrder.filter(
    (name) => rounds.length > 0 && rounds.every((r) => r[name] !== undefined),
  );
}

/** The systems among `systems` that `figure` applies to. */
export function appliesTo(figure: Figure, systems: readonly SystemName[]): SystemName[] {
  return systems.filter(
    (name) => figure.appliesTo === undefined || figure.appliesTo.includes(name),
  );
}

/**
 * The figures that every round measured for every system they apply to: a results file from an
 * older bench lacks the figures added since, and those rows are left out rather than shown empty.
 */
export function measuredFigures(list: readonly Figure[], rounds: readonly Round[]): Figure[] {
  const systems = systemsIn(rounds);
  return list.filter((figure) =>
    appliesTo(figure, systems).every((name) =>
      rounds.every((r) => Number.isFinite(figure.value(r[name] as RoundResult))),
    ),
  );
}

export type Medians = Record<string, SystemMedians>;

/** Each figure's median over the rounds, per system it applies to. */
export function medians(rounds: readonly Round[], list: readonly Figure[]): Medians {
  const systems = systemsIn(rounds);
  const out: Medians = {};
  for (const figure of list) {
    const row: SystemMedians = {};
    for (const name of appliesTo(figure, systems)) {
      row[name] = median(rounds.map((r) => figure.value(r[name] as RoundResult)));
    }
    out[figure.key] = row;
  }
  return out;
}

function formatValue(value: number | undefined, unit: string): string {
  if (value === undefined || !Number.isFinite(value)) return "–";
  if (unit === "×") return `${value.toFixed(2)}×`;
  if (unit === "ms")
    return `${value < 1 ? value.toFixed(3) : value < 10 ? value.toFixed(2) : round(value, 3)} ms`;
  if (unit === "B") return `${Math.round(value).toLocaleString("en-US")} B`;
  return `${Math.round(value).toLocaleString("en-US")} ${unit}`;
}

function ratio(value: number | undefined, reference: number | undefined): string {
  if (value === undefined || reference === undefined || reference === 0) return "–";
  return (value / reference).toFixed(2);
}

/** The systems in the medians, in table order (those of an older results file, for one). */
function systemsOf(med: Medians): SystemName[] {
  const seen = new Set(Object.values(med).flatMap((row) => Object.keys(row)));
  return systemOrder.filter((name) => seen.has(name));
}

/**
 * The results as a markdown table: one row per figure; each system's median, each taskfleet
 * system's ratio to BullMQ, and the targets with whether they were met. A figure that does not
 * apply to a system shows "–" there.
 */
export function markdownTable(list: readonly Figure[], med: Medians): string {
  const systems = systemsOf(med);
  const compared = systems.includes(REFERENCE) ? systems.filter((s) => s !== REFERENCE) : [];
  const header = [
    "measure",
    "better",
    ...systems.map((name) => systemLabels[name]),
    ...compared.map((name) => `${shortLabels[name]} ÷ ${shortLabels[REFERENCE]}`),
    "targets",
  ];
  const align = ["---", "---", ...systems.map(() => "---:"), ...compared.map(() => "---:"), "---"];
  const rows = [`| ${header.join(" | ")} |`, `| ${align.join(" | ")} |`];
  for (const figure of list) {
    const m = med[figure.key] ?? {};
    const targets = (figure.targets ?? [])
      .filter((t) => t.needs.every((name) => m[name] !== undefined))
      .map((t) => `${shortLabels[t.system]} ${t.text}: ${t.met(m) ? "met" : "**missed**"}`);
    const cells = [
      figure.label,
      figure.better,
      ...systems.map((name) => formatValue(m[name], figure.unit)),
      ...compared.map((name) => ratio(m[name], m[REFERENCE])),
      targets.join("; "),
    ];
    rows.push(`| ${cells.join(" | ")} |`);
  }
  return rows.join("\n");
}
