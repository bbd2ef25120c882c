import * as assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import * as path from "node:path";
import { describe, it } from "node:test";
import { MasterClient } from "../src/master-client.js";
import { harness, startWorker } from "./helpers.js";

const { fakeMaster, worker, scratch } = harness();

describe("worker", () => {
  it("runs every task once and reports each result once", async () => {
    const master = await fakeMaster();
    const ids = Array.from({ length: 200 }, (_, i) => master.add("echo", { i }));
    await worker(master);
    await master.until(() => master.finished().length === ids.length);
    ids.forEach((id, i) => {
      const task = master.tasks.get(id);
      assert.equal(task?.status, "succeeded");
      assert.deepEqual(task?.result, { i });
      assert.equal(task?.attempts, 1);
      assert.equal(task?.completions, 1);
    });
  });

  it("sends the results that finish while a completion request is under way in one request", async () => {
    const master = await fakeMaster();
    master.answerDelayMs.complete = 200;
    for (let i = 0; i < 24; i++) master.add("echo", i);
    await worker(master, { concurrency: 4 });
    await master.until(() => master.finished().length === 24, 20_000);
    const results = master
      .callsTo("complete")
      .map((call) => (call.body.results as unknown[]).length);
    assert.ok(results.length <= 12, `24 results took ${results.length} requests: ${results}`);
  });

  it("never runs more tasks at once than its concurrency", async () => {
    const master = await fakeMaster();
    const ids = Array.from({ length: 30 }, () => master.add("gauge", { ms: 50 }));
    await worker(master, { concurrency: 3 });
    await master.until(() => master.finished().length === 30, 10_000);
    const spans = ids.map((id) => master.tasks.get(id)?.result as { start: number; end: number });
    const most = Math.max(
      ...spans.map(({ start }) => spans.filter((s) => s.start <= start && start < s.end).length),
    );
    assert.equal(most, 3);
    for (const call of master.callsTo("lease")) assert.ok((call.body.max as number) <= 3);
    for (const call of master.callsTo("complete")) {
      const lease = call.body.lease as { max: number } | undefined;
      assert.ok(lease === undefined || lease.max <= 3);
    }
  });

  it("leases through its completions while busy: one request per batch of tasks, not two", async () => {
    const master = await fakeMaster();
    const ids = Array.from({ length: 200 }, (_, i) => master.add("echo", { i }));
    await worker(master, { concurrency: 4 });
    await master.until(() => master.finished().length === ids.length, 20_000);
    for (const id of ids) assert.equal(master.tasks.get(id)?.completions, 1);
    const carried = master.callsTo("complete").filter((call) => call.body.lease !== undefined);
    const leases = master.callsTo("lease").length;
    // A lease request hands out 4 tasks at most: most of the 200 came with completions.
    assert.ok(leases <= 25, `${leases} lease requests, ${carried.length} carried leases`);
    assert.ok(carried.length > 0);
  });

  it("with a master older than a lease in completions: reports again without it, leases apart", async () => {
    const master = await fakeMaster();
    master.unknownCompleteProperties = ["lease"];
    const ids = Array.from({ length: 50 }, (_, i) => master.add("echo", { i }));
    await worker(master, { concurrency: 4 });
    await master.until(() => master.finished().length === ids.length, 20_000);
    for (const id of ids) {
      assert.equal(master.tasks.get(id)?.status, "succeeded");
      assert.equal(master.tasks.get(id)?.completions, 1);
    }
    const carried = master.callsTo("complete").filter((call) => call.body.lease !== undefined);
    assert.equal(carried.length, 1, "refused once, then not offered again at once");
  });

  it("fails an unknown task type at once, without a retry, and keeps working", async () => {
    const master = await fakeMaster();
    const unknown = master.add("no-such-type", {});
    const echo = master.add("echo", "still here");
    await worker(master);
    await master.until(() => master.finished().length === 2);
    const task = master.tasks.get(unknown);
    assert.equal(task?.status, "failed");
    assert.equal(task?.attempts, 1);
    assert.match(task?.error ?? "", /unknown task type "no-such-type": this worker runs .*echo/);
    assert.equal(master.tasks.get(echo)?.result, "still here");
  });

  it("fails a task with a bad payload at once, naming the field", async () => {
    const master = await fakeMaster();
    const tooBig = master.add("cpu", { n: 10_000_001 });
    const notInteger = master.add("cpu", { n: 2.5 });
    await worker(master);
    await master.until(() => master.finished().length === 2);
    for (const id of [tooBig, notInteger]) {
      const task = master.tasks.get(id);
      assert.equal(task?.status, "failed");
      assert.equal(task?.attempts, 1);
      assert.match(task?.error ?? "", /^invalid payload for task type "cpu": payload\.n: /);
    }
  });

  it("retries a failing task until its attempts run out, reporting the handler's error", async () => {
    const master = await fakeMaster();
    const id = master.add("fail", { message: "disk on fire" }, { maxAttempts: 3 });
    await worker(master);
    await master.until(() => master.finished().length === 1);
    const task = master.tasks.get(id);
    assert.equal(task?.status, "failed");
    assert.equal(task?.attempts, 3);
    assert.equal(task?.error, "disk on fire");
  });

  it("fails a task at once when its handler throws a PermanentTaskError", async () => {
    const master = await fakeMaster();
    const id = master.add("strict", null, { maxAttempts: 5 });
    await worker(master);
    await master.until(() => master.finished().length === 1);
    assert.equal(master.tasks.get(id)?.status, "failed");
    assert.equal(master.tasks.get(id)?.attempts, 1);
    assert.equal(master.tasks.get(id)?.error, "no such account");
  });

  it("counts primes for the cpu task", async () => {
    const master = await fakeMaster();
    const expected = new Map([
      [1, 0],
      [2, 0],
      [3, 1],
      [100, 25],
      [1_000_000, 78_498],
    ]);
    const ids = new Map([...expected.keys()].map((n) => [master.add("cpu", { n }), n]));
    await worker(master);
    await master.until(() => master.finished().length === ids.size);
    for (const [id, n] of ids) assert.equal(master.tasks.get(id)?.result, expected.get(n));
  });

  it("fails a task that runs past its timeout as retryable, and aborts its handler", async () => {
    const master = await fakeMaster();
    const marker = path.join(scratch(), "aborted");
    // A task first, so that the one slot's thread is up and the timeout is all the handler's.
    const warmUp = master.add("echo", null);
    await worker(master, { concurrency: 1 });
    await master.until(() => master.tasks.get(warmUp)?.status === "succeeded");
    // The handler takes 300 ms to clean up once told to stop: its thread waits for that long.
    const id = master.add(
      "stuck",
      { marker, cleanupMs: 300 },
      { timeoutSeconds: 1, maxAttempts: 1 },
    );
    await master.until(() => master.tasks.get(id)?.status === "failed");
    assert.equal(master.tasks.get(id)?.error, "timed out after 1 s");
    const completions = master.callsTo("complete").flatMap((call) => call.body.results);
    assert.deepEqual(
      completions.map((result) => (result as { retryable?: boolean }).retryable),
      [undefined, true],
    );
    await master.until(() => existsSync(marker));
    assert.equal(readFileSync(marker, "utf8"), "TaskTimeout");
  });

  it("renews its leases while a task runs longer than the lease", async () => {
    const master = await fakeMaster({ leaseSeconds: 1 });
    const id = master.add("sleep", { ms: 2500 });
    await worker(master);
    await master.until(() => master.finished().length === 1, 5000);
    const task = master.tasks.get(id);
    assert.equal(task?.status, "succeeded");
    assert.equal(task?.attempts, 1);
    assert.ok(
      master.callsTo("renew").length >= 3,
      "expected a renewal about every third of a lease",
    );
  });

  it("abandons a task whose lease was lost, without reporting its result", async () => {
    const master = await fakeMaster({ leaseSeconds: 1 });
    const marker = path.join(scratch(), "aborted");
    const id = master.add("stuck", { marker }, { maxAttempts: 1 });
    const { logs } = await worker(master, { concurrency: 1 });
    await master.until(() => existsSync(`${marker}.started`));
    // Another worker took the task over: this worker's lease is no longer the current one.
    const task = master.tasks.get(id) as NonNullable<ReturnType<typeof master.tasks.get>>;
    task.leaseId = "someone-else";
    await master.until(() => logs.some((line) => line.msg === "lease lost; abandoning the task"));
    await master.until(() => existsSync(marker));
    assert.equal(readFileSync(marker, "utf8"), "LeaseLost");
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(master.callsTo("complete").length, 0);
  });

  it("on shutdown stops leasing, lets a running task finish within the grace time", async () => {
    const master = await fakeMaster();
    const id = master.add("sleep", { ms: 300 });
    const started = await worker(master);
    // The first lease took the task; the second is the long poll waiting for more.
    await master.until(() => master.callsTo("lease").length === 2);
    assert.equal(master.tasks.get(id)?.status, "running");
    const leasesBefore = master.callsTo("lease").length;
    await started.stop(5000);
    assert.equal(master.tasks.get(id)?.status, "succeeded");
    assert.equal(master.tasks.get(id)?.attempts, 1);
    assert.equal(master.callsTo("lease").length, leasesBefore);
    assert.equal(master.callsTo("release").length, 0);
  });

  it("on shutdown gives back a task that outlasts the grace time, and aborts it", async () => {
    const master = await fakeMaster();
    const id = master.add("sleep", { ms: 60_000 });
    const started = await worker(master);
    await master.until(() => master.tasks.get(id)?.status === "running");
    const begun = Date.now();
    await started.stop(200);
    assert.ok(Date.now() - begun < 2000, "shutdown waited past its grace time");
    const released = master.callsTo("release").flatMap((call) => call.body.leases);
    assert.deepEqual(
      released.map((lease) => (lease as { id: string }).id),
      [id],
    );
    const task = master.tasks.get(id);
    assert.equal(task?.status, "queued");
    assert.equal(task?.attempts, 0);
    assert.equal(master.callsTo("complete").length, 0);
  });

  it("on shutdown gives back the tasks of a lease answer still on its way, rather than strand them", async () => {
    const master = await fakeMaster();
    // The master leases the tasks at once; its answer takes a moment to reach the worker.
    master.answerDelayMs.lease = 300;
    const ids = [master.add("sleep", { ms: 10 }), master.add("sleep", { ms: 10 })];
    const started = await worker(master, { concurrency: 2 });
    await master.until(() => ids.every((id) => master.tasks.get(id)?.status === "running"));
    await started.stop(5000);
    const released = master.callsTo("release").flatMap((call) => call.body.leases);
    assert.deepEqual(
      released.map((lease) => (lease as { id: string }).id).sort(),
      [...ids].sort(),
      "tasks leased to the worker as it stopped were left running on the master",
    );
    for (const id of ids) {
      assert.equal(master.tasks.get(id)?.status, "queued");
      assert.equal(master.tasks.get(id)?.attempts, 0);
    }
    assert.equal(started.logs.filter((line) => line.msg === "task started").length, 0);
  });

  it("keeps its results and retries with backoff while the master is down, logging once", async () => {
    const master = await fakeMaster();
    const { logs } = await worker(master);
    master.failWith = 503;
    const id = master.add("echo", "after the outage");
    await master.until(() => master.callsTo("lease").length > 5);
    master.failWith = undefined;
    await master.until(() => master.finished().length === 1);
    assert.equal(master.tasks.get(id)?.result, "after the outage");
    const warnings = logs.filter(
      (line) => line.msg === "master unreachable; retrying with backoff",
    );
    assert.equal(warnings.length, 1);
    assert.equal(logs.filter((line) => line.msg === "master reachable again").length, 1);
  });

  it("rides out a master restart: connection refused, then carries on", async () => {
    const master = await fakeMaster();
    const port = Number(new URL(master.url).port);
    const { logs } = await worker(master);
    // Connected first: its threads started, it is waiting on a lease when the master goes.
    await master.until(() => master.callsTo("lease").length > 0);
    await master.stop();
    await new Promise((resolve) => setTimeout(resolve, 300));
    await master.listen(port);
    const id = master.add("echo", "back");
    await master.until(() => master.finished().length === 1, 5000);
    assert.equal(master.tasks.get(id)?.result, "back");
    assert.equal(logs.filter((line) => line.msg === "master reachable again").length, 1);
  });

  it("sends a refused batch's results one at a time so none is lost", async () => {
    const master = await fakeMaster();
    master.maxResultsPerComplete = 1;
    for (let i = 0; i < 20; i++) master.add("echo", i);
    await worker(master, { concurrency: 4 });
    await master.until(() => master.finished().length === 20);
    for (const task of master.tasks.values()) assert.equal(task.status, "succeeded");
  });

  it("stops with an error when the master refuses its token", async () => {
    const master = await fakeMaster();
    const started = await startWorker(master, {
      master: new MasterClient({ masterUrl: master.url, workerToken: "wrong" }),
    });
    await assert.rejects(started.running, /answered 401/);
    await started.stop(0).catch(() => undefined);
  });
});
