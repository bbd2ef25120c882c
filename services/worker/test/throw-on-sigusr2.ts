import { isMainThread } from "node:worker_threads";

/**
 * Preloaded (`--import`) into a worker process by a test: on SIGUSR2 the main thread throws from a
 * timer, an error nothing catches, as a bug in the worker's own code would. Task threads inherit
 * the preload; they leave it alone.
 */
if (isMainThread) {
  process.on("SIGUSR2", () => {
    setTimeout(() => {
      throw new Error("a bug in the worker itself");
    });
  });
}
