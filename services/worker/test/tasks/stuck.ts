import { writeFileSync } from "node:fs";
import { defineTask, z } from "../../src/task.js";

/**
 * Never returns. Writes `<marker>.started` when it starts and, when its signal fires, `marker` with
 * the signal's reason, after `cleanupMs` (as a handler that cleans up would), so a test in another
 * thread can see that the handler was told to stop and given time to.
 */
export default defineTask({
  payload: z.object({ marker: z.string().optional(), cleanupMs: z.number().optional() }).nullish(),
  run: (payload, { signal }) =>
    new Promise(() => {
      const marker = payload?.marker;
      if (!marker) return;
      writeFileSync(`${marker}.started`, "");
      signal.addEventListener("abort", () => {
        setTimeout(
          () => writeFileSync(marker, String(signal.reason?.name)),
          payload?.cleanupMs ?? 0,
        );
      });
    }),
});
