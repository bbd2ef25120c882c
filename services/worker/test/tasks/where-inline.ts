import { defineTask } from "../../src/task.js";
import where from "./where.js";

/** `where`, declared inline. */
export default defineTask({ ...where, isolation: "inline" });
