import * as assert from "node:assert/strict";
import { existsSync } from "node:fs";
import * as path from "node:path";
import { describe, it } from "node:test";
import { harness } from "./helpers.js";

const { fakeMaster, worker, scratch } = harness();

/**
 * What a misbehaving handler may cost: its own task, never the tasks running beside it, and never
 * the worker. The handlers are in ./tasks; each runs in a task thread of the worker.
 */
describe("task isolation", () => {
  it("fails only its own task when a handler throws a value without a prototype", async () => {
    const master = await fakeMaster();
    const thrower = master.add("throw-null", null, { maxAttempts: 1 });
    const neighbour = master.add("sleep", { ms: 300 });
    const later = master.add("echo", "after");
    await worker(master);
    await master.until(() => master.finished().length === 3);
    assert.equal(master.tasks.get(thrower)?.status, "failed");
    assert.equal(master.tasks.get(thrower)?.error, "[Object: null prototype] {}");
    for (const id of [neighbour, later]) {
      assert.equal(master.tasks.get(id)?.status, "succeeded");
      assert.equal(master.tasks.get(id)?.attempts, 1);
    }
  });

  it("fails only its own task when its handler throws from a timer, and keeps working", async () => {
    const master = await fakeMaster();
    const thrower = master.add("throw-later", { afterMs: 50 }, { maxAttempts: 1 });
    const neighbour = master.add("sleep", { ms: 500 });
    const { logs } = await worker(master);
    await master.until(() => master.finished().length === 2);
    assert.equal(master.tasks.get(thrower)?.status, "failed");
    assert.equal(master.tasks.get(thrower)?.error, "the handler crashed: thrown from a timer");
    assert.equal(master.tasks.get(neighbour)?.status, "succeeded");
    assert.equal(master.tasks.get(neighbour)?.attempts, 1);
    const later = master.add("echo", "still working");
    await master.until(() => master.tasks.get(later)?.status === "succeeded");
    assert.equal(logs.filter((line) => line.level === "fatal").length, 0);
  });

  it("gives back, not fails, the task whose thread dies of code a finished task left behind", async () => {
    const master = await fakeMaster();
    // One slot, so the sleep runs on the thread where the first task's timer is still pending.
    const culprit = master.add("throw-later", { afterMs: 400, returnAtOnce: true });
    const bystander = master.add("sleep", { ms: 1500 }, { maxAttempts: 1 });
    const { logs } = await worker(master, { concurrency: 1 });
    await master.until(() => master.finished().length === 2);
    assert.equal(master.tasks.get(culprit)?.result, "returned");
    // Failed, it would be over (one attempt); given back, the attempt did not count.
    assert.equal(master.tasks.get(bystander)?.status, "succeeded");
    const released = master.callsTo("release").flatMap((call) => call.body.leases);
    assert.deepEqual(
      released.map((lease) => (lease as { id: string }).id),
      [bystander],
    );
    const warning = logs.find(
      (line) => line.msg === "task's thread crashed because of another task; giving the task back",
    );
    assert.equal(warning?.taskId, bystander);
    assert.match(String(warning?.cause), new RegExp(`^task ${culprit}: .*thrown from a timer`));
  });

  it("keeps renewing the leases of all its tasks while a handler blocks its thread", async () => {
    const master = await fakeMaster({ leaseSeconds: 1 });
    const blocker = master.add("block", { ms: 2500 });
    const neighbour = master.add("sleep", { ms: 2500 });
    await worker(master, { concurrency: 2 });
    await master.until(() => master.finished().length === 2);
    for (const id of [blocker, neighbour]) {
      assert.equal(master.tasks.get(id)?.status, "succeeded");
      assert.equal(master.tasks.get(id)?.attempts, 1);
      assert.equal(master.tasks.get(id)?.completions, 1);
    }
    const renewals = master.callsTo("renew").map((call) => call.at);
    const gaps = renewals.slice(1).map((at, i) => at - (renewals[i] as number));
    assert.ok(renewals.length >= 5, `only ${renewals.length} renewals`);
    assert.ok(Math.max(...gaps) < 900, `renewals paused for ${Math.max(...gaps)} ms`);
  });

  it("stops a handler that blocks past its timeout and runs the next task on a new thread", async () => {
    const master = await fakeMaster();
    // A task first, so that the one slot's thread is up and the timeout is all the handler's.
    const warmUp = master.add("echo", null);
    await worker(master, { concurrency: 1 });
    await master.until(() => master.tasks.get(warmUp)?.status === "succeeded");
    const begun = Date.now();
    const blocker = master.add("block", { ms: 8000 }, { timeoutSeconds: 1, maxAttempts: 1 });
    const next = master.add("echo", "next");
    await master.until(() => master.finished().length === 3);
    assert.equal(master.tasks.get(blocker)?.error, "timed out after 1 s");
    assert.equal(master.tasks.get(next)?.result, "next");
    assert.ok(Date.now() - begun < 7000, "the next task waited for the blocked handler");
  });

  it("fails only its own task when a handler calls process.exit", async () => {
    const master = await fakeMaster();
    const quitter = master.add("exit", { code: 3 }, { maxAttempts: 1 });
    const neighbour = master.add("sleep", { ms: 300 });
    await worker(master);
    await master.until(() => master.finished().length === 2);
    assert.equal(master.tasks.get(quitter)?.error, "the handler's thread stopped (exit code 3)");
    assert.equal(master.tasks.get(neighbour)?.status, "succeeded");
    assert.equal(master.tasks.get(neighbour)?.attempts, 1);
  });

  it("on shutdown gives back a task whose handler blocks, within the grace time", async () => {
    const master = await fakeMaster();
    const marker = path.join(scratch(), "block");
    const id = master.add("block", { ms: 8000, marker });
    const started = await worker(master);
    await master.until(() => existsSync(`${marker}.started`));
    const begun = Date.now();
    await started.stop(200);
    assert.ok(Date.now() - begun < 3000, `shutdown took ${Date.now() - begun} ms`);
    assert.equal(master.tasks.get(id)?.status, "queued");
    assert.equal(master.tasks.get(id)?.attempts, 0);
  });
});
