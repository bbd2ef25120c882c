import { defineTask } from "../../src/task.js";
import fail from "../../src/tasks/fail.js";

/** The built-in `fail`, declared inline. */
export default defineTask({ ...fail, isolation: "inline" });
