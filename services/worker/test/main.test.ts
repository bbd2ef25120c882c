import * as assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as path from "node:path";
import { afterEach, describe, it } from "node:test";
import { FakeMaster } from "./fake-master.js";

const entry = path.resolve(import.meta.dirname, "../src/main.ts");

const throwOnSigusr2 = path.resolve(import.meta.dirname, "throw-on-sigusr2.ts");

/** Runs the worker's entry point as a process, as a pod would, and collects its output. */
function runWorker(env: Record<string, string>, preload: string[] = []) {
  const child = spawn(process.execPath, ["--import", "tsx", ...preload, entry], {
    env: { PATH: process.env.PATH ?? "", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (chunk: Buffer) => {
    output += chunk.toString("utf8");
  });
  child.stderr.on("data", (chunk: Buffer) => {
    output += chunk.toString("utf8");
  });
  const exit = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
  void exit.then(() => clearTimeout(timer));
  return { child, exit, output: () => output };
}

const masters: FakeMaster[] = [];
afterEach(async () => {
  await Promise.all(masters.splice(0).map((master) => master.close()));
});

describe("worker process", () => {
  it("exits 1 at start on a bad environment, naming each bad variable", async () => {
    const run = runWorker({
      MASTER_URL: "not a url",
      WORKER_TOKEN: "t0ken-value",
      CONCURRENCY: "0",
    });
    assert.equal(await run.exit, 1);
    // JSON lines of the logs' shape, one per bad variable, as the master writes them.
    const lines = run
      .output()
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as { level: string; service: string; msg: string });
    assert.deepEqual(
      lines.map((line) => [line.level, line.service, line.msg]),
      [
        [
          "fatal",
          "taskfleet-worker",
          'invalid configuration: MASTER_URL must be an http:// or https:// URL (got "not a url")',
        ],
        [
          "fatal",
          "taskfleet-worker",
          'invalid configuration: CONCURRENCY must be an integer from 1 to 256 (got "0")',
        ],
      ],
    );
    assert.doesNotMatch(run.output(), /t0ken-value/);
  });

  it("exits 1 when the master refuses its token", async () => {
    const master = await new FakeMaster().listen();
    masters.push(master);
    const run = runWorker({ MASTER_URL: master.url, WORKER_TOKEN: "wrong" });
    assert.equal(await run.exit, 1);
    assert.match(run.output(), /the master refused WORKER_TOKEN/);
  });

  it("exits 0 on SIGTERM after finishing the task it holds", async () => {
    const master = await new FakeMaster().listen();
    masters.push(master);
    const id = master.add("sleep", { ms: 500 });
    const run = runWorker({ MASTER_URL: master.url, WORKER_TOKEN: master.token });
    await master.until(() => master.tasks.get(id)?.status === "running", 10_000);
    run.child.kill("SIGTERM");
    assert.equal(await run.exit, 0);
    assert.equal(master.tasks.get(id)?.status, "succeeded");
    assert.equal(master.callsTo("release").length, 0);
  });

  it("on SIGTERM gives back the tasks that outlast SHUTDOWN_GRACE_SECONDS and exits 0", async () => {
    const master = await new FakeMaster().listen();
    masters.push(master);
    const ids = [master.add("sleep", { ms: 60_000 }), master.add("sleep", { ms: 60_000 })];
    const run = runWorker({
      MASTER_URL: master.url,
      WORKER_TOKEN: master.token,
      SHUTDOWN_GRACE_SECONDS: "1",
    });
    await master.until(() => master.callsTo("lease").length >= 2, 10_000);
    const begun = Date.now();
    run.child.kill("SIGTERM");
    assert.equal(await run.exit, 0);
    assert.ok(Date.now() - begun < 5000, `shutdown took ${Date.now() - begun} ms`);
    const released = master.callsTo("release").flatMap((call) => call.body.leases);
    assert.deepEqual(released.map((lease) => (lease as { id: string }).id).sort(), [...ids].sort());
    for (const id of ids) assert.equal(master.tasks.get(id)?.attempts, 0);
  });

  it("gives back its tasks and exits 1 after an error nothing caught", async () => {
    const master = await new FakeMaster().listen();
    masters.push(master);
    const ids = [master.add("sleep", { ms: 60_000 }), master.add("sleep", { ms: 60_000 })];
    const run = runWorker({ MASTER_URL: master.url, WORKER_TOKEN: master.token }, [
      "--import",
      throwOnSigusr2,
    ]);
    await master.until(() => master.callsTo("lease").length >= 2, 10_000);
    run.child.kill("SIGUSR2");
    assert.equal(await run.exit, 1);
    assert.match(run.output(), /uncaught error; giving back held tasks and exiting/);
    for (const id of ids) {
      assert.equal(master.tasks.get(id)?.status, "queued");
      assert.equal(master.tasks.get(id)?.attempts, 0);
    }
  });
});
