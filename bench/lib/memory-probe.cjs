// Preloaded into the taskfleet master by the benchmark's memory scenario only
// (`node --expose-gc --require bench/lib/memory-probe.cjs …`), so the master's code stays as it
// ships. On a request over the IPC channel, it runs full garbage collections until the heap stops
// shrinking and answers with process.memoryUsage(): the benchmark then reads the settled RSS.
"use strict";

const REQUEST = "taskfleet-bench:memory";

if (typeof process.send === "function" && typeof globalThis.gc === "function") {
  process.on("message", (message) => {
    if (message === null || typeof message !== "object" || message.type !== REQUEST) return;
    void settle().then((usage) => process.send({ type: REQUEST, usage }));
  });
  // The channel must not keep the master alive: it exits on SIGTERM exactly as it would alone.
  process.channel?.unref();
}

async function settle() {
  let previous = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 10; i++) {
    globalThis.gc();
    // Lets finalizers and weak callbacks run between collections.
    await new Promise((resolve) => setImmediate(resolve));
    const used = process.memoryUsage().heapUsed;
    if (used >= previous * 0.999) break;
    previous = used;
  }
  return process.memoryUsage();
}
