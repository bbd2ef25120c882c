import { defineTask, delay, z } from "../../src/task.js";

/** Waits `ms` and returns when it ran (wall-clock ms), so a test can see how many overlapped. */
export default defineTask({
  payload: z.object({ ms: z.number() }),
  async run({ ms }) {
    const start = performance.timeOrigin + performance.now();
    await delay(ms);
    return { start, end: performance.timeOrigin + performance.now() };
  },
});
