import { defineTask, z } from "../../src/task.js";

/** Returns a string of `chars` characters: a result as large as a test needs. */
export default defineTask({
  payload: z.object({ chars: z.number().int().min(0) }),
  run: ({ chars }) => "x".repeat(chars),
});
