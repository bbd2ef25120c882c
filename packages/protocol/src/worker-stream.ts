/**
 * The worker stream (docs/protocol.md, "The worker stream"): the four worker routes as calls over
 * one WebSocket, so that a busy worker's messages pay for no HTTP request each. A call carries the
 * body its route takes and is answered with the status and body the route answers; what the
 * master checks and does is the route's own.
 */

/** Where a worker opens its stream (an HTTP `GET` that upgrades to a WebSocket). */
export const WORKER_STREAM_PATH = "/worker/v1/stream";

/** The calls a stream carries: the worker routes of the same names. */
export const workerCallNames = ["lease", "renew", "complete", "release"] as const;
export type WorkerCallName = (typeof workerCallNames)[number];

/**
 * A call from the worker. `id` is the worker's own number for it (an integer from 1 to
 * {@link STREAM_CALL_ID_MAX}), unique among its calls in flight; the answer carries it back.
 */
export interface StreamCall {
  id: number;
  call: WorkerCallName;
  body: unknown;
}

/**
 * Withdraws call `id` (a lease that waits, when the worker stops): the master stops waiting and
 * answers it at once with what it has. No answer of its own.
 */
export interface StreamCancel {
  id: number;
  cancel: true;
}

/** The master's answer to call `id`: the HTTP status and body its route would answer. */
export interface StreamAnswer {
  id: number;
  status: number;
  body: unknown;
}

/**
 * The master's notice that it is shutting down: the worker sends no more calls on this stream,
 * opens another (which the Service routes to a master that is not going away) for its next call,
 * and closes this one once its calls in flight here are answered. A master closes its streams
 * itself when it stops.
 */
export interface StreamGoingAway {
  goingAway: true;
}

/** The notice as the master sends it. */
export const STREAM_GOING_AWAY_MESSAGE = '{"goingAway":true}';

/** The largest call id: ids fit a JSON number exactly and a worker wraps around long before. */
export const STREAM_CALL_ID_MAX = 2 ** 31 - 1;

/**
 * Calls one stream may have in flight at once; the master answers any beyond them 429 at once. A
 * worker has at most one call of each kind in flight, so this leaves it room and bounds what one
 * token holder can make the master hold.
 */
export const STREAM_CALLS_IN_FLIGHT_MAX = 16;

/** What a call's envelope adds to its body, at most (`{"id":…,"call":"complete","body":…}`). */
export const STREAM_ENVELOPE_BYTES = 64;

/**
 * Close codes the master sends (RFC 6455, 7.4.1): 1001 going away (the master stopped), 1008 a
 * message that is not a call, 1009 a message larger than the largest body the worker routes take.
 */
export const streamCloseCodes = {
  goingAway: 1001,
  notACall: 1008,
  tooLarge: 1009,
} as const;
