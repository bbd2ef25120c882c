import { randomBytes } from "node:crypto";

// Ids are cut from a pool of random bytes refilled 16 KB at a time, which keeps batch submission
// off the per-call cost of the system's random source. Each byte is used once.
const POOL_BYTES = 16_384;
let pool = randomBytes(POOL_BYTES);
let offset = 0;

function randomId(bytes: number): string {
  if (offset + bytes > POOL_BYTES) {
    pool = randomBytes(POOL_BYTES);
    offset = 0;
  }
  const id = pool.toString("base64url", offset, offset + bytes);
  offset += bytes;
  return id;
}

/**
 * A compact, URL-safe, random task id: 12 bytes make 16 characters, 96 bits, so a collision is
 * not expected before about 2^48 ids (and the store still checks).
 */
export function newTaskId(): string {
  return randomId(12);
}

/**
 * A lease id: 16 random bytes, 22 characters. A lease id is what lets a worker complete a task,
 * so it must not be guessable from the ones a worker has seen: 128 bits, not a counter.
 */
export function newLeaseId(): string {
  return randomId(16);
}
