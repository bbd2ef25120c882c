import * as assert from "node:assert/strict";
import { describe, it, type TestContext } from "node:test";
import { workerEnv } from "@taskfleet/protocol/worker-env";
import {
  encodeResult,
  MasterClient,
  type MasterClientOptions,
  optionalFieldRetryMs,
} from "../src/master-client.js";
import type { FakeMaster } from "./fake-master.js";
import { harness } from "./helpers.js";

const { fakeMaster } = harness();

/** The body of the one lease request a client with `options` sends. */
async function leaseBody(
  master: FakeMaster,
  options: Partial<MasterClientOptions>,
): Promise<Record<string, unknown> | undefined> {
  const client = new MasterClient({ masterUrl: master.url, workerToken: master.token, ...options });
  try {
    await client.lease("test-worker", 2, 0);
  } finally {
    client.close();
  }
  return master.callsTo("lease")[0]?.body;
}

describe("the lease request", () => {
  it("tells the master the worker's slots, so that it can count the fleet's capacity", async () => {
    const master = await fakeMaster();
    assert.deepEqual(await leaseBody(master, { slots: 8 }), {
      workerId: "test-worker",
      max: 2,
      waitMs: 0,
      slots: 8,
    });
  });

  it("leaves the slots out when it is not given them, as workers before the field did", async () => {
    const master = await fakeMaster();
    assert.deepEqual(await leaseBody(master, {}), { workerId: "test-worker", max: 2, waitMs: 0 });
  });

  it("leases without slots from a master older than the field, which refuses it, and offers them again later", async (t) => {
    const master = await fakeMaster();
    // The message is the one the master's validation gives for a property its schema lacks.
    master.unknownLeaseProperties = ["slots"];
    t.mock.timers.enable({ apis: ["Date"] });
    const client = new MasterClient({ masterUrl: master.url, workerToken: master.token, slots: 8 });
    try {
      const answer = await client.lease("test-worker", 2, 0);
      assert.deepEqual(answer.tasks, []);
      await client.lease("test-worker", 2, 0);
      const slotsSent = () => master.callsTo("lease").map((call) => call.body.slots);
      assert.deepEqual(
        slotsSent(),
        [8, undefined, undefined],
        "refused once, then asked without slots, and not offered again at once",
      );
      t.mock.timers.tick(optionalFieldRetryMs + 1);
      await client.lease("test-worker", 2, 0);
      assert.deepEqual(slotsSent(), [8, undefined, undefined, 8, undefined], "offered again later");
    } finally {
      client.close();
    }
  });

  it("refuses slots outside 1 to the CONCURRENCY maximum, as the master would", () => {
    const { max } = workerEnv.CONCURRENCY;
    for (const slots of [0, max + 1, 1.5, Number.NaN]) {
      assert.throws(
        () => new MasterClient({ masterUrl: "http://127.0.0.1:1", workerToken: "t", slots }),
        { name: "RangeError", message: `slots must be an integer from 1 to ${max} (got ${slots})` },
      );
    }
  });
});

