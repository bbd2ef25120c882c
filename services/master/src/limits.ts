/**
 * The master's own limits and timings. The limits of the HTTP surface, which workers rely on too,
 * are in @taskfleet/protocol/limits.
 */
import { limits } from "@taskfleet/protocol/limits";

/**
 * What a task costs the memory budget besides its payload or result: the record, its id, its table
 * and queue slots, and once leased its attempts. Measured at about 160 bytes on the heap for a
 * queued task with a small payload (services/master/test/memory.test.ts holds the constant to the
 * measurement) and 460 for a finished one with a small result, rounded up.
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

/**
 * How often the master pings each worker stream; a stream that has not answered the ping before
 * the next one is closed, so a worker gone without a word (its node lost) does not hold a stream
 * and its long poll for ever.
 */
export const STREAM_PING_INTERVAL_MS = 30_000;
