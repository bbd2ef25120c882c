import * as assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import { terminationMarginSeconds } from "../../infra/pod";
import { mapLimited } from "../map-limited";
import { Fleet, type FleetProcess, until } from "./fleet";
import { copyWorkerWithTasks } from "./worker-copy";

/** 6 workers scaled down to 2 (then up to 3), as an autoscaler would on a shrinking backlog. */
const workerCount = 6;
const removedCount = 4;
const concurrency = 4;
const taskCount = 300;
/** Longer than the longest task (400 ms) by a margin that a busy CI machine cannot use up. */
const graceSeconds = 5;

/** How long task `i` sleeps: 50 to 400 ms, spread evenly, so workers finish at varied moments. */
function taskMs(i: number): number {
  return 50 + ((i * 97) % 351);
}

/** One line of the journal that every run of `journaled-sleep` appends to (tasks/). */
interface JournalLine {
  event: "start" | "end" | "aborted";
  id: string;
  attempt: number;
  pid: number;
  at: number;
}

/** The journal's complete lines (a line being written is left for the next read). */
function readJournal(file: string): JournalLine[] {
  if (!existsSync(file)) return [];
  const text = readFileSync(file, "utf8");
  return text
    .slice(0, text.lastIndexOf("\n") + 1)
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => JSON.parse(line) as JournalLine);
}

function seconds(from: number, to: number): string {
  return ((to - from) / 1000).toFixed(1);
}

/** The index of the first log line of `worker` with message `msg`, or -1. */
function lineIndex(worker: FleetProcess, msg: string): number {
  return worker.logs.findIndex((line) => line.msg === msg);
}

