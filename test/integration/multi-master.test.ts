import * as assert from "node:assert/strict";
import { after, afterEach, before, describe, it, type TestContext } from "node:test";
import { Redis } from "ioredis";
import {
  redisUnavailable,
  type StartRedisOptions,
  startRedis,
  type TestRedis,
} from "../../services/master/test/redis-server.js";
import { mapLimited } from "../map-limited.js";
import { buildServices, type FleetProcess, until } from "./fleet";
import {
  ApiClient,
  isHeldTask,
  type MasterProcess,
  MultiMasterFleet,
  numberedTask,
  type TaskView,
} from "./multi-master";

const skip = redisUnavailable();
/** The master's default key prefix (RedisStoreOptions.prefix): each test has a Redis of its own. */
const prefix = "taskfleet:";

let redis: TestRedis | undefined;
let fleet: MultiMasterFleet | undefined;
/** Cleared when a test ends, so that its submitting lanes stop with it even when it fails. */
let running = false;

async function setUp(options: StartRedisOptions = {}): Promise<MultiMasterFleet> {
  running = true;
  redis = await startRedis(options);
  fleet = await MultiMasterFleet.start({ redis });
  return fleet;
}

async function tearDown(): Promise<void> {
  running = false;
  await fleet?.stop();
  await redis?.stop();
  fleet = undefined;
  redis = undefined;
}
afterEach(tearDown);
after(tearDown);

async function workers(f: MultiMasterFleet, count: number): Promise<void> {
  await Promise.all(Array.from({ length: count }, () => f.addWorker({ CONCURRENCY: "8" })));
}

/** What was submitted: ids in order and each task's expected result, filled in as answers come. */
interface Submitted {
  ids: string[];
  expected: unknown[];
}

/**
 * Submits tasks `0..count-1` of run `run` in batches from several lanes, each batch sent again
 * (same idempotency keys) until a 2xx answer; a lane holds back while more than `backlog` tasks
 * are queued, so that submitting goes on through the whole run instead of ending in its first
 * second. `stop` ends it early (Proof C submits until the rolling update is over).
 */
function submitStream(
  client: ApiClient,
  run: string,
  count: number,
  options: { batch: number; lanes: number; backlog: number; stop?: () => boolean },
): { submitted: Submitted; done: Promise<Submitted> } {
  const submitted: Submitted = { ids: [], expected: [] };
  let next = 0;
  const lane = async () => {
    while (running && next < count && !options.stop?.()) {
      // Only a look: a client that cannot read the stats (Redis away) submits all the same.
      const stats = await client.once<Record<string, number>>("GET", "/v1/stats");
      if (stats?.status === 200 && stats.body.queued > options.backlog) {
        await new Promise((resolve) => setTimeout(resolve, 20));
        continue;
      }
      if (next >= count || options.stop?.()) break;
      const first = next;
      next = Math.min(count, next + options.batch);
      const made = Array.from({ length: next - first }, (_, k) => numberedTask(run, first + k));
      const ids = await client.submit(made.map((m) => m.task));
      assert.equal(ids.length, made.length);
      made.forEach((m, k) => {
        submitted.ids[first + k] = ids[k] as string;
        submitted.expected[first + k] = m.expected;
      });
    }
  };
  // A stopped stream leaves no holes: every lane finishes the range it took.
  const done = Promise.all(Array.from({ length: options.lanes }, lane)).then(() => submitted);
  return { submitted, done };
}

async function untilFinished(client: ApiClient, count: number, timeoutMs: number): Promise<void> {
  let last: Record<string, number> = {};
  await until(
    async () => {
      last = await client.stats();
      return last.succeeded + last.failed >= count;
    },
    timeoutMs,
    () => `stats: ${JSON.stringify(last)}; client: ${client.describe()}`,
  );
}

async function untilSucceeded(client: ApiClient, count: number, timeoutMs = 60_000) {
  let last: Record<string, number> = {};
  await until(
    async () => {
      last = await client.stats();
      return last.succeeded >= count;
    },
    timeoutMs,
    () => `waiting for ${count} succeeded; stats: ${JSON.stringify(last)}`,
  );
  assert.ok(last.queued > 0, `the work ran out before the step at ${count}: nothing was in flight`);
}

