import { defineTask } from "../../src/task.js";
import stuck from "./stuck.js";

/** `stuck`, declared inline. */
export default defineTask({ ...stuck, isolation: "inline" });
