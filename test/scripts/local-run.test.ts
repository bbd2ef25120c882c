/**
 * `npm start`, `npm run master` and `npm run worker` as a newcomer runs them: real npm, real
 * processes on 127.0.0.1, Ctrl+C sent to the whole process group as a terminal does.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import { repoRoot } from "../../infra/service-builds";
import { ensureBuilt, markBuilt, needsBuildIn } from "../../scripts/local-services";

/** Runs `npm run <script>` in its own process group, collecting its output. */
function npmRun(script: string, env: Record<string, string>) {
  const child = spawn("npm", ["run", "--silent", script], {
    cwd: repoRoot,
    env: { ...process.env, ...env },
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout?.on("data", (chunk) => {
    output += chunk;
  });
  child.stderr?.on("data", (chunk) => {
    output += chunk;
  });
  return { child, output: () => output };
}

function exitOf(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => child.once("exit", (code) => resolve(code)));
}

async function waitFor(condition: () => boolean, what: string, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function freePort(): Promise<number> {
  const probe = createServer().listen(0, "127.0.0.1");
  await new Promise((resolve) => probe.once("listening", resolve));
  const { port } = probe.address() as AddressInfo;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

const count = (text: string, pattern: RegExp) => text.match(new RegExp(pattern, "g"))?.length ?? 0;

describe("npm run master and npm run worker", () => {
  before(() => {
    ensureBuilt("master");
    ensureBuilt("worker");
  });

  it("npm run master: Ctrl+C reaches the master once, and the script exits with its code, 0", async () => {
    const run = npmRun("master", { WORKER_TOKEN: "w", PORT: String(await freePort()) });
    await waitFor(() => run.output().includes('"msg":"master ready"'), "the master to be ready");
    process.kill(-(run.child.pid as number), "SIGINT");
    assert.equal(await exitOf(run.child), 0, run.output());
    assert.equal(count(run.output(), /"msg":"draining"/), 1, run.output());
    assert.equal(count(run.output(), /"msg":"stopped"/), 1, run.output());
  });

  it("npm run worker: Ctrl+C reaches the worker once, and the script exits 0", async () => {
    const master = createServer((_request, response) => response.writeHead(503).end()).listen(
      0,
      "127.0.0.1",
    );
    await new Promise((resolve) => master.once("listening", resolve));
    try {
      const url = `http://127.0.0.1:${(master.address() as AddressInfo).port}`;
      const run = npmRun("worker", { WORKER_TOKEN: "w", MASTER_URL: url });
      await waitFor(() => run.output().includes('"msg":"worker started"'), "the worker to start");
      process.kill(-(run.child.pid as number), "SIGINT");
      assert.equal(await exitOf(run.child), 0, run.output());
      assert.equal(count(run.output(), /"msg":"signal received"/), 1, run.output());
      assert.equal(count(run.output(), /already shutting down/), 0, run.output());
    } finally {
      master.close();
    }
  });
});

describe("npm start", () => {
  let oldMaster: Server;
  let port: number;

  before(async () => {
    // An earlier master still on the port: it answers every readiness check.
    oldMaster = createServer((_request, response) => response.end('{"status":"ready"}'));
    await new Promise<void>((resolve) => oldMaster.listen(0, "127.0.0.1", resolve));
    port = (oldMaster.address() as AddressInfo).port;
  });
  after(() => oldMaster.close());

  it("says the port is taken and exits 1, instead of starting workers against another master", async () => {
    const run = npmRun("start", { PORT: String(port) });
    assert.equal(await exitOf(run.child), 1, run.output());
    assert.match(run.output(), new RegExp(`port ${port} on 127\\.0\\.0\\.1 is taken`));
    assert.doesNotMatch(run.output(), /taskfleet is running/);
  });
});

describe("the local build check", () => {
  it("rebuilds when a source's content changes, not when it is only touched", () => {
    const folder = mkdtempSync(path.join(tmpdir(), "service-"));
    try {
      mkdirSync(path.join(folder, "src"));
      mkdirSync(path.join(folder, "dist"));
      writeFileSync(path.join(folder, "src", "main.ts"), "export {};\n");
      writeFileSync(path.join(folder, "package.json"), "{}\n");
      writeFileSync(path.join(folder, "tsconfig.json"), "{}\n");
      assert.equal(needsBuildIn(folder, "dist/main.js"), true, "never built");
      writeFileSync(path.join(folder, "dist", "main.js"), "export {};\n");
      markBuilt(folder);
      assert.equal(needsBuildIn(folder, "dist/main.js"), false, "just built");

      // `touch`: newer than the build, which tsc leaves alone because its output is unchanged.
      const later = new Date(Date.now() + 60_000);
      utimesSync(path.join(folder, "src", "main.ts"), later, later);
      assert.equal(needsBuildIn(folder, "dist/main.js"), false, "touched only");

      writeFileSync(path.join(folder, "src", "main.ts"), "export const changed = 1;\n");
      assert.equal(needsBuildIn(folder, "dist/main.js"), true, "content changed");
      writeFileSync(path.join(folder, "src", "extra.ts"), "export {};\n");
      markBuilt(folder);
      assert.equal(needsBuildIn(folder, "dist/main.js"), false, "built again");
    } finally {
      rmSync(folder, { recursive: true, force: true });
    }
  });
});
