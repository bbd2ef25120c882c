import { defineTask, z } from "../../src/task.js";

/** Calls process.exit, as a careless library might. */
export default defineTask({
  payload: z.object({ code: z.number().int() }),
  run({ code }) {
    process.exit(code);
  },
});
