import { defineTask, z } from "../../src/task.js";

/** Throws a value without a prototype: `String()` of it throws in turn. */
export default defineTask({
  payload: z.unknown(),
  run() {
    throw Object.create(null);
  },
});
