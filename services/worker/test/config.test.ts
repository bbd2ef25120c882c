import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ConfigError, loadConfig } from "../src/config.js";

const valid = { MASTER_URL: "http://127.0.0.1:8080", WORKER_TOKEN: "s3cret-token" };

function problemWith(env: Record<string, string>): string {
  try {
    loadConfig(env);
  } catch (error) {
    assert.ok(error instanceof ConfigError);
    return error.message;
  }
  assert.fail("expected the environment to be rejected");
}

describe("worker config", () => {
  it("applies the documented defaults", () => {
    const config = loadConfig({ ...valid, MASTER_URL: "http://127.0.0.1:8080/" });
    assert.equal(config.masterUrl, "http://127.0.0.1:8080");
    assert.equal(config.concurrency, 4);
    assert.equal(config.shutdownGraceSeconds, 25);
    assert.equal(config.logLevel, "info");
    assert.equal(config.maxResultBytes, 1_048_576 - 4096);
    assert.equal(config.resultBufferBytes, 16 * 1_048_576);
    assert.match(config.workerId, new RegExp(`-${process.pid}$`));
  });

  it("reads every variable", () => {
    const config = loadConfig({
      ...valid,
      CONCURRENCY: "16",
      WORKER_ID: "w-1",
      SHUTDOWN_GRACE_SECONDS: "0",
      LOG_LEVEL: "debug",
      MAX_RESULT_BYTES: "4190208",
      RESULT_BUFFER_BYTES: "1048576",
    });
    assert.deepEqual(config, {
      masterUrl: "http://127.0.0.1:8080",
      workerToken: "s3cret-token",
      concurrency: 16,
      workerId: "w-1",
      shutdownGraceSeconds: 0,
      maxResultBytes: 4_190_208,
      resultBufferBytes: 1_048_576,
      logLevel: "debug",
    });
  });

  const rejected: [Record<string, string>, string][] = [
    [{ WORKER_TOKEN: "t" }, "MASTER_URL must be set to an http:// or https:// URL"],
    [{ ...valid, MASTER_URL: "127.0.0.1:8080" }, "MASTER_URL must be an http:// or https:// URL"],
    [{ MASTER_URL: valid.MASTER_URL }, "WORKER_TOKEN must be set to a non-empty string"],
    [{ ...valid, WORKER_TOKEN: "" }, "WORKER_TOKEN must be a non-empty string"],
    [{ ...valid, CONCURRENCY: "0" }, 'CONCURRENCY must be an integer from 1 to 256 (got "0")'],
    [{ ...valid, CONCURRENCY: "2.5" }, 'CONCURRENCY must be an integer from 1 to 256 (got "2.5")'],
    [{ ...valid, CONCURRENCY: "257" }, 'CONCURRENCY must be an integer from 1 to 256 (got "257")'],
    [
      { ...valid, SHUTDOWN_GRACE_SECONDS: "-1" },
      'SHUTDOWN_GRACE_SECONDS must be an integer from 0 to 3600 (got "-1")',
    ],
    [
      { ...valid, MAX_RESULT_BYTES: "1023" },
      'MAX_RESULT_BYTES must be an integer from 1024 to 268435456 (got "1023")',
    ],
    [
      { ...valid, RESULT_BUFFER_BYTES: "65536" },
      'RESULT_BUFFER_BYTES must be an integer from 1048576 to 1073741824 (got "65536")',
    ],
    [{ ...valid, LOG_LEVEL: "loud" }, "LOG_LEVEL must be one of fatal, error, warn, info"],
    [
      { ...valid, WORKER_ID: "  " },
      'WORKER_ID must be a non-blank string of at most 200 characters (got "  ")',
    ],
    // Set but empty is a value, and not an allowed one: as for the master.
    [{ ...valid, LOG_LEVEL: "" }, "LOG_LEVEL must be one of fatal, error, warn, info"],
    [
      { ...valid, CONCURRENCY: " 1e2" },
      'CONCURRENCY must be an integer from 1 to 256 (got " 1e2")',
    ],
  ];
  for (const [env, message] of rejected) {
    it(`rejects ${JSON.stringify(env)} with "${message}"`, () => {
      assert.ok(problemWith(env).includes(message), problemWith(env));
    });
  }

  it("names every bad variable at once and never echoes the token", () => {
    const message = problemWith({ WORKER_TOKEN: "s3cret-token", CONCURRENCY: "x" });
    assert.match(message, /MASTER_URL/);
    assert.match(message, /CONCURRENCY/);
    assert.doesNotMatch(message, /s3cret-token/);
  });
});