let fleet: Fleet | undefined;
let scratch: string | undefined;
after(async () => {
  await fleet?.stop();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

describe("scaling workers down: SIGTERM to several at once while they run tasks", {
  timeout: 150_000,
}, () => {
  // A fresh clone has no build yet: compiling both services is part of the setup, not of a test.
  before(() => Fleet.build(), { timeout: 120_000 });

  it("each removed worker finishes what it holds within its grace and exits 0; no task runs twice or is lost", async (t) => {
    const started = Date.now();
    scratch = mkdtempSync(path.join(os.tmpdir(), "taskfleet-scale-down-"));
    // Every run's start is recorded by the handler itself, in a file outside the worker: a run
    // aborted by a shutdown and given back counts no attempt on the master, but it is here.
    const journal = path.join(scratch, "journal.ndjson");
    const entry = copyWorkerWithTasks(path.join(scratch, "worker"), ["journaled-sleep.js"]);
    const f = await Fleet.start({}, { workerEntry: entry });
    fleet = f;
    const workerEnv = {
      CONCURRENCY: String(concurrency),
      SHUTDOWN_GRACE_SECONDS: String(graceSeconds),
      TASK_JOURNAL: journal,
    };
    // Two at a time: six processes starting at once on a busy 2-core machine can take longer than
    // addWorker waits for each.
    const workers = await mapLimited(Array.from({ length: workerCount }), 2, () =>
      f.addWorker(workerEnv),
    );
    // Work is submitted once every worker can take it, so that all of them are busy.
    await until(
      () => workers.every((worker) => lineIndex(worker, "task threads ready") >= 0),
      30_000,
      () =>
        `(task threads not ready in ${workers
          .filter((worker) => lineIndex(worker, "task threads ready") < 0)
          .map((worker) => worker.name)})`,
    );
    const ids = await f.submit(
      Array.from({ length: taskCount }, (_, i) => ({
        type: "journaled-sleep",
        payload: { ms: taskMs(i) },
      })),
    );
    assert.equal(new Set(ids).size, taskCount);
    const submittedAt = Date.now();

    const removed = workers.slice(0, removedCount);
    const kept = workers.slice(removedCount);
    const nameOf = new Map(workers.map((worker) => [worker.child.pid, worker.name]));
    // The scale-down comes once each worker to be removed has run a task, and a few rounds of
    // work have finished: mid-run, with slots full and a backlog queued.
    let stats: Record<string, number> = {};
    await until(
      async () => {
        stats = await f.stats();
        const starters = new Set(readJournal(journal).map((line) => line.pid));
        return (
          (stats.succeeded ?? 0) >= 3 * workerCount * concurrency &&
          removed.every((worker) => starters.has(worker.child.pid as number))
        );
      },
      30_000,
      () => `stats: ${JSON.stringify(stats)}`,
    );
    for (const worker of removed) worker.child.kill("SIGTERM");
    const sigtermAt = Date.now();
    const exitMs = new Map<string, number>();
    for (const worker of removed) {
      void worker.exited.then(() => exitMs.set(worker.name, Date.now() - sigtermAt));
    }
    const queuedAtSigterm = (await f.stats()).queued ?? 0;
    assert.ok(queuedAtSigterm > 0, "the backlog ran out before the scale-down: it proves nothing");

    // A scale-up while they drain: a fresh worker takes work next to the two that stay.
    const added = await f.addWorker(workerEnv);
    nameOf.set(added.child.pid, added.name);

    // Kubernetes sends SIGKILL at the end of terminationGracePeriodSeconds, which the Pulumi
    // program sets to SHUTDOWN_GRACE_SECONDS plus this margin.
    const killAfterMs = (graceSeconds + terminationMarginSeconds) * 1000;
    await until(
      () => exitMs.size === removed.length,
      killAfterMs,
      () =>
        `(${removed
          .filter((worker) => !exitMs.has(worker.name))
          .map(
            (worker) => worker.name,
          )} still running after SIGTERM, when Kubernetes would SIGKILL)`,
    );
    for (const worker of removed) {
      assert.equal(await worker.exited, 0, `${worker.name} exited non-zero after SIGTERM`);
    }

    await f.waitForFinished(taskCount, 60_000);
    const finishedAt = Date.now();

    // Every task id started exactly once, over every worker: none ran twice, none was lost.
    const runs = readJournal(journal);
    const startsOf = new Map<string, JournalLine[]>(ids.map((id) => [id, []]));
    for (const line of runs) {
      if (line.event !== "start") continue;
      const starts = startsOf.get(line.id);
      assert.ok(starts, `a run of a task never submitted: ${JSON.stringify(line)}`);
      starts.push(line);
    }
    const describeStarts = (starts: JournalLine[]) =>
      starts.map((s) => `${nameOf.get(s.pid)} attempt ${s.attempt}`).join(", ");
    const twice = [...startsOf].filter(([, starts]) => starts.length > 1);
    assert.deepEqual(
      twice.slice(0, 5).map(([id, starts]) => `${id}: ${describeStarts(starts)}`),
      [],
      `${twice.length} task(s) started more than once`,
    );
    const never = [...startsOf].filter(([, starts]) => starts.length === 0).map(([id]) => id);
    assert.deepEqual(never.slice(0, 5), [], `${never.length} task(s) never started`);
    const aborted = runs.filter((line) => line.event === "aborted");
    assert.deepEqual(
      aborted.slice(0, 5).map((line) => `${line.id} on ${nameOf.get(line.pid)}`),
      [],
      `${aborted.length} run(s) aborted`,
    );

    // Each succeeded once, with its own result, on its first attempt: no lease ran out.
    const problems: string[] = [];
    for (const [i, id] of ids.entries()) {
      const task = await f.task(id);
      const want = { id, slept: taskMs(i) };
      if (task.status !== "succeeded" || task.attempts !== 1) {
        const starts = startsOf.get(id) ?? [];
        const unstarted = task.attempts - starts.length;
        problems.push(
          `task ${i} (${id}) ${task.status} after ${task.attempts} attempt(s), started by ${describeStarts(starts)}${
            unstarted > 0 ? `; ${unstarted} attempt(s) never started (leases that ran out)` : ""
          }`,
        );
      } else if (JSON.stringify(task.result) !== JSON.stringify(want)) {
        problems.push(`task ${i} (${id}) returned ${JSON.stringify(task.result)}`);
      }
    }
    assert.deepEqual(problems.slice(0, 10), [], `${problems.length} task(s) went wrong`);
    const finalStats = await f.stats();
    assert.equal(finalStats.succeeded, taskCount, JSON.stringify(finalStats));
    assert.equal(await f.metric("taskfleet_lease_expirations_total"), 0);

    // What each removed worker did after SIGTERM, by its own log: it started nothing more, and
    // every task it held at the signal ran to the end on it, none aborted or given back. (Tasks
    // of a lease answer that arrived after the signal it gives back unstarted: counted below.)
    let givenBack = 0;
    for (const worker of removed) {
      const stop = lineIndex(worker, "shutting down: leasing stopped");
      assert.ok(stop >= 0, `${worker.name} logged no shutdown`);
      const held = Number(worker.logs[stop]?.held);
      assert.ok(held > 0, `${worker.name} held no task at SIGTERM: it proves nothing`);
      const after = worker.logs.slice(stop);
      const startedAfter = after.filter((line) => line.msg === "task started");
      assert.deepEqual(
        startedAfter.map((line) => line.taskId),
        [],
        `${worker.name} started tasks after SIGTERM`,
      );
      const doneAfter = after.filter((line) => line.msg === "task done" && line.ok === true);
      assert.equal(doneAfter.length, held, `${worker.name} held ${held} but finished otherwise`);
      givenBack += after
        .filter((line) => line.msg === "gave tasks back")
        .reduce((sum, line) => sum + Number(line.released), 0);
      const shutDown = after.find((line) => line.msg === "shut down");
      assert.equal(shutDown?.released, 0, `${worker.name} released tasks at the end of its grace`);
    }
    const startsBy = (worker: FleetProcess) =>
      runs.filter((line) => line.event === "start" && line.pid === worker.child.pid).length;
    assert.ok(startsBy(added) > 0, `${added.name}, started during the scale-down, ran nothing`);
    for (const worker of [...kept, added]) {
      assert.equal(worker.child.exitCode, null, `${worker.name}, never signalled, has exited`);
    }

    t.diagnostic(
      [
        `${taskCount} tasks in ${seconds(started, Date.now())} s: fleet up in ${seconds(started, submittedAt)}, SIGTERM after ${seconds(submittedAt, sigtermAt)}, all finished after ${seconds(sigtermAt, finishedAt)}, checked in ${seconds(finishedAt, Date.now())}`,
        `queued at SIGTERM: ${queuedAtSigterm}`,
        `given back unstarted after SIGTERM: ${givenBack}`,
        `removed: ${removed
          .map(
            (w) =>
              `${w.name} held ${w.logs[lineIndex(w, "shutting down: leasing stopped")]?.held}, exited after ${exitMs.get(w.name)} ms`,
          )
          .join("; ")}`,
        `runs by the workers kept and added: ${[...kept, added].map((w) => `${w.name} ${startsBy(w)}`).join(", ")}`,
      ].join("; "),
    );
  });
});
