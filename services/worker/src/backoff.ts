/**
 * Capped exponential backoff with jitter: the n-th delay in a row is drawn from the upper half of
 * `min(maxMs, initialMs × 2^n)`, so a fleet of workers that failed together does not come back in
 * step. Each kind of request (leasing, sending results, releasing) keeps its own, so one of them
 * succeeding does not reset the wait of another that keeps failing.
 */
export class Backoff {
  private failures = 0;

  constructor(
    private readonly initialMs: number,
    private readonly maxMs: number,
  ) {}

  /** The delay before the next attempt; each call without a {@link reset} doubles the ceiling. */
  next(): number {
    const exponent = Math.min(this.failures, 30);
    this.failures++;
    const ceiling = Math.min(this.maxMs, this.initialMs * 2 ** exponent);
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  /** After a success: the next failure waits the initial delay again. */
  reset(): void {
    this.failures = 0;
  }
}
