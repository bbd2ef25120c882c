import { z } from "zod";
import { defineTask, delay } from "../task.js";

/** Waits `ms` milliseconds without using the CPU, then returns `{ "slept": ms }`. */
export default defineTask({
  payload: z.object({ ms: z.number().int().min(0).max(86_400_000) }),
  async run({ ms }, { signal }) {
    await delay(ms, signal);
    return { slept: ms };
  },
});
