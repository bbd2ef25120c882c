import { createHash, timingSafeEqual } from "node:crypto";
import type { FastifyReply, FastifyRequest } from "fastify";
import { errorBody } from "./http-errors.js";

function digest(value: string): Buffer {
  return createHash("sha256").update(value).digest();
}

// The scheme is case-insensitive (RFC 9110, section 11.1); the token itself is compared exactly.
const bearerScheme = /^bearer +/i;

/**
 * Checks an `Authorization` header against `Bearer <token>`: what is wrong with it, or undefined
 * when it holds the token. Both sides are hashed first so the comparison takes the same time
 * whatever the lengths.
 */
export function bearerCheck(token: string): (header: string | undefined) => string | undefined {
  const expected = digest(token);
  return (header) => {
    if (header === undefined) {
      return "Authorization header is missing (expected: Bearer <token>)";
    }
    const scheme = bearerScheme.exec(header);
    if (scheme === null || !timingSafeEqual(digest(header.slice(scheme[0].length)), expected)) {
      return "Authorization header does not hold a valid bearer token";
    }
    return undefined;
  };
}

/** An `onRequest` hook that lets a request through only with `Authorization: Bearer <token>`. */
export function requireBearer(token: string) {
  const check = bearerCheck(token);
  return async (
    request: FastifyRequest,
    reply: FastifyReply,
  ): Promise<FastifyReply | undefined> => {
    const problem = check(request.headers.authorization);
    if (problem === undefined) return undefined;
    return reply.code(401).header("www-authenticate", "Bearer").send(errorBody(401, problem));
  };
}
