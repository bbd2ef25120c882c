/** One task to submit, as the master's API takes it. */
export interface TaskRequest {
  type: "echo" | "sleep" | "cpu";
  payload: Record<string, unknown>;
}

/**
 * `count` tasks of the worker's three built-in kinds, in a fixed interleaved order: echo (instant),
 * sleep (100–600 ms, so workers hold leases when they are killed) and cpu (small prime counts).
 * Deterministic, so a failure can be reproduced.
 */
export function mixedTasks(count: number): TaskRequest[] {
  return Array.from({ length: count }, (_, index): TaskRequest => {
    switch (index % 3) {
      case 0:
        return {
          type: "echo",
          payload: { index, text: `task ${index}`, nested: { even: index % 2 === 0 } },
        };
      case 1:
        return { type: "sleep", payload: { ms: 100 + ((index * 37) % 500) } };
      default:
        return { type: "cpu", payload: { n: 1_000 + ((index * 7_919) % 200_000) } };
    }
  });
}

/**
 * What a correct worker returns for `task`, computed here independently of the worker's code so
 * that a wrong handler cannot agree with itself.
 */
export function expectedResult(task: TaskRequest): unknown {
  switch (task.type) {
    case "echo":
      return task.payload;
    case "sleep":
      return { slept: task.payload.ms };
    case "cpu":
      return primesBelow(task.payload.n as number);
  }
}

/** The number of primes below `n`, by a plain sieve. */
export function primesBelow(n: number): number {
  if (n <= 2) return 0;
  const composite = new Uint8Array(n);
  let count = 0;
  for (let i = 2; i < n; i++) {
    if (composite[i]) continue;
    count++;
    for (let j = i * i; j < n; j += i) composite[j] = 1;
  }
  return count;
}
