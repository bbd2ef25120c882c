// A test-only task type, run from a copy of the built worker (worker-copy.ts): this file sits in
// the copy's dist/tasks/, beside the built task.js it imports. It sleeps as `sleep` does and
// appends each run's start, end or abort to the file named by TASK_JOURNAL, one JSON line each,
// so a test sees every run a handler began, whatever the worker or the master say about it.
import { appendFileSync } from "node:fs";
import { defineTask, delay, z } from "../task.js";

const journal = process.env.TASK_JOURNAL;
if (!journal) throw new Error("journaled-sleep: TASK_JOURNAL names no file");

/** One line per write: appends this short are never interleaved between processes. */
function note(event, { id, attempt }) {
  const line = { event, id, attempt, pid: process.pid, at: Date.now() };
  appendFileSync(journal, `${JSON.stringify(line)}\n`);
}

/** Waits `ms` milliseconds, then returns `{ id, slept: ms }`. */
export default defineTask({
  payload: z.object({ ms: z.number().int().min(0).max(60_000) }),
  async run({ ms }, context) {
    note("start", context);
    try {
      await delay(ms, context.signal);
    } catch (error) {
      note("aborted", context);
      throw error;
    }
    note("end", context);
    return { id: context.id, slept: ms };
  },
});