describe("the worker stream", () => {
  /** A client of `master`, closed when the test ends. */
  const client = (
    t: TestContext,
    master: FakeMaster,
    options: Partial<MasterClientOptions> = {},
  ) => {
    const worker = new MasterClient({
      masterUrl: master.url,
      workerToken: master.token,
      ...options,
    });
    t.after(() => worker.close());
    return worker;
  };

  it("carries every call on one stream, opened once", async (t) => {
    const master = await fakeMaster();
    const id = master.add("echo", 1);
    const worker = client(t, master);
    const [task] = (await worker.lease("test-worker", 1, 0)).tasks;
    assert.equal(task?.id, id);
    const lease = { id, leaseId: task?.leaseId as string };
    assert.deepEqual((await worker.renew("test-worker", [lease])).renewed, [id]);
    const result = encodeResult({ ...lease, ok: true, resultJson: "2" });
    const answer = await worker.complete("test-worker", [result], { max: 1 });
    assert.deepEqual(answer.accepted, [id]);
    assert.deepEqual(answer.lease?.tasks, []);
    assert.deepEqual((await worker.release("test-worker", [lease])).released, []);
    assert.equal(master.tasks.get(id)?.result, 2);
    assert.deepEqual(
      master.calls.map((call) => `${call.route} ${call.via}`),
      ["stream http", "lease stream", "renew stream", "complete stream", "release stream"],
    );
  });

  it("calls over HTTP to a master without the stream, and offers the stream again later", async (t) => {
    const master = await fakeMaster({ stream: false });
    t.mock.timers.enable({ apis: ["Date"] });
    const worker = client(t, master);
    await worker.lease("test-worker", 1, 0);
    await worker.lease("test-worker", 1, 0);
    const routes = () => master.calls.map((call) => `${call.route} ${call.via}`);
    assert.deepEqual(routes(), ["stream http", "lease http", "lease http"]);
    t.mock.timers.tick(optionalFieldRetryMs + 1);
    master.offersStream = true;
    await worker.lease("test-worker", 1, 0);
    assert.deepEqual(routes().slice(3), ["stream http", "lease stream"]);
  });

  it("fails the calls in flight as unreachable when the stream breaks, and opens another for the next", async (t) => {
    const master = await fakeMaster();
    const port = Number(new URL(master.url).port);
    const worker = client(t, master);
    const waiting = worker.lease("test-worker", 1, 10_000);
    await master.until(() => master.callsTo("lease").length === 1);
    await master.stop();
    await assert.rejects(waiting, { name: "MasterUnavailableError" });
    await master.listen(port);
    const id = master.add("echo", 1);
    assert.equal((await worker.lease("test-worker", 1, 0)).tasks[0]?.id, id);
    assert.equal(master.callsTo("stream").length, 2);
  });

  it("withdraws a waiting lease when its signal aborts: the master is told", async (t) => {
    const master = await fakeMaster();
    const worker = client(t, master);
    await worker.lease("test-worker", 1, 0);
    const controller = new AbortController();
    const waiting = worker.lease("test-worker", 1, 10_000, controller.signal);
    await master.until(() => master.callsTo("lease").length === 2);
    controller.abort(new Error("stopping"));
    await assert.rejects(waiting, /stopping/);
    await master.until(() => master.cancelled.length === 1);
    // The stream stays up for the calls after it.
    await worker.lease("test-worker", 1, 0);
    assert.equal(master.callsTo("stream").length, 1);
  });

  it("moves to a new stream when the master is going away, and closes the old one once its calls are answered", async (t) => {
    const master = await fakeMaster();
    const worker = client(t, master);
    const waiting = worker.lease("test-worker", 1, 10_000);
    await master.until(() => master.callsTo("lease").length === 1);
    master.goAway();
    await new Promise((resolve) => setTimeout(resolve, 50));
    await worker.renew("test-worker", []);
    assert.equal(master.callsTo("stream").length, 2, "the next call went on a new stream");
    assert.equal(master.openStreams, 2, "the old stream stays open while its lease waits");
    const id = master.add("echo", 1);
    assert.equal((await waiting).tasks[0]?.id, id, "the call in flight is answered");
    await master.until(() => master.openStreams === 1);
  });

  it("takes a master that does not answer in time for gone, and opens a new stream", async (t) => {
    const master = await fakeMaster();
    const worker = client(t, master, { requestTimeoutMs: 200 });
    await worker.lease("test-worker", 1, 0);
    master.answerDelayMs.renew = 1000;
    await assert.rejects(worker.renew("test-worker", []), {
      name: "MasterUnavailableError",
      message: "renew on the worker stream timed out",
    });
    delete master.answerDelayMs.renew;
    await worker.renew("test-worker", []);
    assert.equal(master.callsTo("stream").length, 2);
  });

  it("reports a refused token on the upgrade as the routes do (401)", async (t) => {
    const master = await fakeMaster();
    const worker = client(t, master, { workerToken: "wrong" });
    await assert.rejects(worker.lease("test-worker", 1, 0), {
      name: "MasterRejectedError",
      status: 401,
      message: "GET /worker/v1/stream answered 401: missing or wrong worker token",
    });
  });
});
