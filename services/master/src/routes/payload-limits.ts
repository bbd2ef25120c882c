import { limits } from "@taskfleet/protocol/limits";
import { jsonBytes, measureHeap } from "../json-body.js";

/** A payload or result within the limits: its size as JSON and its estimated heap size. */
export interface Measured {
  bytes: number;
  memoryBytes: number;
}

/**
 * Checks a payload or a result against the limits every value the master stores must meet: a
 * depth (checked first, without recursion, so that measuring the size cannot overflow the stack)
 * and a size as JSON. Answers the sizes, or a message that names the field and the limit.
 */
export function measureValue(
  value: unknown,
  field: string,
  maxBytes: number,
): Measured | { problem: string } {
  const memoryBytes = measureHeap(value, limits.payloadDepthMax);
  if (memoryBytes === undefined) {
    return {
      problem: `${field} nests arrays and objects deeper than the limit of ${limits.payloadDepthMax} levels`,
    };
  }
  const bytes = jsonBytes(value);
  if (bytes > maxBytes) {
    return {
      problem: `${field} is ${bytes} bytes as JSON, over the limit of ${maxBytes} bytes`,
    };
  }
  return { bytes, memoryBytes };
}
