/**
 * `npm run bench [-- --quick]`: taskfleet with its memory store, taskfleet with its Redis store and
 * BullMQ on Redis, on this machine, in one run. Starts everything itself on 127.0.0.1 (taskfleet
 * masters and workers, redis-servers, BullMQ workers, all as child processes), alternates the
 * systems run by run, and writes the medians as a table, a JSON file and a markdown file under
 * bench/results/. See docs/performance.md.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { fromRepoRoot, repoRoot } from "../infra/service-builds.js";
import { hotSpots } from "./lib/cpu-profile.js";
import { stopAllChildren } from "./lib/processes.js";
import { REDIS_MISSING, REDIS_SETTINGS, redisServerVersion } from "./lib/redis-server.js";
import { round } from "./lib/stats.js";
import {
  figures,
  markdownTable,
  measuredFigures,
  medians,
  type Round,
  systemLabels,
  systemOrder,
} from "./report.js";
import {
  type BenchConfig,
  type RoundResult,
  type ScenarioName,
  scenarioNames,
  scenarios,
} from "./scenarios.js";
import { bullmq } from "./systems/bullmq.js";
import type { System, SystemName } from "./systems/system.js";
import { buildTaskfleet, taskfleet, taskfleetRedis } from "./systems/taskfleet.js";

const systems: Record<SystemName, System> = { taskfleet, taskfleetRedis, bullmq };

/** Full run: the figures the README shows. About 6 minutes on 2 quiet cores (three systems). */
const FULL: Omit<BenchConfig, "profileDir"> = {
  mode: "full",
  rounds: 5,
  workers: 2,
  concurrency: 8,
  batchSize: 1_000,
  throughputTasks: 20_000,
  idleSamples: 300,
  rate: 200,
  rateSeconds: 5,
  capacitySeconds: 3,
  cpuTasks: 100,
  cpuN: 10_000_000,
  memoryTasks: 100_000,
};

/**
 * Quick run: every measure once, smaller; for CI, where only completion is checked. Sized so that
 * three systems take about as long as two did with 10,000 throughput tasks and 30 `cpu` tasks.
 */
const QUICK: Omit<BenchConfig, "profileDir"> = {
  ...FULL,
  mode: "quick",
  rounds: 1,
  throughputTasks: 5_000,
  idleSamples: 100,
  rateSeconds: 2,
  capacitySeconds: 1,
  cpuTasks: 20,
  memoryTasks: 20_000,
};

const USAGE = `usage: npm run bench -- [--quick] [--rounds N] [--workers N] [--concurrency N] [--profile]
                                  [--redraw results.json]
  --quick          one smaller round (under two minutes); writes bench/results/quick.{json,md}
  --rounds N       rounds of A/B alternation (full: ${FULL.rounds}, quick: ${QUICK.rounds})
  --workers N      worker processes per system for throughput and latency (default ${FULL.workers})
  --concurrency N  tasks each worker runs at once (default ${FULL.concurrency})
  --profile        CPU-profile taskfleet's masters and workers (both stores) during throughput
                   runs (node --cpu-prof) and print their hot spots; profiles go to
                   bench/results/profiles/
  --redraw FILE    rewrite the table and markdown from a results JSON, without running`;

interface Results {
  mode: BenchConfig["mode"];
  command: string;
  startedAt: string;
  durationSeconds: number;
  machine: Record<string, unknown>;
  versions: Record<string, string>;
  config: BenchConfig;
  rounds: ({ round: number } & Round)[];
  medians: ReturnType<typeof medians>;
}

function positiveInt(name: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1 || value > 1000) {
    throw new Error(`--${name} must be an integer from 1 to 1000 (got "${raw}")`);
  }
  return value;
}

/** Share of CPU time the whole machine spent busy since boot, as counters to diff later. */
function cpuCounters(): { busy: number; total: number } {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0];
  const fields = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = fields[3] + (fields[4] ?? 0);
  const total = fields.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

function machine(): Record<string, unknown> {
  const cpus = os.cpus();
  return {
    cpuModel: cpus[0]?.model ?? "unknown",
    cores: cpus.length,
    memoryBytes: os.totalmem(),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
  };
}

function describeMachine(results: Pick<Results, "machine" | "versions">): string {
  const m = results.machine;
  const gib = Math.round(Number(m.memoryBytes) / 2 ** 30);
  const redis = results.versions.redisSettings ? ` (${results.versions.redisSettings})` : "";
  return `${m.cpuModel}, ${m.cores} cores, ${gib} GiB, Node ${String(m.node).replace(/^v/, "")}, Redis ${results.versions.redis}${redis}, BullMQ ${results.versions.bullmq}`;
}

