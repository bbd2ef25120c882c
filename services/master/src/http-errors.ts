import { maxHeaderSize, STATUS_CODES } from "node:http";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import type {
  FastifyError,
  FastifyReply,
  FastifyRequest,
  FastifySchemaValidationError,
} from "fastify";
import { RETRY_AFTER_SECONDS } from "./limits.js";
import { StoreUnavailableError } from "./store/task-store.js";

/** Every error the API returns has this body: a stable code and a message naming the problem. */
export interface ErrorBody {
  error: string;
  message: string;
}

const codeByStatus: Record<number, string> = {
  400: "BadRequest",
  401: "Unauthorized",
  403: "Forbidden",
  404: "NotFound",
  405: "MethodNotAllowed",
  408: "RequestTimeout",
  413: "PayloadTooLarge",
  415: "UnsupportedMediaType",
  429: "TooManyRequests",
  431: "RequestHeaderFieldsTooLarge",
  503: "ServiceUnavailable",
};

export function errorBody(status: number, message: string): ErrorBody {
  return {
    error: codeByStatus[status] ?? (status >= 500 ? "InternalServerError" : "BadRequest"),
    message,
  };
}

/** The answer to a request the store could not serve (Redis unreachable): nothing changed. */
export const storeUnavailableMessage = "the task store is unavailable; try again shortly";

/** A 503 that tells the client when to come back (`Retry-After`, in seconds). */
export function unavailable(reply: FastifyReply, message: string): FastifyReply {
  return reply
    .code(503)
    .header("retry-after", String(RETRY_AFTER_SECONDS))
    .send(errorBody(503, message));
}

/**
 * Turns ajv's first error into one sentence that starts with the field's path
 * ("body/tasks/3/type must be string"), including for the keywords whose stock message leaves the
 * field out (an unknown or a missing property).
 */
export function formatSchemaError(errors: FastifySchemaValidationError[], dataVar: string): Error {
  const first = errors[0];
  if (first === undefined) return new Error(`${dataVar} is not valid`);
  const path = `${dataVar}${first.instancePath}`;
  const params = first.params as Record<string, unknown>;
  let message: string;
  switch (first.keyword) {
    case "required":
      message = `${path}/${String(params.missingProperty)} is required`;
      break;
    case "additionalProperties":
      message = `${path}/${String(params.additionalProperty)} is not an allowed property`;
      break;
    case "enum":
      message = `${path} must be one of ${JSON.stringify(params.allowedValues)}`;
      break;
    default:
      message = `${path} ${first.message ?? "is not valid"}`;
  }
  return new Error(message);
}

/**
 * Answers a request Node could not parse, or that did not arrive whole in time, before the socket
 * is closed. Fastify's own answer has no `Connection: close`, so a keep-alive client would send
 * its next request on the closing socket and see a reset; this one also has the API's error body.
 */
export function handleClientError(
  error: Error & { code?: string; reason?: string },
  socket: Socket,
): void {
  if (error.code === "ECONNRESET" || socket.destroyed) return;
  let status = 400;
  let message = `the request is not valid HTTP: ${error.reason ?? error.message}`;
  if (error.code === "ERR_HTTP_REQUEST_TIMEOUT") {
    status = 408;
    message = "the request did not arrive whole in time";
  } else if (error.code === "HPE_HEADER_OVERFLOW") {
    status = 431;
    message = `the request's headers are larger than the limit of ${maxHeaderSize} bytes`;
  }
  answerOnSocket(socket, status, message);
}

/**
 * Writes an error answer straight to a socket that Node's HTTP server no longer answers on (a
 * request it could not parse, an upgrade it handed over) and closes it.
 */
export function answerOnSocket(
  socket: Duplex,
  status: number,
  message: string,
  headers: Record<string, string> = {},
): void {
  if (socket.writable) {
    const body = JSON.stringify(errorBody(status, message));
    const extra = Object.entries(headers)
      .map(([name, value]) => `${name}: ${value}\r\n`)
      .join("");
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nconnection: close\r\n${extra}content-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}

/**
 * The one error handler: 4xx answers say what was wrong with the request, anything else is logged
 * and answered without internals.
 */
export function handleError(
  error: FastifyError,
  request: FastifyRequest,
  reply: FastifyReply,
): void {
  if (error.validation !== undefined) {
    reply.code(400).send(errorBody(400, error.message));
    return;
  }
  const status = error.statusCode ?? 500;
  let message = error.message;
  switch (error.code) {
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      // Routes differ: `complete` takes several results where the others take one payload.
      message = `body is larger than the limit of ${request.routeOptions.bodyLimit} bytes`;
      break;
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      message = `content-type must be application/json (got ${JSON.stringify(request.headers["content-type"] ?? "")})`;
      break;
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      message = "body is empty but content-type is application/json";
      break;
  }
  if (error instanceof StoreUnavailableError) {
    // Nothing is known to have changed: the client tries again, after Retry-After.
    request.log.warn({ err: error.message }, "task store unavailable");
    unavailable(reply, storeUnavailableMessage);
    return;
  }
  if (status >= 400 && status < 500) {
    request.log.debug({ err: error, status }, "request rejected");
    reply.code(status).send(errorBody(status, message));
    return;
  }
  request.log.error({ err: error }, "request failed");
  reply.code(500).send(errorBody(500, "internal error"));
}
