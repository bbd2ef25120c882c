import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as path from "node:path";
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

describe("docs/protocol.md's tables of variables", () => {
  const doc = readFileSync(path.resolve(import.meta.dirname, "../../../docs/protocol.md"), "utf8");
  /** The rows of the table under `### <heading>`: name → default column. */
  function table(heading: string): Map<string, string> {
    const lines = (doc.split(`### ${heading}\n`)[1] ?? "").split("\n");
    const start = lines.findIndex((line) => line.startsWith("|"));
    const end = lines.findIndex((line, i) => i > start && !line.startsWith("|"));
    const rows = new Map<string, string>();
    for (const line of lines.slice(start, end)) {
      const match = /^\| `([A-Z_]+)` +\| ([^|]+)\|/.exec(line);
      if (match !== null) rows.set(match[1] as string, (match[2] as string).trim());
    }
    return rows;
  }

  for (const [service, spec] of [
    ["Master", masterEnv],
    ["Worker", workerEnv],
  ] as const) {
    it(`lists every variable of the ${service.toLowerCase()}, each with its default`, () => {
      const rows = table(service);
      assert.deepEqual([...rows.keys()].sort(), Object.keys(spec).sort());
      for (const [name, variable] of Object.entries(spec)) {
        if (variable.default === undefined) continue;
        assert.ok(
          (rows.get(name) ?? "").startsWith(`\`${variable.default}\``),
          `${name}: the table says ${rows.get(name)}, the spec ${variable.default}`,
        );
      }
    });
  }
});
