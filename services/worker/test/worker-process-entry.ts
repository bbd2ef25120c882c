import * as path from "node:path";
import { runWorkerProcess } from "../src/worker-process.js";

/** The worker process as main.ts runs it, on the tests' task folder (./tasks) instead of its own. */
process.exit(await runWorkerProcess({ tasksDirectory: path.join(import.meta.dirname, "tasks") }));
