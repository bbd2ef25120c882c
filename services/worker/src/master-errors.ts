/** How a call to the master fails, whether it went as an HTTP request or on the worker stream. */

/** The master could not be reached or answered 5xx: worth retrying later. */
export class MasterUnavailableError extends Error {
  override name = "MasterUnavailableError";
}

/** The master refused the request (4xx): retrying the same request will not help. */
export class MasterRejectedError extends Error {
  override name = "MasterRejectedError";
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/**
 * The error for a master's answer of `status` (not 2xx) to `what` (`POST /worker/v1/lease`,
 * `lease on the worker stream`), whose body says why in `message` (the API's error body) or as
 * text.
 */
export function answerError(what: string, status: number, body: unknown): Error {
  const detail = describe(body);
  const message = `${what} answered ${status}${detail ? `: ${detail}` : ""}`;
  // 408 and 429 are the master asking to come back later, like a 5xx.
  if (status >= 500 || status === 408 || status === 429) return new MasterUnavailableError(message);
  return new MasterRejectedError(message, status);
}

function describe(body: unknown): string {
  if (typeof body === "object" && body !== null) {
    const { message } = body as { message?: unknown };
    if (typeof message === "string") return message;
  }
  if (typeof body !== "string") return "";
  try {
    const parsed = JSON.parse(body) as { message?: unknown };
    if (typeof parsed.message === "string") return parsed.message;
  } catch {
    // Not JSON: fall through to the raw text.
  }
  return body.slice(0, 200);
}
