import { createHash, timingSafeEqual } from "node:crypto";
import type { FastifyReply, FastifyRequest } from "fastify";
import { errorBody } from "./http-errors.js";

function digest(value: string): Buffer {
  return createHash("sha256").update(value).digest();
}

// The scheme is case-insensitive (RFC 9110, section 11.1); the token itself is compared exactly.
const bearerScheme = /^bearer +/i;

/**
 * An `onRequest` hook that lets a request through only with `Authorization: Bearer <token>`.
 * Both sides are hashed first so the comparison takes the same time whatever the lengths.
 */
export function requireBearer(token: string) {
  const expected = digest(token);
  return async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const header = request.headers.authorization;
    if (header === undefined) {
      return unauthorized(reply, "Authorization header is missing (expected: Bearer <token>)");
    }
    const scheme = bearerScheme.exec(header);
    if (scheme === null || !timingSafeEqual(digest(header.slice(scheme[0].length)), expected)) {
      return unauthorized(reply, "Authorization header does not hold a valid bearer token");
    }
  };
}

function unauthorized(reply: FastifyReply, message: string): FastifyReply {
  return reply.code(401).header("www-authenticate", "Bearer").send(errorBody(401, message));
}
