import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import { MasterClient } from "../src/master-client.js";
import type { FakeMaster } from "./fake-master.js";
import { harness } from "./helpers.js";

const { fakeMaster, worker } = harness();

/**
 * Requests to `route` the worker makes within `ms` of its first one (a worker leases only once its
 * task threads are up, which takes a while on a busy machine).
 */
async function requestsWithin(master: FakeMaster, route: string, ms: number): Promise<number> {
  await master.until(() => master.callsTo(route).length > 0);
  const before = master.callsTo(route).length;
  await new Promise((resolve) => setTimeout(resolve, ms));
  return master.callsTo(route).length - before;
}

/**
 * A master with a bug must cost the worker little: it reads every answer against the protocol,
 * runs nothing it cannot read or did not ask for, gives such tasks back, and backs off. The test
 * workers back off from 20 ms doubling to 200 ms, so a second of a broken master allows about a
 * dozen requests of a kind; the bounds below leave room for a slow machine.
 */
describe("worker against a misbehaving master", () => {
  it("runs no more tasks than it asked for and gives the rest back", async () => {
    const master = await fakeMaster();
    master.leaseMaxOverride = 1000;
    const ids = Array.from({ length: 100 }, () => master.add("gauge", { ms: 50 }));
    await worker(master, { concurrency: 4 });
    await master.until(() => master.callsTo("release").length > 0);
    const [firstLease] = master.callsTo("lease");
    assert.equal(firstLease?.body.max, 4);
    const [firstRelease] = master.callsTo("release");
    assert.equal((firstRelease?.body.leases as unknown[] | undefined)?.length, 96);
    await master.until(() => master.finished().length >= 8);
    const spans = ids
      .map((id) => master.tasks.get(id)?.result as { start: number; end: number } | undefined)
      .filter((span) => span !== undefined);
    const most = Math.max(
      ...spans.map(({ start }) => spans.filter((s) => s.start <= start && start < s.end).length),
    );
    assert.ok(most <= 4, `${most} tasks ran at once`);
    // Leases carried by completions are held to what they asked for as well.
    assert.ok(master.callsTo("complete").some((call) => call.body.lease !== undefined));
    assert.ok((await requestsWithin(master, "lease", 1000)) <= 20);
  });

  for (const [name, answer] of [
    [
      "a task with a field of the wrong type",
      {
        tasks: [
          { id: "t1", leaseId: "l1", type: "echo", payload: 1, attempt: "1", timeoutSeconds: 30 },
        ],
        leaseSeconds: 30,
      },
    ],
    ["tasks that are not a list", { tasks: "echo", leaseSeconds: 30 }],
    [
      "no lease period",
      {
        tasks: [
          { id: "t1", leaseId: "l1", type: "echo", payload: 1, attempt: 1, timeoutSeconds: 30 },
        ],
      },
    ],
    ["a string instead of an object", "<html>oops</html>"],
  ] as const) {
    it(`backs off and runs nothing when the lease answer has ${name}`, async () => {
      const master = await fakeMaster();
      master.rewrite.lease = () => answer;
      const { logs } = await worker(master);
      const leases = await requestsWithin(master, "lease", 1000);
      assert.ok(leases <= 20, `${leases} lease requests in one second`);
      assert.equal(master.callsTo("complete").length, 0);
      const readable = typeof answer === "object" && Array.isArray(answer.tasks);
      if (readable) {
        // Tasks whose id and lease id can be read go back at once instead of waiting to expire.
        const released = master.callsTo("release").flatMap((call) => call.body.leases);
        assert.deepEqual(released[0], { id: "t1", leaseId: "l1" });
      }
      const complaints = logs.filter(
        (line) => line.msg === "the master's answer broke the protocol; retrying with backoff",
      );
      assert.equal(complaints.length, 1);
    });
  }

  for (const [transport, named] of [
    ["HTTP", /POST \/worker\/v1\/lease: answer larger than 1114112 bytes/],
    ["the worker stream", /lease on the worker stream: answer larger than 1114112 bytes/],
  ] as const) {
    it(`refuses an answer larger than what it asked for can be, over ${transport}`, async () => {
      const master = await fakeMaster({ stream: transport !== "HTTP" });
      master.rewrite.lease = (answer) => ({ ...answer, padding: "x".repeat(2 * 1024 * 1024) });
      const client = new MasterClient({
        masterUrl: master.url,
        workerToken: master.token,
        leaseAnswerBytesPerTask: 1024 * 1024,
      });
      try {
        await assert.rejects(client.lease("test-worker", 1, 0), named);
        // The next call is answered as usual: one oversized answer breaks nothing else.
        delete master.rewrite.lease;
        const answer = await client.lease("test-worker", 1, 0);
        assert.deepEqual(answer.tasks, []);
      } finally {
        client.close();
      }
    });
  }

  it("does not spin when lease answers come back empty at once, as from a draining master", async () => {
    const master = await fakeMaster();
    master.rewrite.lease = () => ({ tasks: [], leaseSeconds: 30 });
    await worker(master);
    const leases = await requestsWithin(master, "lease", 1000);
    assert.ok(leases <= 20, `${leases} lease requests in one second`);
  });

  it("backs off while the master answers 5xx", async () => {
    const master = await fakeMaster();
    master.failWith = 503;
    await worker(master);
    const leases = await requestsWithin(master, "lease", 1000);
    assert.ok(leases <= 20, `${leases} lease requests in one second`);
  });

  it("keeps renewing at a third of a lease when a renew answer has a lease period out of range", async () => {
    const master = await fakeMaster({ leaseSeconds: 1 });
    master.rewrite.renew = (answer) => ({ ...answer, leaseSeconds: 0.001 });
    const id = master.add("sleep", { ms: 1500 });
    const { logs } = await worker(master);
    await master.until(() => master.finished().length === 1);
    assert.equal(master.tasks.get(id)?.status, "succeeded");
    const renewals = master.callsTo("renew").length;
    assert.ok(renewals <= 15, `${renewals} renewals for a task of 1.5 s with leases of 1 s`);
    assert.ok(
      logs.some(
        (line) => line.msg === "the master's answer broke the protocol; retrying with backoff",
      ),
    );
  });
});
