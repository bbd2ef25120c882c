/**
 * Capped exponential backoff with "equal jitter", as both services wait: the n-th delay in a row
 * (n from 0) is drawn from the upper half of `min(maxMs, initialMs × 2^n)`, so a fleet of workers
 * that failed together, or a batch of tasks that failed together, does not come back in step.
 */
export function backoffDelayMs(
  initialMs: number,
  maxMs: number,
  n: number,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(maxMs, initialMs * 2 ** Math.min(n, 30));
  return ceiling / 2 + random() * (ceiling / 2);
}

/**
 * {@link backoffDelayMs} for one kind of request in a row of failures. A worker keeps one per kind
 * (leasing, sending results, releasing), so one of them succeeding does not reset the wait of
 * another that keeps failing.
 */
export class Backoff {
  private failures = 0;

  constructor(
    private readonly initialMs: number,
    private readonly maxMs: number,
  ) {}

  /** The delay before the next attempt; each call without a {@link reset} doubles the ceiling. */
  next(): number {
    return backoffDelayMs(this.initialMs, this.maxMs, this.failures++);
  }

  /** After a success: the next failure waits the initial delay again. */
  reset(): void {
    this.failures = 0;
  }
}
