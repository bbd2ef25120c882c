import type { Logger } from "./logger.js";
import type { LeaseRef, MasterApi } from "./master-client.js";

/**
 * Leases per renew or release request. Well under the master's 10,000, and small enough that the
 * request (about 100 bytes a lease) stays far below its default 1 MiB body limit.
 */
export const leasesPerRequest = 4096;

/** The reason a task's signal aborts when the master says its lease is lost. */
export class LeaseLost extends Error {
  override name = "LeaseLost";
}

/** A task the worker runs under a lease: what renewing needs to know of it. */
export interface HeldLease {
  id: string;
  leaseId: string;
  type: string;
  /** Aborted with {@link LeaseLost} when the master no longer holds the lease for this worker. */
  controller: AbortController;
}

export interface LeaseRenewalOptions {
  /** The master's worker routes. */
  master: MasterApi;
  /** Names this worker on the master. */
  workerId: string;
  logger: Logger;
  /**
   * The tasks the worker holds, by id: read at each renewal, never changed here. Their leases are
   * renewed, and one whose lease is lost is aborted.
   */
  held: ReadonlyMap<string, HeldLease>;
  /** Leases of the results the master has not accepted yet: renewed after the held tasks'. */
  resultLeases: () => Iterable<LeaseRef>;
  /** A renew request got a valid answer. */
  onReachable: () => void;
  /** A renew request failed; the rest of that renewal waits for the next one. */
  onUnreachable: (error: unknown) => void;
}

/**
 * Keeps this worker's leases alive: about three times per lease period it renews the lease of
 * every held task and of every result not yet accepted, in requests of {@link leasesPerRequest},
 * and aborts the tasks whose leases the master reports lost. It runs on the worker's main thread,
 * which runs no handler code, so nothing a handler does can starve it.
 */
export class LeaseRenewal {
  private readonly master: MasterApi;
  private readonly workerId: string;
  private readonly log: Logger;
  private readonly held: ReadonlyMap<string, HeldLease>;
  private readonly resultLeases: () => Iterable<LeaseRef>;
  private readonly onReachable: () => void;
  private readonly onUnreachable: (error: unknown) => void;

  private timer: NodeJS.Timeout | undefined;
  private leaseSeconds: number | undefined;
  /** Set by {@link stop}: a renewal that was on its way when it came schedules no other. */
  private stopped = false;

  constructor(options: LeaseRenewalOptions) {
    this.master = options.master;
    this.workerId = options.workerId;
    this.log = options.logger;
    this.held = options.held;
    this.resultLeases = options.resultLeases;
    this.onReachable = options.onReachable;
    this.onUnreachable = options.onUnreachable;
  }

  /**
   * Takes the lease period of a lease answer: starts the renewals if none are scheduled, and
   * reschedules them if the period changed.
   */
  setLeaseSeconds(seconds: number): void {
    this.stopped = false;
    const changed = this.leaseSeconds !== seconds;
    this.leaseSeconds = seconds;
    if (changed || !this.timer) this.schedule();
  }

  /** Cancels the next renewal; a later {@link setLeaseSeconds} starts them again. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** About three renewals per lease, so one lost request does not cost a lease. */
  private schedule(): void {
    clearTimeout(this.timer);
    if (this.leaseSeconds === undefined) return;
    this.timer = setTimeout(
      () => {
        void this.renew().finally(() => {
          if (!this.stopped) this.schedule();
        });
      },
      (this.leaseSeconds * 1000) / 3,
    );
    this.timer.unref();
  }

  private async renew(): Promise<void> {
    const leases: LeaseRef[] = [];
    for (const entry of this.held.values()) leases.push({ id: entry.id, leaseId: entry.leaseId });
    // A result not yet accepted still needs its lease, or the master would reject it.
    for (const result of this.resultLeases())
      leases.push({ id: result.id, leaseId: result.leaseId });
    for (let start = 0; start < leases.length; start += leasesPerRequest) {
      try {
        const answer = await this.master.renew(
          this.workerId,
          leases.slice(start, start + leasesPerRequest),
        );
        this.onReachable();
        // Checked against the master's own range: a tiny value would make renewals spin.
        this.leaseSeconds = answer.leaseSeconds;
        for (const id of answer.lost) {
          const entry = this.held.get(id);
          if (!entry) continue;
          this.log.warn({ taskId: id, type: entry.type }, "lease lost; abandoning the task");
          entry.controller.abort(new LeaseLost("lease lost"));
        }
      } catch (error) {
        // No retry before the next renewal, a third of a lease later, which the lease outlives.
        this.onUnreachable(error);
        return;
      }
    }
  }
}
