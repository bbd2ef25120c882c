import { z } from "zod";
import { defineTask } from "../task.js";

/**
 * Returns its payload unchanged: the cheapest possible task, for smoke tests and benchmarks. It
 * cannot block or throw, so it runs inline, on the worker's main thread, without a thread's cost.
 */
export default defineTask({
  payload: z.unknown(),
  run: (payload) => payload ?? null,
  isolation: "inline",
});
