import { z } from "zod";
import { defineTask } from "../task.js";

/** Returns its payload unchanged: the cheapest possible task, for smoke tests and benchmarks. */
export default defineTask({
  payload: z.unknown(),
  run: (payload) => payload ?? null,
});
