import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import { workerEnv } from "@taskfleet/protocol/worker-env";
import {
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
