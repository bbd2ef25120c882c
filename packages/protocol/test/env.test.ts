import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ConfigError, readEnv } from "../src/env";
import { masterEnv } from "../src/master-env";
import { workerEnv } from "../src/worker-env";

function problems(spec: Parameters<typeof readEnv>[0], env: Record<string, string>): string[] {
  try {
    readEnv(spec, env);
  } catch (error) {
    assert.ok(error instanceof ConfigError);
    return error.problems;
  }
  return [];
}

const services = [
  ["master", masterEnv, { WORKER_TOKEN: "w" }],
  ["worker", workerEnv, { WORKER_TOKEN: "w", MASTER_URL: "http://127.0.0.1:8080" }],
] as const;

describe("the services' environment", () => {
  for (const [service, spec, valid] of services) {
    it(`${service}: reads a shared variable by the same rules as the other service`, () => {
      // Set but empty is a value, not "unset"; integers are plain digits; nothing is trimmed.
      assert.deepEqual(problems(spec, { ...valid, LOG_LEVEL: "" }), [
        'LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent (got "")',
      ]);
      assert.deepEqual(problems(spec, { ...valid, SHUTDOWN_GRACE_SECONDS: " 1e2" }), [
        'SHUTDOWN_GRACE_SECONDS must be an integer from 0 to 3600 (got " 1e2")',
      ]);
      assert.deepEqual(problems(spec, { ...valid, SHUTDOWN_GRACE_SECONDS: "12" }), []);
    });

    it(`${service}: never quotes a token, even a malformed one`, () => {
      const found = problems(spec, { ...valid, WORKER_TOKEN: "   " });
      assert.deepEqual(found, ["WORKER_TOKEN must be a non-empty string"]);
    });
  }

  it("gives a variable both services read the same range and default", () => {
    for (const name of Object.keys(masterEnv).filter((n) => n in workerEnv)) {
      const [master, worker] = [
        masterEnv[name as keyof typeof masterEnv],
        workerEnv[name as keyof typeof workerEnv],
      ];
      assert.equal(master.allowed, worker.allowed, name);
      assert.equal(master.default, worker.default, name);
    }
  });
});
