import { defineTask, z } from "../../src/task.js";

/**
 * Throws from a timer after `afterMs`, where no caller can catch it. With `returnAtOnce` the handler
 * itself succeeds first, so the error hits whatever task its thread runs next.
 */
export default defineTask({
  payload: z.object({ afterMs: z.number(), returnAtOnce: z.boolean().optional() }),
  run({ afterMs, returnAtOnce }) {
    setTimeout(() => {
      throw new Error("thrown from a timer");
    }, afterMs);
    return returnAtOnce ? "returned" : new Promise(() => {});
  },
});