/** Runs `work` on a connection of its own to the test's Redis, to read the store's keys. */
async function withRedis<T>(work: (direct: Redis) => Promise<T>): Promise<T> {
  const direct = new Redis({ host: redis?.host, port: redis?.port, lazyConnect: true });
  try {
    await direct.connect();
    return await work(direct);
  } finally {
    direct.disconnect();
  }
}

/** The tasks Redis holds as running under a lease of worker `name`, read in one step. */
function leasedTo(name: string): Promise<string[]> {
  return withRedis(async (direct) => {
    const running = await direct.zrange(`${prefix}running`, 0, -1);
    const pipeline = direct.pipeline();
    for (const id of running) pipeline.hmget(`${prefix}t:${id}`, "status", "leaseWorker");
    const fields = ((await pipeline.exec()) ?? []).map(([, value]) => value as string[]);
    return running.filter((_, k) => fields[k]?.[0] === "running" && fields[k]?.[1] === name);
  });
}

/** How many times each of `ids` is in the store's `finished` list (once per accepted result). */
function timesFinished(ids: readonly string[]): Promise<Map<string, number>> {
  return withRedis(async (direct) => {
    const finished = await direct.lrange(`${prefix}finished`, 0, -1);
    const times = new Map(ids.map((id) => [id, 0]));
    for (const id of finished) if (times.has(id)) times.set(id, (times.get(id) ?? 0) + 1);
    return times;
  });
}

/**
 * Waits until `worker` has just started a held task (numberedTask's lease-long sleep): its
 * "task started" line is under a second old and nothing has ended that attempt, so the worker
 * holds the task for another second at least. Returns the task's id.
 */
async function untilHolding(worker: FleetProcess, submitted: Submitted): Promise<string> {
  let found: string | undefined;
  await until(
    () => {
      const held = new Set(submitted.ids.filter((id, i) => id !== undefined && isHeldTask(i)));
      const open = new Map<string, number>();
      for (const line of worker.logs) {
        const id = String(line.taskId);
        if (!held.has(id)) continue;
        if (line.msg === "task started") open.set(id, Number(line.time));
        else open.delete(id);
      }
      found = [...open].find(([, time]) => Date.now() - time < 1000)?.[0];
      return found !== undefined;
    },
    20_000,
    () => `${worker.name} started no held task`,
  );
  return found as string;
}

/** Waits until every task of `ids` has succeeded; what they are says what a timeout means. */
async function untilAllSucceeded(
  client: ApiClient,
  ids: readonly string[],
  timeoutMs: number,
  what: string,
): Promise<TaskView[]> {
  let views: TaskView[] = [];
  await until(
    async () => {
      views = await mapLimited(ids, 16, (id) => client.task(id));
      return views.every((view) => view.status === "succeeded");
    },
    timeoutMs,
    () =>
      `${what}: ${views.map((v) => `${v.id} ${v.status} after ${v.attempts} attempt(s)`).join(", ")}`,
  );
  return views;
}

/** How many times each value occurs. */
function countBy(values: readonly string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const value of values) counts[value] = (counts[value] ?? 0) + 1;
  return counts;
}

/** A worker's log lines about task `id` with message `msg`, from line `from` on. */
function linesAbout(worker: FleetProcess, id: string, msg: string, from = 0) {
  return worker.logs.slice(from).filter((line) => line.taskId === id && line.msg === msg);
}

/**
 * The checks every proof ends with: every task succeeded with its own result, and each task's
 * result was accepted exactly once. A result is accepted by the one Lua script that finishes the
 * task, which appends its id to the `finished` list and adds one to `counts.succeeded`, both in
 * Redis; a completion accepted twice would append the id twice and count past the task count.
 * The handlers' own log lines ("task done") show every task ran to the end at least once.
 */
