import { randomBytes } from "node:crypto";

// 12 random bytes make a 16-character base64url id: 96 bits, so a collision is not expected
// before about 2^48 ids, and the store still checks. One refill serves 1,365 ids, which keeps
// batch submission off the per-call cost of the system's random source.
const ID_BYTES = 12;
const POOL_BYTES = ID_BYTES * 1365;
let pool = randomBytes(POOL_BYTES);
let offset = 0;

/** A compact, URL-safe, random task id. */
export function newTaskId(): string {
  if (offset + ID_BYTES > POOL_BYTES) {
    pool = randomBytes(POOL_BYTES);
    offset = 0;
  }
  const id = pool.toString("base64url", offset, offset + ID_BYTES);
  offset += ID_BYTES;
  return id;
}
