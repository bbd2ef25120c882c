import { randomBytes } from "node:crypto";

// Ids are cut from a pool of random bytes refilled 16 KB at a time, which keeps batch submission
// off the per-call cost of the system's random source. Each byte is used once.
const POOL_BYTES = 16_384;
let pool = randomBytes(POOL_BYTES);
let offset = 0;

/** Where the next `bytes` unused random bytes start in `pool`. */
function take(bytes: number): number {
  if (offset + bytes > POOL_BYTES) {
    pool = randomBytes(POOL_BYTES);
    offset = 0;
  }
  const start = offset;
  offset += bytes;
  return start;
}

function randomId(bytes: number): string {
  const start = take(bytes);
  return pool.toString("base64url", start, start + bytes);
}

/** Bytes of a task id: 16 characters of base64url. */
const TASK_ID_BYTES = 12;
const TASK_ID_CHARS = 16;

/**
 * A compact, URL-safe, random task id: 12 bytes make 16 characters, 96 bits, so a collision is
 * not expected before about 2^48 ids (and the store still checks).
 */
export function newTaskId(): string {
  return randomId(TASK_ID_BYTES);
}

/** Bytes of a slotted id that name its slot: 3, the first 4 characters. */
const SLOT_BYTES = 3;
const SLOT_CHARS = 4;
/** Slots a slotted id can name: 2^24, as many entries as V8 lets one `Map` hold. */
export const SLOTS_MAX = 2 ** (8 * SLOT_BYTES);

const BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/** The value of each base64url character by its code; -1 for any other ASCII character. */
const DIGITS = new Int8Array(128).fill(-1);
for (let i = 0; i < BASE64URL.length; i++) DIGITS[BASE64URL.charCodeAt(i)] = i;

/**
 * A task id that also names a slot of a `SlotTable`: the slot in its first 3 bytes, then 9 random
 * bytes (72 bits, not guessable from ids seen before), 16 characters like every task id. Two live
 * tasks never share a slot, so two live ids never collide.
 */
export function newSlottedId(slot: number): string {
  const start = take(TASK_ID_BYTES);
  pool[start] = slot >>> 16;
  pool[start + 1] = (slot >>> 8) & 0xff;
  pool[start + 2] = slot & 0xff;
  return pool.toString("base64url", start, start + TASK_ID_BYTES);
}

/** The slot `id` names if it has the shape of a slotted id; -1 if it cannot be one. */
export function slotOf(id: string): number {
  if (id.length !== TASK_ID_CHARS) return -1;
  let slot = 0;
  for (let i = 0; i < SLOT_CHARS; i++) {
    const code = id.charCodeAt(i);
    const digit = code < 128 ? (DIGITS[code] as number) : -1;
    if (digit < 0) return -1;
    slot = slot * 64 + digit;
  }
  return slot;
}

/**
 * A lease id: 16 random bytes, 22 characters. A lease id is what lets a worker complete a task,
 * so it must not be guessable from the ones a worker has seen: 128 bits, not a counter.
 */
export function newLeaseId(): string {
  return randomId(16);
}
