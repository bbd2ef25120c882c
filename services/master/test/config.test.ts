import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { describe, it } from "node:test";
import { ConfigError, loadConfig, type StoreConfig } from "../src/config.js";
import { redisOptions } from "../src/store/open-store.js";

const valid = { WORKER_TOKEN: "w" };

function problemsFor(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (error) {
    assert.ok(error instanceof ConfigError);
    return error.problems;
  }
  assert.fail(`expected ${JSON.stringify(env)} to be rejected`);
}

describe("master configuration", () => {
  it("applies the documented defaults when only WORKER_TOKEN is set", () => {
    assert.deepEqual(loadConfig(valid), {
      port: 8080,
      internalPort: undefined,
      host: "127.0.0.1",
      apiToken: undefined,
      workerToken: "w",
      scalerToken: undefined,
      leaseSeconds: 30,
      maxAttempts: 3,
      taskTimeoutSeconds: 300,
      resultTtlSeconds: 3600,
      resultMaxCount: 100000,
      retryBackoffMs: 1000,
      bodyLimitBytes: 1048576,
      memoryBudgetBytes: 268435456,
      requestTimeoutSeconds: 30,
      headersTimeoutSeconds: 10,
      maxConnections: 1024,
      shutdownGraceSeconds: 25,
      shutdownDrainSeconds: 5,
      logLevel: "info",
      store: { kind: "memory" },
    });
  });

  it("listens on loopback only without an API token, on every interface with one, unless HOST says", () => {
    assert.equal(loadConfig(valid).host, "127.0.0.1");
    assert.equal(loadConfig({ ...valid, API_TOKEN: "a" }).host, "0.0.0.0");
    assert.equal(loadConfig({ ...valid, HOST: "0.0.0.0" }).host, "0.0.0.0");
    assert.equal(loadConfig({ ...valid, API_TOKEN: "a", HOST: "::1" }).host, "::1");
  });

  it("reads every variable", () => {
    const config = loadConfig({
      PORT: "9000",
      INTERNAL_PORT: "9001",
      HOST: "127.0.0.1",
      API_TOKEN: "a",
      WORKER_TOKEN: "w",
      SCALER_TOKEN: "s",
      LEASE_SECONDS: "5",
      MAX_ATTEMPTS: "7",
      TASK_TIMEOUT_SECONDS: "60",
      RESULT_TTL_SECONDS: "10",
      RESULT_MAX_COUNT: "50",
      RETRY_BACKOFF_MS: "0",
      BODY_LIMIT_BYTES: "8192",
      MEMORY_BUDGET_BYTES: "100000",
      REQUEST_TIMEOUT_SECONDS: "20",
      HEADERS_TIMEOUT_SECONDS: "20",
      MAX_CONNECTIONS: "7",
      SHUTDOWN_GRACE_SECONDS: "9",
      SHUTDOWN_DRAIN_SECONDS: "3",
      LOG_LEVEL: "debug",
    });
    assert.equal(config.port, 9000);
    assert.equal(config.internalPort, 9001);
    assert.equal(config.host, "127.0.0.1");
    assert.equal(config.apiToken, "a");
    assert.equal(config.scalerToken, "s");
    assert.equal(config.leaseSeconds, 5);
    assert.equal(config.maxAttempts, 7);
    assert.equal(config.taskTimeoutSeconds, 60);
    assert.equal(config.resultTtlSeconds, 10);
    assert.equal(config.resultMaxCount, 50);
    assert.equal(config.retryBackoffMs, 0);
    assert.equal(config.bodyLimitBytes, 8192);
    assert.equal(config.memoryBudgetBytes, 100000);
    assert.equal(config.requestTimeoutSeconds, 20);
    assert.equal(config.headersTimeoutSeconds, 20);
    assert.equal(config.maxConnections, 7);
    assert.equal(config.shutdownGraceSeconds, 9);
    assert.equal(config.shutdownDrainSeconds, 3);
    assert.equal(config.logLevel, "debug");
  });

  const bad: [string, string, string][] = [
    ["PORT", "abc", 'PORT must be an integer from 1 to 65535 (got "abc")'],
    ["PORT", "0", 'PORT must be an integer from 1 to 65535 (got "0")'],
    ["PORT", "65536", 'PORT must be an integer from 1 to 65535 (got "65536")'],
    ["PORT", "80.5", 'PORT must be an integer from 1 to 65535 (got "80.5")'],
    ["PORT", "", 'PORT must be an integer from 1 to 65535 (got "")'],
    ["INTERNAL_PORT", "0", 'INTERNAL_PORT must be an integer from 1 to 65535 (got "0")'],
    [
      "HOST",
      "not a host",
      'HOST must be an IP address or a host name to listen on (got "not a host")',
    ],
    ["LEASE_SECONDS", "0", 'LEASE_SECONDS must be an integer from 1 to 3600 (got "0")'],
    ["MAX_ATTEMPTS", "101", 'MAX_ATTEMPTS must be an integer from 1 to 100 (got "101")'],
    [
      "TASK_TIMEOUT_SECONDS",
      "86401",
      'TASK_TIMEOUT_SECONDS must be an integer from 1 to 86400 (got "86401")',
    ],
    [
      "RESULT_TTL_SECONDS",
      "-1",
      'RESULT_TTL_SECONDS must be an integer from 1 to 2592000 (got "-1")',
    ],
    ["RESULT_MAX_COUNT", "0", 'RESULT_MAX_COUNT must be an integer ≥ 1 (got "0")'],
    [
      "RETRY_BACKOFF_MS",
      "600001",
      'RETRY_BACKOFF_MS must be an integer from 0 to 600000 (got "600001")',
    ],
    ["BODY_LIMIT_BYTES", "8191", 'BODY_LIMIT_BYTES must be an integer ≥ 8192 (got "8191")'],
    ["MEMORY_BUDGET_BYTES", "1MiB", 'MEMORY_BUDGET_BYTES must be an integer ≥ 8192 (got "1MiB")'],
    [
      "REQUEST_TIMEOUT_SECONDS",
      "0",
      'REQUEST_TIMEOUT_SECONDS must be an integer from 1 to 3600 (got "0")',
    ],
    [
      "HEADERS_TIMEOUT_SECONDS",
      "3601",
      'HEADERS_TIMEOUT_SECONDS must be an integer from 1 to 3600 (got "3601")',
    ],
    ["MAX_CONNECTIONS", "0", 'MAX_CONNECTIONS must be an integer from 1 to 1000000 (got "0")'],
    [
      "SHUTDOWN_DRAIN_SECONDS",
      "-5",
      'SHUTDOWN_DRAIN_SECONDS must be an integer from 0 to 3600 (got "-5")',
    ],
    [
      "SHUTDOWN_GRACE_SECONDS",
      "1e3",
      'SHUTDOWN_GRACE_SECONDS must be an integer from 0 to 3600 (got "1e3")',
    ],
    [
      "LOG_LEVEL",
      "verbose",
      'LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent (got "verbose")',
    ],
  ];
  for (const [name, value, message] of bad) {
    it(`rejects ${name}=${JSON.stringify(value)} with a message naming ${name}`, () => {
      assert.deepEqual(problemsFor({ ...valid, [name]: value }), [message]);
    });
  }

  it("refuses settings that are each valid but do not fit together, naming both", () => {
    assert.deepEqual(
      problemsFor({
        ...valid,
        HEADERS_TIMEOUT_SECONDS: "31",
        PORT: "8080",
        INTERNAL_PORT: "8080",
        BODY_LIMIT_BYTES: "2000000",
        MEMORY_BUDGET_BYTES: "1999999",
      }),
      [
        "HEADERS_TIMEOUT_SECONDS (31) must not be larger than REQUEST_TIMEOUT_SECONDS (30)",
        "INTERNAL_PORT (8080) must differ from PORT: the worker API and the client API are kept apart by port",
        "MEMORY_BUDGET_BYTES (1999999) must be at least BODY_LIMIT_BYTES (2000000), or a task of the largest size could never be queued",
      ],
    );
  });

  describe("the store", () => {
    const redisUrlAllowed =
      "REDIS_URL must be a redis:// or rediss:// URL with a host and no password (redis[s]://[user@]host[:port][/db], db 0-15)";

    it("reads STORE=redis with its URL (normalized), password and CA", (t) => {
      const dir = mkdtempSync(path.join(tmpdir(), "taskfleet-ca-"));
      t.after(() => rmSync(dir, { recursive: true, force: true }));
      const caFile = path.join(dir, "ca.pem");
      const pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
      writeFileSync(caFile, pem);
      assert.deepEqual(loadConfig({ ...valid, STORE: "redis", REDIS_URL: "redis://redis" }).store, {
        kind: "redis",
        url: "redis://redis:6379/0",
        password: undefined,
        ca: undefined,
      });
      const tls = loadConfig({
        ...valid,
        STORE: "redis",
        REDIS_URL: "rediss://default@10.0.0.3:6378/2",
        REDIS_PASSWORD: "s3cret",
        REDIS_CA_FILE: caFile,
      });
      assert.deepEqual(tls.store, {
        kind: "redis",
        url: "rediss://default@10.0.0.3:6378/2",
        password: "s3cret",
        ca: pem,
      });
      assert.deepEqual(redisOptions(tls.store as Extract<StoreConfig, { kind: "redis" }>), {
        host: "10.0.0.3",
        port: 6378,
        db: 2,
        username: "default",
        password: "s3cret",
        tls: { ca: pem },
      });
    });

    it("refuses a REDIS_URL with a password, a bad scheme or database, never quoting it", () => {
      for (const url of [
        "redis://:hunter2@redis:6379",
        "http://redis:6379",
        "redis://redis:6379/16",
        "redis://redis:6379/0?password=hunter2",
        "redis://",
        "redis",
      ]) {
        const problems = problemsFor({ ...valid, STORE: "redis", REDIS_URL: url });
        assert.deepEqual(problems, [redisUrlAllowed], url);
        assert.doesNotMatch(problems.join(), /hunter2/);
      }
    });

    it("refuses Redis settings that do not fit STORE, and a CA it cannot use", () => {
      assert.deepEqual(problemsFor({ ...valid, STORE: "disk" }), [
        'STORE must be one of memory, redis (got "disk")',
      ]);
      assert.deepEqual(problemsFor({ ...valid, STORE: "redis" }), [
        "REDIS_URL must be set when STORE is redis",
      ]);
      assert.deepEqual(problemsFor({ ...valid, REDIS_URL: "redis://r", REDIS_PASSWORD: "p" }), [
        "REDIS_URL is set but STORE is memory; set STORE=redis to keep tasks in Redis",
        "REDIS_PASSWORD is set but STORE is memory; set STORE=redis to keep tasks in Redis",
      ]);
      assert.deepEqual(
        problemsFor({ ...valid, STORE: "redis", REDIS_URL: "redis://r", REDIS_CA_FILE: "/x" }),
        ["REDIS_CA_FILE needs a rediss:// REDIS_URL (TLS)"],
      );
      assert.deepEqual(
        problemsFor({
          ...valid,
          STORE: "redis",
          REDIS_URL: "rediss://r",
          REDIS_CA_FILE: "/nonexistent/ca.pem",
        }),
        ["REDIS_CA_FILE (/nonexistent/ca.pem) cannot be read: ENOENT"],
      );
    });
  });

  it("cuts the drain to the grace period, so that the whole shutdown fits it", () => {
    const config = loadConfig({ ...valid, SHUTDOWN_GRACE_SECONDS: "2" });
    assert.equal(config.shutdownDrainSeconds, 2);
  });

  it("requires WORKER_TOKEN", () => {
    assert.deepEqual(problemsFor({}), ["WORKER_TOKEN must be set to a non-empty string"]);
  });

  it("rejects blank tokens without echoing them", () => {
    const problems = problemsFor({ WORKER_TOKEN: "   ", API_TOKEN: "", SCALER_TOKEN: " " });
    assert.deepEqual(problems, [
      "API_TOKEN must be a non-empty string",
      "WORKER_TOKEN must be a non-empty string",
      "SCALER_TOKEN must be a non-empty string",
    ]);
  });

  it("reports every bad variable at once", () => {
    const problems = problemsFor({ PORT: "x", LEASE_SECONDS: "y" });
    assert.equal(problems.length, 3);
    assert.match(problems.join("\n"), /PORT/);
    assert.match(problems.join("\n"), /LEASE_SECONDS/);
    assert.match(problems.join("\n"), /WORKER_TOKEN/);
  });
});