async function verify(
  f: MultiMasterFleet,
  client: ApiClient,
  submitted: Submitted,
): Promise<{ views: TaskView[]; reruns: number }> {
  const { ids, expected } = submitted;
  assert.equal(new Set(ids).size, ids.length, "two submissions were given the same id");
  const views = await mapLimited(ids, 32, (id) => client.task(id));
  const problems: string[] = [];
  views.forEach((view, i) => {
    if (view.status !== "succeeded") {
      problems.push(`task ${i} (${view.id}) ended ${view.status}: ${view.error ?? ""}`);
    } else if (JSON.stringify(view.result) !== JSON.stringify(expected[i])) {
      problems.push(
        `task ${i} (${view.id}) returned ${JSON.stringify(view.result)}, not ${JSON.stringify(expected[i])}`,
      );
    }
  });
  assert.deepEqual(problems.slice(0, 10), [], `${problems.length} task(s) went wrong`);

  const stats = await client.stats();
  assert.equal(stats.succeeded, ids.length, `stats: ${JSON.stringify(stats)}`);
  assert.equal(stats.failed, 0);
  assert.equal(stats.queued, 0);
  assert.equal(stats.running, 0);

  const direct = new Redis({ host: redis?.host, port: redis?.port, lazyConnect: true });
  try {
    await direct.connect();
    const finished = await direct.lrange(`${prefix}finished`, 0, -1);
    const once = new Set(finished);
    assert.equal(
      finished.length,
      once.size,
      `${finished.length - once.size} result(s) were accepted twice`,
    );
    assert.deepEqual([...once].sort(), [...ids].sort());
    assert.equal(Number(await direct.hget(`${prefix}counts`, "succeeded")), ids.length);
  } finally {
    direct.disconnect();
  }

  const runs = f.handlerRuns();
  const unseen = ids.filter((id) => (runs.get(id) ?? 0) === 0);
  assert.deepEqual(unseen.slice(0, 5), [], `${unseen.length} task(s) no handler ran`);
  let reruns = 0;
  for (const id of ids) reruns += (runs.get(id) ?? 0) - 1;
  return { views, reruns };
}

function report(t: TestContext, lines: Record<string, unknown>): void {
  t.diagnostic(
    Object.entries(lines)
      .map(([k, v]) => `${k}: ${String(v)}`)
      .join("; "),
  );
}