function summary(scenario: ScenarioName, result: RoundResult[ScenarioName]): string {
  switch (scenario) {
    case "throughput":
      return `${Math.round((result as RoundResult["throughput"]).tasksPerSecond)} tasks/s`;
    case "latency": {
      const l = result as RoundResult["latency"];
      return `idle p50 ${l.idle.p50Ms.toFixed(2)} ms p99 ${l.idle.p99Ms.toFixed(2)} ms; at ${l.underLoad.targetRate}/s p50 ${l.underLoad.p50Ms.toFixed(2)} ms p99 ${l.underLoad.p99Ms.toFixed(2)} ms; ${Math.round(l.capacity.tasksPerSecond)} single tasks/s with ${l.capacity.clients} clients`;
    }
    case "scaleOut": {
      const s = result as RoundResult["scaleOut"];
      return `1 worker ${s.oneWorkerSeconds.toFixed(2)} s, 2 workers ${s.twoWorkersSeconds.toFixed(2)} s, ×${s.speedup.toFixed(2)}`;
    }
    case "memory": {
      const m = result as RoundResult["memory"];
      return `${Math.round(m.bytesPerTask)} B/task (detail ${Math.round(m.detailBytesPerTask)} B/task; first fill ${Math.round(m.firstBytesPerTask)} B/task)`;
    }
  }
}

/** Writes the JSON and the markdown table; returns the table. */
function writeOutputs(results: Results, outDir: string, basename: string): string {
  const list = figures(results.config).filter((figure) => figure.key in results.medians);
  const systemCount = new Set(Object.values(results.medians).flatMap((row) => Object.keys(row)))
    .size;
  const table = markdownTable(list, results.medians);
  mkdirSync(outDir, { recursive: true });
  writeFileSync(path.join(outDir, `${basename}.json`), `${JSON.stringify(results, null, 2)}\n`);
  writeFileSync(
    path.join(outDir, `${basename}.md`),
    `${table}\n\n${describeMachine(results)}. ${results.config.rounds} round(s) of each of the ${systemCount} systems, alternating; medians. Reproduce with \`${results.command}\`.\n`,
  );
  return table;
}

const DOC_START = "<!-- bench:results:start -->";
const DOC_END = "<!-- bench:results:end -->";

/**
 * Replaces the results section of docs/performance.md and of the README (between their markers)
 * with this run's table, so both pages and the committed JSON always show the same run. Returns
 * the files it rewrote.
 */
function updateResultsSections(results: Results, table: string): string[] {
  const m = results.machine;
  const load = (values: unknown) => (values as number[]).map((v) => v.toFixed(2)).join(" ");
  const summary = `Run of ${results.startedAt.slice(0, 16).replace("T", " ")} UTC, \`${results.command}\`, ${results.config.rounds} rounds, ${Math.round(results.durationSeconds)} s. Machine: ${describeMachine(results)}. Load average before ${load(m.loadAverageBefore)}, after ${load(m.loadAverageAfter)}; the machine's CPU was ${Math.round(Number(m.cpuBusyPercentDuringRun))}% busy during the run (the benchmark included).`;
  const written: string[] = [];
  for (const page of ["docs/performance.md", "README.md"]) {
    const file = fromRepoRoot(page);
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch {
      continue;
    }
    const start = text.indexOf(DOC_START);
    const end = text.indexOf(DOC_END);
    if (start < 0 || end < start) continue;
    const section = [DOC_START, summary, "", table, "", DOC_END].join("\n");
    writeFileSync(file, text.slice(0, start) + section + text.slice(end + DOC_END.length));
    // The repository's formatter aligns markdown tables; without it `npm run lint` would fail.
    spawnSync(fromRepoRoot("node_modules/.bin/biome"), ["format", "--write", file], {
      stdio: "ignore",
    });
    written.push(page);
  }
  return written;
}

