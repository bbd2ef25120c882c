import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import { z } from "zod";
import { defineTask } from "../task.js";

/** Largest `n` the `cpu` task accepts: about 50 ms of work, 1.3 MB of memory at most. */
export const maxN = 10_000_000;

const segmentSize = 1 << 18;

/**
 * Counts the primes below `n` with a segmented sieve of Eratosthenes, one segment per step, so a
 * caller can stop or yield between segments. Yields the running count after each segment; the
 * last value is the answer.
 */
export function* primeCountSteps(n: number): Generator<number, number> {
  if (n <= 2) return 0;
  const limit = n - 1;
  const root = Math.floor(Math.sqrt(limit));
  const baseComposite = new Uint8Array(root + 1);
  const basePrimes: number[] = [];
  for (let i = 2; i <= root; i++) {
    if (baseComposite[i]) continue;
    basePrimes.push(i);
    for (let j = i * i; j <= root; j += i) baseComposite[j] = 1;
  }
  const segment = new Uint8Array(segmentSize);
  let count = 0;
  for (let low = 2; low <= limit; low += segmentSize) {
    const high = Math.min(low + segmentSize - 1, limit);
    segment.fill(0);
    for (const p of basePrimes) {
      if (p * p > high) break;
      const first = Math.max(p * p, Math.ceil(low / p) * p);
      for (let j = first; j <= high; j += p) segment[j - low] = 1;
    }
    for (let i = 0; i <= high - low; i++) if (!segment[i]) count++;
    if (high < limit) yield count;
  }
  return count;
}

/** The number of primes below `n`, computed in one go (for callers that need no yielding). */
export function countPrimesBelow(n: number): number {
  const steps = primeCountSteps(n);
  for (;;) {
    const step = steps.next();
    if (step.done) return step.value;
  }
}

/**
 * Counts the primes below `n`: deterministic CPU-bound work whose result is easy to check. The
 * result is the count, a number. Between sieve segments it lets the event loop run, so lease
 * renewals and other tasks are not starved, and it stops when its signal aborts.
 */
export default defineTask({
  payload: z.object({ n: z.number().int().min(1).max(maxN) }),
  async run({ n }, { signal }) {
    const steps = primeCountSteps(n);
    for (;;) {
      const step = steps.next();
      if (step.done) return step.value;
      await yieldToEventLoop();
      signal.throwIfAborted();
    }
  },
});
