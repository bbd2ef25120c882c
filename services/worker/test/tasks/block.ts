import { writeFileSync } from "node:fs";
import { defineTask, z } from "../../src/task.js";

/**
 * Blocks its thread's event loop for `ms` (no timer, no promise runs meanwhile), then returns.
 * Writes `<marker>.started` first, if given, so a test can wait until it blocks.
 */
export default defineTask({
  payload: z.object({ ms: z.number(), marker: z.string().optional() }),
  run({ ms, marker }) {
    if (marker) writeFileSync(`${marker}.started`, "");
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
    return { blocked: ms };
  },
});
