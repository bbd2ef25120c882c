import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import { captureLogger } from "./helpers.js";

describe("worker logs", () => {
  it("are JSON lines that name the service and the level by name, as the master's are", () => {
    const { logger, lines } = captureLogger();
    logger.warn({ taskId: "t1" }, "lease lost");
    assert.deepEqual(
      lines.map(({ service, level, msg, taskId }) => ({ service, level, msg, taskId })),
      [{ service: "taskfleet-worker", level: "warn", msg: "lease lost", taskId: "t1" }],
    );
  });
});
