import { inspect } from "node:util";
import { limits } from "@taskfleet/protocol/limits";

/** What one run of a handler came to, as its thread reports it. */
export type HandlerOutcome =
  | { ok: true; resultJson: string }
  | { ok: false; error: string; retryable: boolean };

/**
 * One line of text for whatever a handler threw, that never throws itself: handlers throw strings,
 * plain objects, `Object.create(null)` (which has no `toString`, so `String()` throws), Proxies
 * whose traps throw, errors whose `message` is a throwing getter. Cut to the length the master
 * keeps, so a huge message costs neither memory nor a refused request.
 */
export function describeThrown(thrown: unknown): string {
  let text: string;
  try {
    if (typeof thrown === "string") {
      text = thrown;
    } else if (thrown instanceof Error) {
      const message: unknown = thrown.message;
      text =
        typeof message === "string" && message !== ""
          ? message
          : typeof thrown.name === "string"
            ? thrown.name
            : "Error";
    } else {
      text = inspect(thrown, { depth: 2, breakLength: Number.POSITIVE_INFINITY });
    }
  } catch {
    text = "the handler threw a value that cannot be described";
  }
  return text.length > limits.errorMaxChars ? text.slice(0, limits.errorMaxChars) : text;
}

/**
 * A handler's return value as the JSON text of its result (`undefined` becomes `null`), or a
 * failure that no retry can fix when it is not JSON or serializes to more than `maxBytes`: a
 * result too large for the master would otherwise be refused on every attempt.
 */
export function serializeResult(value: unknown, maxBytes: number): HandlerOutcome {
  const result = value === undefined ? null : value;
  if (typeof result === "bigint" || typeof result === "function" || typeof result === "symbol") {
    return {
      ok: false,
      error: `the handler returned a ${typeof result}, not JSON`,
      retryable: false,
    };
  }
  let json: string | undefined;
  try {
    json = JSON.stringify(result);
  } catch (error) {
    return {
      ok: false,
      error: `the handler's result is not JSON: ${describeThrown(error)}`,
      retryable: false,
    };
  }
  if (json === undefined) {
    return { ok: false, error: "the handler's result is not JSON", retryable: false };
  }
  // UTF-8 takes at least one byte per UTF-16 unit, so the length alone rules out most large
  // results without encoding them.
  const atLeast = json.length > maxBytes;
  const bytes = atLeast ? json.length : Buffer.byteLength(json);
  if (bytes > maxBytes) {
    return {
      ok: false,
      error: `the handler's result is ${atLeast ? "at least " : ""}${bytes} bytes of JSON, more than the ${maxBytes} this worker may send (MAX_RESULT_BYTES)`,
      retryable: false,
    };
  }
  return { ok: true, resultJson: json };
}
