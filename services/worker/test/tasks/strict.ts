import { defineTask, PermanentTaskError, z } from "../../src/task.js";

/** Fails in a way no retry can fix. */
export default defineTask({
  payload: z.unknown(),
  run() {
    throw new PermanentTaskError("no such account");
  },
});
