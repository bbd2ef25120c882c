import type { StoreStats } from "./store/task-store.js";

/**
 * What `GET /scaler/v1/backlog` answers (docs/api.md, "Backlog"): the figures an autoscaler sizes
 * the workers by, from one read of the store's stats. With `STORE=redis` they are read from Redis,
 * so every master on it answers the same.
 */
export interface Backlog {
  /**
   * Tasks that need a worker slot now: `ready` + `running` (running ones too, so that the pods
   * running them are not scaled away). KEDA's metrics-api scaler reads this field.
   */
  demand: number;
  /** Queued tasks a lease would take now: `queued` less `delayed`. */
  ready: number;
  /** Tasks leased to a worker. */
  running: number;
  /** Queued tasks still waiting out a retry backoff; they are no demand until it ends. */
  delayed: number;
  /** See `StoreStats.oldestQueuedSeconds`. */
  oldestQueuedSeconds: number;
  /** See `StoreStats.workerSlots`. */
  workerSlots: number;
}

export function backlogOf(stats: StoreStats): Backlog {
  const ready = stats.queued - stats.delayed;
  return {
    demand: ready + stats.running,
    ready,
    running: stats.running,
    delayed: stats.delayed,
    oldestQueuedSeconds: stats.oldestQueuedSeconds,
    workerSlots: stats.workerSlots,
  };
}

/**
 * Ready tasks per worker slot: 0 when none is ready, `+Infinity` when some are and no worker
 * reported a slot (the fleet is gone, or scaled to zero).
 */
export function readyTasksPerSlot(backlog: Backlog): number {
  if (backlog.ready === 0) return 0;
  return backlog.workerSlots === 0 ? Number.POSITIVE_INFINITY : backlog.ready / backlog.workerSlots;
}
