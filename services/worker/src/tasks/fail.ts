import { z } from "zod";
import { defineTask } from "../task.js";

/**
 * Always throws, so every attempt fails and is retried until the task's `maxAttempts` run out:
 * shows what a failing task looks like. `{"message"}` sets the error text.
 */
export default defineTask({
  payload: z.object({ message: z.string().max(1000).optional() }).nullish(),
  run(payload) {
    throw new Error(payload?.message ?? "the fail task always fails");
  },
});