describe("masters sharing one Redis behind a load balancer, with real worker processes", {
  skip,
  timeout: 180_000,
}, () => {
  before(() => buildServices(), { timeout: 120_000 });

  it("Proof A: runs 10,000 tasks through 2 masters while one is killed and the other stopped, and a worker is killed and another frozen, none lost, none recorded twice", async (t) => {
    const started = Date.now();
    const count = 10_000;
    const f = await setUp();
    const first = await f.startMaster();
    const second = await f.startMaster();
    await workers(f, 3);
    const client = new ApiClient(f.url);
    const stream = submitStream(client, "a", count, { batch: 100, lanes: 4, backlog: 1500 });

    // SIGKILL cuts whatever the master was serving: leases Redis granted whose answer never left,
    // completions applied whose answer never arrived, submissions half sent.
    await untilSucceeded(client, 1_500);
    assert.equal(await f.killMaster(first), 128 + 9);
    const replacement = await f.startMaster();

    // A worker killed while it runs a held task: nobody will renew or complete its leases, so its
    // tasks come back only when a sweep expires them, LEASE_SECONDS on (checked after the next
    // step, which they have by then had time for).
    await untilSucceeded(client, 2_500);
    const killed = f.workers[0] as FleetProcess;
    const heldByKilled = await untilHolding(killed, stream.submitted);
    assert.equal(await f.killWorker(killed), 128 + 9);
    const orphans = await leasedTo(killed.name);
    assert.ok(
      orphans.includes(heldByKilled),
      `the killed worker's held task ${heldByKilled} was not running under its lease: ${orphans}`,
    );
    await f.addWorker({ CONCURRENCY: "8" });

    await untilSucceeded(client, 4_000);
    const [stopped] = await Promise.all([f.stopMaster(second), f.startMaster()]);
    assert.equal(stopped, 0, "the master sent SIGTERM did not exit 0");

    const orphanViews = await untilAllSucceeded(
      client,
      orphans,
      20_000,
      `tasks leased to the killed ${killed.name} never came back (lease expiry)`,
    );
    assert.ok(
      orphanViews.every((view) => view.attempts >= 2),
      JSON.stringify(orphanViews),
    );

    await untilSucceeded(client, 5_500);
    assert.equal(await f.killMaster(replacement), 128 + 9);
    await f.startMaster();

    // A worker frozen (SIGSTOP) while it runs a held task, until its leases have run out and
    // other workers have run those tasks to the end; thawed, its handlers finish at once and it
    // reports them: the master must turn every such late completion away as lease_lost, or the
    // task's result would be recorded a second time (the checks at the end count them). It comes
    // last because it takes a few seconds, during which the other workers run on through the
    // rest of the work.
    await untilSucceeded(client, 6_500);
    const frozen = f.workers[1] as FleetProcess;
    const heldByFrozen = await untilHolding(frozen, stream.submitted);
    f.freezeWorker(frozen);
    const frozenAt = Date.now();
    const stranded = await leasedTo(frozen.name);
    assert.ok(
      stranded.includes(heldByFrozen),
      `the frozen worker's held task ${heldByFrozen} was not running under its lease: ${stranded}`,
    );
    const strandedViews = await untilAllSucceeded(
      client,
      stranded,
      20_000,
      `tasks leased to the frozen ${frozen.name} were not run by others (lease expiry)`,
    );
    const frozenMs = Date.now() - frozenAt;
    // The held tasks among them, whose handlers cannot have returned before the worker froze:
    // each comes back from the thawed worker as a late completion (or, should a renewal's answer
    // come first, as an attempt abandoned).
    const heldIds = new Set(stream.submitted.ids.filter((_, i) => isHeldTask(i)));
    const late = strandedViews.filter((view) => heldIds.has(view.id));
    assert.ok(
      late.every((view) => view.attempts >= 2),
      JSON.stringify(strandedViews),
    );
    const thawedFrom = frozen.logs.length;
    f.thawWorker(frozen);
    const rejected = (id: string) =>
      linesAbout(frozen, id, "the master rejected a completion", thawedFrom).some(
        (line) => line.reason === "lease_lost",
      );
    const abandoned = (id: string) =>
      linesAbout(frozen, id, "lease lost; abandoning the task", thawedFrom).length > 0;
    const turnedAway = (id: string) => rejected(id) || abandoned(id);
    try {
      await until(() => late.every((view) => turnedAway(view.id)), 15_000);
    } catch {
      const open = late.map((view) => view.id).filter((id) => !turnedAway(id));
      const times = await timesFinished(open);
      const ran = (id: string) => linesAbout(frozen, id, "task done", thawedFrom).length > 0;
      assert.fail(
        `late completions of the thawed ${frozen.name} not turned away: ${open
          .map(
            (id) =>
              `${id} (its handler finished: ${ran(id)}; in the finished list ${times.get(id)}×)`,
          )
          .join(", ")}; what ${frozen.name} logged since: ${JSON.stringify(
          countBy(frozen.logs.slice(thawedFrom).map((line) => String(line.msg))),
        )}`,
      );
    }
    const lateRejected = late.filter((view) => rejected(view.id)).length;
    assert.ok(
      lateRejected > 0,
      `no late completion reached the master: ${frozen.name} abandoned all`,
    );

    const submitted = await stream.done;
    assert.equal(submitted.ids.length, count);
    await untilFinished(client, count, 120_000);
    const { views, reruns } = await verify(f, client, submitted);
    // Nothing 5xx but the 503 of a draining master (submissions it refused, sent again).
    assert.equal(client.serverErrors, client.count(503), client.describe());

    report(t, {
      tasks: count,
      seconds: ((Date.now() - started) / 1000).toFixed(1),
      "tasks the killed worker held": orphans.length,
      "tasks the frozen worker held": stranded.length,
      "frozen ms": frozenMs,
      "late completions turned away (lease_lost)": lateRejected,
      "late attempts abandoned (lease lost on renewal)": late.length - lateRejected,
      "masters killed": 2,
      "attempts no handler finished (leases lost in flight)":
        views.reduce((n, v) => n + v.attempts - 1, 0) - reruns,
      "masters stopped": 1,
      "tasks run more than once": reruns,
      "most attempts": Math.max(...views.map((v) => v.attempts)),
      client: client.describe(),
      "balancer connections": JSON.stringify(f.balancer.connectionCounts()),
    });
  });

  it("Proof B: loses no accepted task when Redis restarts mid-run; submissions refused meanwhile succeed when sent again", async (t) => {
    const started = Date.now();
    const count = 3_000;
    const f = await setUp({ appendOnly: true });
    await f.startMaster();
    await f.startMaster();
    await workers(f, 3);
    const client = new ApiClient(f.url);
    const submitting = submitStream(client, "b", count, { batch: 50, lanes: 4, backlog: 500 }).done;

    await untilSucceeded(client, 600);
    const served = new Map(client.statuses);
    const acceptedBefore = client.count(202);
    await redis?.shutdown();
    const down = Date.now();
    // The outage lasts until clients have submitted during it: 5 submissions refused with 503,
    // or 5 acknowledged (which only a master that acknowledges what it has not stored can do,
    // give or take the batches already in Redis when it stopped; the checks below catch that).
    await until(
      () => client.refusedSubmissions >= 5 || client.count(202) - acceptedBefore >= 5,
      30_000,
      () => client.describe(),
    );
    await redis?.restart();
    const outageMs = Date.now() - down;

    const submitted = await submitting;
    assert.equal(submitted.ids.length, count);
    await untilFinished(client, count, 120_000);
    const { views, reruns } = await verify(f, client, submitted);
    // Redis being away is a 503 (try again), never a 500.
    assert.equal(client.serverErrors, client.count(503), client.describe());
    assert.equal(served.get(503) ?? 0, 0, "503s before Redis went away");

    report(t, {
      tasks: count,
      seconds: ((Date.now() - started) / 1000).toFixed(1),
      "outage ms": outageMs,
      "503s seen by the client": client.count(503),
      "submissions refused (503) and sent again": client.refusedSubmissions,
      "tasks run more than once": reruns,
      "most attempts": Math.max(...views.map((v) => v.attempts)),
      client: client.describe(),
    });
  });

  it("Proof C: a rolling update of every master under load shows clients no 5xx and loses no task", async (t) => {
    const started = Date.now();
    const f = await setUp();
    const old = [await f.startMaster(), await f.startMaster()];
    await workers(f, 3);
    const client = new ApiClient(f.url);

    let rolled = false;
    const stream = submitStream(client, "c", 1_000_000, {
      batch: 20,
      lanes: 3,
      backlog: 200,
      stop: () => rolled,
    });
    let submitDone = false;
    void stream.done.then(() => {
      submitDone = true;
    });
    // Readers follow the submissions with long polls, as a client waiting for its results does,
    // each task until it has finished.
    const { ids } = stream.submitted;
    const finishedSeen = new Set<string>();
    const readers = Array.from({ length: 3 }, async (_, lane) => {
      for (let i = lane; ; i += 3) {
        await until(() => ids[i] !== undefined || submitDone, 60_000);
        const id = ids[i];
        if (id === undefined) return;
        let view = await client.task(id, 5);
        while (view.status !== "succeeded" && view.status !== "failed") {
          view = await client.task(id, 5);
        }
        finishedSeen.add(id);
      }
    });
    const reading = Promise.all(readers);

    await untilSucceeded(client, 300);
    const exits: number[] = [];
    const replaced: MasterProcess[] = [];
    for (const master of old) {
      replaced.push(await f.startMaster());
      const before = (await client.stats()).succeeded;
      exits.push(await f.stopMaster(master));
      // Work went on while the old master drained.
      assert.ok((await client.stats()).succeeded > before, "no task finished during the stop");
    }
    assert.deepEqual(exits, [0, 0], "a master sent SIGTERM did not exit 0");
    await untilSucceeded(client, (await client.stats()).succeeded + 200);
    rolled = true;
    const submitted = await stream.done;
    await reading;

    assert.equal(client.serverErrors, 0, `clients saw 5xx: ${client.describe()}`);
    // A master that drains closes each connection after its answer, and the balancer stops
    // sending it new ones: no request is left without an answer either.
    assert.equal(client.networkErrors, 0, `requests lost: ${client.describe()}`);
    await untilFinished(client, submitted.ids.length, 60_000);
    const { reruns } = await verify(f, client, submitted);
    assert.equal(finishedSeen.size, submitted.ids.length, "a reader missed a task");
    assert.equal(client.serverErrors, 0, `clients saw 5xx: ${client.describe()}`);

    report(t, {
      tasks: submitted.ids.length,
      seconds: ((Date.now() - started) / 1000).toFixed(1),
      "masters replaced": old.length,
      "tasks run more than once": reruns,
      client: client.describe(),
      "masters now": f
        .live()
        .map((m) => m.name)
        .join(","),
    });
  });
});
