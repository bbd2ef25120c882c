import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import { backlogOf, readyTasksPerSlot } from "./backlog.js";
import type { StoreObserver, StoreStats } from "./store/task-store.js";

/** The master's Prometheus metrics, each app with its own registry (tests build many apps). */
export interface MasterMetrics {
  registry: Registry;
  /** Feeds the task counters; give it to the store. */
  observer: StoreObserver;
  httpDuration: Histogram<"method" | "route" | "status_code">;
  /** Calls on worker streams, which the HTTP histogram does not see. */
  streamCallDuration: Histogram<"call" | "status_code">;
  /** Worker streams open on this master. */
  workerStreams: Gauge;
  /** Where the gauges read the store's figures from on each scrape. */
  setStatsSource(source: () => Promise<StoreStats>): void;
}

/** Seconds; a long poll waits up to 30 s, a client's wait up to 60 s. */
const durationBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5, 30, 60];

export function createMetrics(): MasterMetrics {
  const registry = new Registry();
  // Process metrics (CPU, memory, event loop lag, GC) under the same prefix as the rest.
  collectDefaultMetrics({ register: registry, prefix: "taskfleet_" });

  let statsSource: (() => Promise<StoreStats>) | undefined;
  // A scrape collects every gauge at once: they share one read of the store (one Redis script
  // with STORE=redis) rather than making one each.
  let scrape: Promise<StoreStats> | undefined;
  const readStats = (): Promise<StoreStats> | undefined => {
    if (statsSource === undefined) return undefined;
    scrape ??= statsSource().finally(() => {
      scrape = undefined;
    });
    return scrape;
  };
  const registers = [registry];

  const submitted = new Counter({
    name: "taskfleet_tasks_submitted_total",
    help: "Tasks created (an idempotent resubmission does not count).",
    registers,
  });
  const finished = new Counter({
    name: "taskfleet_tasks_finished_total",
    help: "Tasks that reached a final status.",
    labelNames: ["status"] as const,
    registers,
  });
  const attempts = new Counter({
    name: "taskfleet_task_attempts_total",
    help: "Attempts that ended: reported succeeded or failed by a worker, or expired with the lease.",
    labelNames: ["outcome"] as const,
    registers,
  });
  const leaseExpirations = new Counter({
    name: "taskfleet_lease_expirations_total",
    help: "Leases that ran out before the worker completed or renewed them.",
    registers,
  });
  const runSeconds = new Histogram({
    name: "taskfleet_task_run_seconds",
    help: "Time from lease to the end of an attempt.",
    labelNames: ["outcome"] as const,
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600],
    registers,
  });
  new Gauge({
    name: "taskfleet_tasks",
    help: "Tasks the master holds, by status (queued includes delayed retries).",
    labelNames: ["status"] as const,
    registers,
    async collect() {
      const stats = await readStats();
      if (stats === undefined) return;
      this.set({ status: "queued" }, stats.queued);
      this.set({ status: "delayed" }, stats.delayed);
      this.set({ status: "running" }, stats.running);
      this.set({ status: "retained" }, stats.retained);
    },
  });
  new Gauge({
    name: "taskfleet_active_workers",
    help: "Distinct workers seen on the worker routes in the last minute.",
    registers,
    async collect() {
      const stats = await readStats();
      if (stats !== undefined) this.set(stats.activeWorkers);
    },
  });
  new Gauge({
    name: "taskfleet_worker_slots",
    help: "Task slots (CONCURRENCY) of the active workers together, as each reported on its latest lease.",
    registers,
    async collect() {
      const stats = await readStats();
      if (stats !== undefined) this.set(stats.workerSlots);
    },
  });
  new Gauge({
    name: "taskfleet_oldest_queued_task_age_seconds",
    help: "How long the next task a lease takes has been ready to run (0: none is ready).",
    registers,
    async collect() {
      const stats = await readStats();
      if (stats !== undefined) this.set(stats.oldestQueuedSeconds);
    },
  });
  new Gauge({
    name: "taskfleet_queued_tasks_per_worker_slot",
    help: "Tasks ready to lease per worker slot (0: none is ready; +Inf: some are, and no slot).",
    registers,
    async collect() {
      const stats = await readStats();
      if (stats !== undefined) this.set(readyTasksPerSlot(backlogOf(stats)));
    },
  });
  new Gauge({
    name: "taskfleet_memory_budget_used_bytes",
    help: "What the tasks held count against MEMORY_BUDGET_BYTES (estimated heap bytes).",
    registers,
    async collect() {
      const stats = await readStats();
      if (stats !== undefined) this.set(stats.budgetUsedBytes);
    },
  });
  const httpDuration = new Histogram({
    name: "taskfleet_http_request_duration_seconds",
    help: "HTTP request duration by route (the route pattern, not the path).",
    labelNames: ["method", "route", "status_code"] as const,
    buckets: durationBuckets,
    registers,
  });

  const streamCallDuration = new Histogram({
    name: "taskfleet_worker_stream_call_duration_seconds",
    help: "Duration of calls on worker streams by call (lease, renew, complete, release) and status.",
    labelNames: ["call", "status_code"] as const,
    buckets: durationBuckets,
    registers,
  });
  const workerStreams = new Gauge({
    name: "taskfleet_worker_streams",
    help: "Worker streams open on this master.",
    registers,
  });

  const observer: StoreObserver = {
    submitted(count) {
      submitted.inc(count);
    },
    attemptEnded(outcome, seconds) {
      attempts.inc({ outcome });
      runSeconds.observe({ outcome }, seconds);
      if (outcome === "expired") leaseExpirations.inc();
    },
    finished(status) {
      finished.inc({ status });
    },
  };

  return {
    registry,
    observer,
    httpDuration,
    streamCallDuration,
    workerStreams,
    setStatsSource(source) {
      statsSource = source;
    },
  };
}
