import { connectEngine, EngineUnreachableError } from "./engine.js";

// Runs before the container tests so that a machine without Docker gets one clear line and a
// non-zero exit, not a test runner's stack trace. It was asked to run, so a missing engine is a
// failure both in CI and on a workstation.
connectEngine().catch((error: unknown) => {
  if (!(error instanceof EngineUnreachableError)) throw error;
  console.error(error.message);
  process.exit(1);
});
