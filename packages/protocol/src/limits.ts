/**
 * Every limit of the master's HTTP surface, which its workers rely on too, in one place;
 * docs/api.md and docs/protocol.md list the same numbers, and the tests import them from here.
 */
export const limits = {
  /** Longest task id or lease id. */
  refMaxLength: 64,
  /** The master keeps this many characters of a failure's error and drops the rest. */
  errorMaxChars: 4096,
  /** `LEASE_SECONDS`, and so the `leaseSeconds` of every lease answer, is in this range. */
  leaseSecondsMin: 1,
  leaseSecondsMax: 3600,
  typeMaxLength: 100,
  idempotencyKeyMaxLength: 200,
  maxAttempts: 100,
  /** A task's `timeoutSeconds` is at most this. */
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
