/**
 * Every limit of the master's HTTP surface in one place; docs/api.md and docs/protocol.md list
 * the same numbers, and the tests import them from here.
 */
export const limits = {
  typeMaxLength: 100,
  idempotencyKeyMaxLength: 200,
  maxAttempts: 100,
  timeoutSeconds: 86_400,
  batchMaxTasks: 10_000,
  waitSecondsMax: 60,
  workerIdMaxLength: 200,
  leaseMax: 256,
  leaseWaitMsMax: 30_000,
  /** Leases or results in one renew, complete or release call. */
  workerBatchMax: 10_000,
  /**
   * Arrays and objects nested in one payload or result. Anything that walks a value recursively
   * (a response serializer, a worker's handler) overflows its stack somewhere past a few thousand
   * levels; real payloads stay far below this.
   */
  payloadDepthMax: 64,
} as const;

/**
 * Room kept between the body limit and the largest payload, so that a payload that fits a
 * submission also fits a completion as the result: `{"workerId", "results": [{"id", "leaseId",
 * "ok", "result"}]}` around it takes about 300 bytes, and 2 KB with every field at its longest.
 */
export const RESULT_ENVELOPE_BYTES = 4096;

/** The largest payload (and the largest result) as JSON bytes: the body limit less the envelope. */
export function maxPayloadBytes(bodyLimitBytes: number): number {
  return bodyLimitBytes - RESULT_ENVELOPE_BYTES;
}

/**
 * Full-size results a `complete` body has room for: a worker sends the results of one event-loop
 * turn together, at most its CONCURRENCY (4 by default) at a time.
 */
export const COMPLETE_BODY_RESULTS = 4;

/** The body limit of `POST /worker/v1/complete`, which carries results rather than payloads. */
export function completeBodyLimitBytes(bodyLimitBytes: number): number {
  return bodyLimitBytes * COMPLETE_BODY_RESULTS;
}

/**
 * One lease answer carries at most this many payload bytes (and always at least one task), so
 * that `max: 256` over full-size payloads does not build a quarter-gigabyte response. The same
 * as a completion's limit: what a worker takes in one answer, it can give back in one request.
 */
export function leaseResponseMaxBytes(bodyLimitBytes: number): number {
  return bodyLimitBytes * COMPLETE_BODY_RESULTS;
}

/**
 * What a task costs the memory budget besides its payload or result: the record, its id, its map
 * and queue entries. Measured at about 310 bytes on the heap with a small payload
 * (test/services/master/memory.test.ts holds the constant to the measurement), rounded up.
 */
export const TASK_OVERHEAD_BYTES = 512;

/**
 * Heap the master needs besides a full memory budget: its own baseline and the requests in
 * flight, parsed before the budget can refuse them (a 4 MiB completion of `[{},{},…]` takes
 * about 85 MiB while it is parsed). Measured: a full 256 MiB budget of the worst shapes ran in a
 * 400 MiB heap, of 1 MB strings in a 320 MiB one.
 */
export const HEAP_HEADROOM_BYTES = 160 * 1024 * 1024;

/** Sent with every 503 (draining, or over the memory budget): when to try again. */
export const RETRY_AFTER_SECONDS = 5;

/**
 * A socket with no traffic at all for this long is closed. Longer than the longest wait a client
 * may ask for (`waitSeconds` up to 60), during which its socket is legitimately quiet.
 */
export const SOCKET_IDLE_TIMEOUT_MS = (limits.waitSecondsMax + 30) * 1000;

/**
 * How long a keep-alive connection may sit idle between requests. Workers poll back-to-back and
 * Node's agent closes its side a second earlier (it reads the `Keep-Alive` header), so a short
 * value costs them nothing and frees the slots of idle connections under MAX_CONNECTIONS.
 */
export const KEEP_ALIVE_TIMEOUT_MS = 10_000;

/**
 * How often Node checks the header and request timeouts; it checks every 30 s by default, which
 * would let a slow client outlive a 10 s timeout threefold.
 */
export const TIMEOUT_CHECK_INTERVAL_MS = 1000;

/**
 * Distinct worker ids remembered for `activeWorkers`; more are not counted, so a client inventing
 * a new id per request cannot grow the map without bound.
 */
export const TRACKED_WORKERS_MAX = 10_000;
