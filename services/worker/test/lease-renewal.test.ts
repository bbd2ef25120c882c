import * as assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import {
  type HeldLease,
  LeaseLost,
  LeaseRenewal,
  type LeaseRenewalOptions,
  leasesPerRequest,
} from "../src/lease-renewal.js";
import {
  type LeaseRef,
  type MasterApi,
  MasterUnavailableError,
  type RenewResponse,
} from "../src/master-client.js";
import { captureLogger } from "./helpers.js";

/** One `renew` call as the renewal made it. */
interface RenewCall {
  at: number;
  leases: LeaseRef[];
}

/** A master whose `renew` answers with `answer` (by default: all renewed, leases of `seconds`). */
function fakeMaster(
  seconds: number,
  answer: (leases: readonly LeaseRef[], call: number) => Promise<RenewResponse> = async (
    leases,
  ) => ({ renewed: leases.map(({ id }) => id), lost: [], leaseSeconds: seconds }),
) {
  const calls: RenewCall[] = [];
  const unused = () => Promise.reject(new Error("not used by the lease renewal"));
  const master: MasterApi = {
    lease: unused,
    complete: unused,
    release: unused,
    close() {},
    renew(_workerId, leases) {
      calls.push({ at: performance.now(), leases: [...leases] });
      return answer(leases, calls.length);
    },
  };
  return { master, calls };
}

function held(...ids: string[]): Map<string, HeldLease> {
  return new Map(
    ids.map((id) => [
      id,
      { id, leaseId: `lease-${id}`, type: "sleep", controller: new AbortController() },
    ]),
  );
}

const renewals: LeaseRenewal[] = [];
afterEach(() => {
  for (const renewal of renewals.splice(0)) renewal.stop();
});

function renewal(master: MasterApi, options: Partial<LeaseRenewalOptions> = {}) {
  const { logger, lines } = captureLogger();
  const events: string[] = [];
  const renewal = new LeaseRenewal({
    master,
    workerId: "test-worker",
    logger,
    held: new Map(),
    resultLeases: () => [],
    onReachable: () => events.push("reachable"),
    onUnreachable: (error) => events.push(`unreachable: ${(error as Error).message}`),
    ...options,
  });
  renewals.push(renewal);
  return { renewal, logs: lines, events };
}

