import * as assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import * as path from "node:path";
import { afterEach, describe, it } from "node:test";
import { FakeMaster } from "./fake-master.js";
import { harness } from "./helpers.js";

const { fakeMaster, worker, scratch } = harness();

/**
 * Task types declared `isolation: "inline"` run on the worker's main thread; everything the
 * worker promises about a task's outcome holds for them as for a task thread's, and a crash of
 * their code costs their own attempt, not the worker's other tasks.
 */
describe("inline task types", () => {
  it("runs an inline type on the main thread and every other type on a task thread", async () => {
    const master = await fakeMaster();
    const inline = master.add("where-inline", null);
    const threaded = master.add("where", null);
    await worker(master);
    await master.until(() => master.finished().length === 2);
    assert.deepEqual(master.tasks.get(inline)?.result, { isMainThread: true });
    assert.deepEqual(master.tasks.get(threaded)?.result, { isMainThread: false });
  });

  it("fails an inline task that runs past its timeout as retryable, and aborts its handler", async () => {
    const master = await fakeMaster();
    const marker = path.join(scratch(), "aborted");
    const id = master.add("stuck-inline", { marker }, { timeoutSeconds: 1, maxAttempts: 1 });
    await worker(master, { concurrency: 1 });
    await master.until(() => master.tasks.get(id)?.status === "failed");
    assert.equal(master.tasks.get(id)?.error, "timed out after 1 s");
    const completions = master.callsTo("complete").flatMap((call) => call.body.results);
    assert.deepEqual(
      completions.map((result) => (result as { retryable?: boolean }).retryable),
      [true],
    );
    await master.until(() => existsSync(marker));
    assert.equal(readFileSync(marker, "utf8"), "TaskTimeout");
  });

  it("retries an inline task whose handler throws, reporting its error", async () => {
    const master = await fakeMaster();
    const id = master.add("fail-inline", { message: "inline failure" }, { maxAttempts: 2 });
    await worker(master);
    await master.until(() => master.tasks.get(id)?.status === "failed");
    assert.equal(master.tasks.get(id)?.attempts, 2);
    assert.equal(master.tasks.get(id)?.error, "inline failure");
  });
});

const masters: FakeMaster[] = [];
afterEach(async () => {
  await Promise.all(masters.splice(0).map((master) => master.close()));
});

describe("worker process with an inline task type", () => {
  it("when an inline handler throws from a timer: fails its attempt, gives back the others, exits 1", async () => {
    const master = await new FakeMaster().listen();
    masters.push(master);
    const thrower = master.add("throw-later-inline", { afterMs: 300 });
    const bystanders = [master.add("sleep", { ms: 60_000 }), master.add("sleep", { ms: 60_000 })];
    const entry = path.resolve(import.meta.dirname, "worker-process-entry.ts");
    const child = spawn(process.execPath, ["--import", "tsx", entry], {
      // As many slots as tasks: no lease request is under way when the crash comes, which would
      // take the culprit's retry (the fake master retries at once) only to give it back.
      env: {
        PATH: process.env.PATH ?? "",
        MASTER_URL: master.url,
        WORKER_TOKEN: master.token,
        CONCURRENCY: "3",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    const collect = (chunk: Buffer) => {
      output += chunk.toString("utf8");
    };
    child.stdout.on("data", collect);
    child.stderr.on("data", collect);
    const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
    const code = await new Promise((resolve) => child.once("exit", resolve));
    clearTimeout(timer);
    assert.equal(code, 1, output);
    assert.match(output, /uncaught error; giving back held tasks and exiting/);
    // The culprit's attempt failed as a crash, to be retried; its neighbours went back uncounted.
    const task = master.tasks.get(thrower);
    assert.equal(task?.status, "queued");
    assert.equal(task?.attempts, 1);
    assert.equal(task?.error, "the handler crashed: thrown from a timer");
    for (const id of bystanders) {
      assert.equal(master.tasks.get(id)?.status, "queued");
      assert.equal(master.tasks.get(id)?.attempts, 0);
    }
    const released = master.callsTo("release").flatMap((call) => call.body.leases);
    assert.deepEqual(
      released.map((lease) => (lease as { id: string }).id).sort(),
      bystanders.sort(),
    );
  });
});