function roundTree<T>(value: T): T {
  return JSON.parse(
    JSON.stringify(value, (_key, v) =>
      typeof v === "number" && !Number.isInteger(v) ? round(v, 5) : v,
    ),
  ) as T;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: "boolean", default: false },
      rounds: { type: "string" },
      workers: { type: "string" },
      concurrency: { type: "string" },
      profile: { type: "boolean", default: false },
      redraw: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const outDir = fromRepoRoot("bench/results");
  if (values.redraw !== undefined) {
    const results = JSON.parse(readFileSync(values.redraw, "utf8")) as Results;
    // From the raw rounds, so that figures added since that run are computed where they can be.
    const list = measuredFigures(figures(results.config), results.rounds);
    results.medians = roundTree(medians(results.rounds, list));
    const basename = path.basename(values.redraw, ".json");
    process.stdout.write(
      `${writeOutputs(results, path.dirname(path.resolve(values.redraw)), basename)}\n`,
    );
    return;
  }

  const base = values.quick ? QUICK : FULL;
  const profileDir = values.profile ? path.join(outDir, "profiles") : undefined;
  const config: BenchConfig = {
    ...base,
    rounds: positiveInt("rounds", values.rounds, base.rounds),
    workers: positiveInt("workers", values.workers, base.workers),
    concurrency: positiveInt("concurrency", values.concurrency, base.concurrency),
    profileDir,
  };
  const redisVersion = redisServerVersion();
  if (redisVersion === undefined) {
    process.stderr.write(`${REDIS_MISSING}\n`);
    process.exitCode = 1;
    return;
  }
  process.stderr.write("bench: building taskfleet's master and worker…\n");
  buildTaskfleet();
  if (profileDir !== undefined) {
    // Profiles of an earlier run would be added into this run's hot spots.
    rmSync(profileDir, { recursive: true, force: true });
    mkdirSync(profileDir, { recursive: true });
  }

  const startedAt = new Date();
  const cpuBefore = cpuCounters();
  const loadBefore = os.loadavg();
  const versions = {
    ...(await taskfleet.versions()),
    ...(await bullmq.versions()),
    // The same for both systems on Redis: a fresh redis-server per run of a scenario.
    redisSettings: REDIS_SETTINGS.filter((arg) => arg !== "--loglevel" && arg !== "warning")
      .map((arg) => (arg === "" ? '""' : arg))
      .join(" "),
  };
  const rounds: Results["rounds"] = [];
  process.stderr.write(
    `bench: ${config.mode}, ${config.rounds} round(s), ${config.workers} workers × concurrency ${config.concurrency}, Redis ${redisVersion}\n`,
  );
  for (let r = 1; r <= config.rounds; r++) {
    const perSystem: Partial<Record<SystemName, Partial<RoundResult>>> = {};
    for (const scenario of scenarioNames) {
      // A B C, A B C, …: each scenario runs every system back to back, so a busy spell on the
      // machine lands on all of them rather than on one.
      for (const name of systemOrder) {
        const started = performance.now();
        const result = await scenarios[scenario](systems[name], config);
        perSystem[name] = { ...perSystem[name], [scenario]: result };
        const seconds = ((performance.now() - started) / 1000).toFixed(1);
        process.stderr.write(
          `  round ${r}/${config.rounds} ${scenario.padEnd(10)} ${systemLabels[name].padEnd(23)} ${summary(scenario, result)} (${seconds} s)\n`,
        );
      }
    }
    rounds.push({ round: r, ...(perSystem as Round) });
  }
  const cpuAfter = cpuCounters();
  const busyPercent =
    (100 * (cpuAfter.busy - cpuBefore.busy)) / Math.max(1, cpuAfter.total - cpuBefore.total);
  const command = values.quick ? "npm run bench -- --quick" : "npm run bench";
  const results: Results = roundTree({
    mode: config.mode,
    command,
    startedAt: startedAt.toISOString(),
    durationSeconds: (Date.now() - startedAt.getTime()) / 1000,
    machine: {
      ...machine(),
      loadAverageBefore: loadBefore,
      loadAverageAfter: os.loadavg(),
      // Everything, the benchmark included: what share of the machine's CPU was busy while it ran.
      cpuBusyPercentDuringRun: busyPercent,
    },
    versions,
    config: { ...config, profileDir: profileDir && path.relative(repoRoot, profileDir) },
    rounds,
    medians: medians(rounds, figures(config)),
  });
  const basename = config.mode === "quick" ? "quick" : "latest";
  const table = writeOutputs(results, outDir, basename);
  process.stdout.write(`\n${table}\n\n${describeMachine(results)}\n`);
  process.stdout.write(
    `load average before ${loadBefore.map((l) => l.toFixed(2)).join(" ")}, after ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}; machine CPU busy ${busyPercent.toFixed(0)}% during the run\n`,
  );
  process.stdout.write(`results: bench/results/${basename}.json, .md\n`);
  if (config.mode === "full") {
    for (const file of updateResultsSections(results, table)) {
      process.stdout.write(`${file}: results section updated\n`);
    }
  }

  if (profileDir !== undefined) {
    const files = readdirSync(profileDir).filter((f) => f.endsWith(".cpuprofile"));
    for (const role of ["master", "worker", "master-redis", "worker-redis"]) {
      const mine = files
        .filter((f) => f.startsWith(`${role}.`))
        .map((f) => path.join(profileDir, f));
      if (mine.length === 0) continue;
      process.stdout.write(
        `\nhot spots of taskfleet's ${role.replace("-redis", " (Redis store)")} in throughput runs (self time, ${mine.length} profile(s) in ${path.relative(repoRoot, profileDir)}):\n`,
      );
      for (const spot of hotSpots(mine, repoRoot, 25)) {
        process.stdout.write(`  ${spot.selfPercent.toFixed(1).padStart(5)}%  ${spot.name}\n`);
      }
    }
  }
}

try {
  await main();
} catch (error) {
  process.stderr.write(
    `bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
  );
  process.exitCode = 1;
} finally {
  await stopAllChildren();
}