async function until(predicate: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error("timed out waiting for a condition");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Gaps between calls, in milliseconds. */
const gaps = (calls: RenewCall[]) => calls.slice(1).map((call, n) => call.at - (calls[n]?.at ?? 0));

describe("lease renewal", () => {
  it("renews the held tasks' leases, then the results', every third of a lease", async () => {
    const { master, calls } = fakeMaster(0.09);
    // A result waiting to be sent, as the result batcher lists it.
    const unsent = { id: "r1", leaseId: "lease-r1", json: "{}", bytes: 2, ok: true };
    const { renewal: leases } = renewal(master, {
      held: held("t1", "t2"),
      resultLeases: () => [unsent],
    });
    leases.setLeaseSeconds(0.09);
    await until(() => calls.length === 3);
    for (const call of calls) {
      // Only the refs go on the wire, not the rest of what the worker holds.
      assert.deepEqual(call.leases, [
        { id: "t1", leaseId: "lease-t1" },
        { id: "t2", leaseId: "lease-t2" },
        { id: "r1", leaseId: "lease-r1" },
      ]);
    }
    // A millisecond or two of slack for the timer clock's rounding.
    for (const gap of gaps(calls)) assert.ok(gap >= 28, `renewed after ${gap} ms`);
  });

  it("takes the lease period of each renew answer for the next renewal", async () => {
    const { master, calls } = fakeMaster(0.3);
    const { renewal: leases } = renewal(master, { held: held("t1") });
    leases.setLeaseSeconds(0.03);
    await until(() => calls.length === 2);
    const [gap] = gaps(calls);
    assert.ok(gap !== undefined && gap >= 98, `renewed again after ${gap} ms, not 100`);
  });

  it("is not pushed back by lease answers of the same period", async () => {
    const { master, calls } = fakeMaster(0.06);
    const { renewal: leases } = renewal(master, { held: held("t1") });
    // The lease loop passes on the period of every lease answer, here every 5 ms.
    const until200 = Date.now() + 200;
    while (Date.now() < until200) {
      leases.setLeaseSeconds(0.06);
      await sleep(5);
    }
    assert.ok(calls.length >= 4, `${calls.length} renewals in 200 ms at one per 20 ms`);
  });

  it("aborts and logs a task whose lease was lost, ignoring ids it no longer holds", async () => {
    const tasks = held("t1", "t2");
    const { master } = fakeMaster(0.06, async () => ({
      renewed: ["t1"],
      lost: ["t2", "finished-meanwhile"],
      leaseSeconds: 0.06,
    }));
    const { renewal: leases, logs } = renewal(master, { held: tasks });
    leases.setLeaseSeconds(0.06);
    const lost = tasks.get("t2")?.controller.signal as AbortSignal;
    await until(() => lost.aborted);
    assert.ok(lost.reason instanceof LeaseLost);
    assert.equal(tasks.get("t1")?.controller.signal.aborted, false);
    const warnings = logs.filter((line) => line.msg === "lease lost; abandoning the task");
    assert.deepEqual(
      warnings.map((line) => [line.level, line.taskId, line.type]),
      [["warn", "t2", "sleep"]],
    );
  });

  it(`sends ${leasesPerRequest} leases a request at the most`, async () => {
    const ids = Array.from({ length: leasesPerRequest + 1 }, (_, i) => `t${i}`);
    const { master, calls } = fakeMaster(0.06);
    const { renewal: leases } = renewal(master, { held: held(...ids) });
    leases.setLeaseSeconds(0.06);
    await until(() => calls.length === 2);
    assert.deepEqual(
      calls.map((call) => call.leases.length),
      [leasesPerRequest, 1],
    );
    assert.deepEqual(
      calls.flatMap((call) => call.leases.map(({ id }) => id)),
      ids,
    );
  });

  it("after a failure waits for the next renewal, reporting the master unreachable", async () => {
    const ids = Array.from({ length: leasesPerRequest + 1 }, (_, i) => `t${i}`);
    const { master, calls } = fakeMaster(0.09, async (leases, call) => {
      if (call === 1) throw new MasterUnavailableError("POST /worker/v1/renew answered 503");
      return { renewed: leases.map(({ id }) => id), lost: [], leaseSeconds: 0.09 };
    });
    const { renewal: leases, events } = renewal(master, { held: held(...ids) });
    leases.setLeaseSeconds(0.09);
    await until(() => calls.length === 3);
    // The failed first request is not retried at once, and the rest of its renewal is skipped.
    assert.deepEqual(
      calls.map((call) => call.leases.length),
      [leasesPerRequest, leasesPerRequest, 1],
    );
    const [afterFailure] = gaps(calls);
    assert.ok(afterFailure !== undefined && afterFailure >= 28, `retried after ${afterFailure} ms`);
    assert.deepEqual(events, [
      "unreachable: POST /worker/v1/renew answered 503",
      "reachable",
      "reachable",
    ]);
  });

  it("sends nothing while there is nothing to renew", async () => {
    const { master, calls } = fakeMaster(0.03);
    const { renewal: leases } = renewal(master);
    leases.setLeaseSeconds(0.03);
    await sleep(100);
    assert.equal(calls.length, 0);
  });

  it("renews nothing more once stopped", async () => {
    const { master, calls } = fakeMaster(0.03);
    const { renewal: leases } = renewal(master, { held: held("t1") });
    leases.setLeaseSeconds(0.03);
    await until(() => calls.length === 1);
    leases.stop();
    await sleep(100);
    assert.equal(calls.length, 1);
  });

  it("renews nothing more when stopped while a renew request is on its way", async () => {
    let answer: (() => void) | undefined;
    const { master, calls } = fakeMaster(
      0.03,
      (leases) =>
        new Promise<RenewResponse>((resolve) => {
          answer = () =>
            resolve({ renewed: leases.map(({ id }) => id), lost: [], leaseSeconds: 0.03 });
        }),
    );
    const { renewal: leases } = renewal(master, { held: held("t1") });
    leases.setLeaseSeconds(0.03);
    await until(() => calls.length === 1);
    // Shutdown stops the renewals before the master answers the request in flight.
    leases.stop();
    answer?.();
    await sleep(100);
    assert.equal(calls.length, 1);
  });
});
