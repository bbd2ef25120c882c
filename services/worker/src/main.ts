import { inspect } from "node:util";
import { runWorkerProcess } from "./worker-process.js";

/** The worker's entry point (`node dist/main.js`): see worker-process.ts. */
const exitCode = await runWorkerProcess().catch((error: unknown) => {
  process.stderr.write(
    `taskfleet worker: ${error instanceof Error ? error.stack : inspect(error)}\n`,
  );
  return 1;
});
// A task thread or a pending request must not keep a finished worker alive.
process.exit(exitCode);
