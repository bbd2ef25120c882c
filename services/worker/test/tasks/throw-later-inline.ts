import { defineTask } from "../../src/task.js";
import throwLater from "./throw-later.js";

/** `throw-later`, declared inline: its timer throws on the worker's main thread. */
export default defineTask({ ...throwLater, isolation: "inline" });
