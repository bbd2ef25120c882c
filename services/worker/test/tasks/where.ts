import { isMainThread } from "node:worker_threads";
import { defineTask, z } from "../../src/task.js";

/** Says whether it ran on the worker's main thread. */
export default defineTask({
  payload: z.null(),
  run: () => ({ isMainThread }),
});
