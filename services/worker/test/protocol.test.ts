import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Backoff } from "@taskfleet/protocol/backoff";
import { limits } from "@taskfleet/protocol/limits";
import {
  MasterProtocolError,
  readCompleteAnswer,
  readLeaseAnswer,
  readRenewAnswer,
} from "@taskfleet/protocol/wire";
import { describeThrown, serializeResult } from "../src/handler-outcome.js";

function task(id: string, fields: Record<string, unknown> = {}) {
  return {
    id,
    leaseId: `lease-${id}`,
    type: "echo",
    payload: id,
    attempt: 1,
    timeoutSeconds: 30,
    ...fields,
  };
}

describe("worker protocol", () => {
  it("runs at most the tasks it asked for and gives back the others", () => {
    const answer = readLeaseAnswer(
      { tasks: ["a", "b", "c", "d"].map((id) => task(id)), leaseSeconds: 30 },
      2,
    );
    assert.deepEqual(
      answer.tasks.map((t) => t.id),
      ["a", "b"],
    );
    assert.deepEqual(answer.giveBack, [
      { id: "c", leaseId: "lease-c" },
      { id: "d", leaseId: "lease-d" },
    ]);
    assert.deepEqual(answer.problems, ["2 tasks beyond the 2 asked for"]);
  });

  it("reads the lease a completion carried as a lease answer, and keeps the results' part when it is broken", () => {
    const results = { accepted: ["x"], rejected: [{ id: "y", reason: "lease_lost" }] };
    const carried = readCompleteAnswer(
      { ...results, lease: { tasks: ["a", "b", "c"].map((id) => task(id)), leaseSeconds: 30 } },
      2,
    );
    assert.deepEqual(carried.accepted, ["x"]);
    assert.deepEqual(
      carried.lease?.tasks.map((t) => t.id),
      ["a", "b"],
    );
    assert.deepEqual(carried.lease?.giveBack, [{ id: "c", leaseId: "lease-c" }]);

    const broken = readCompleteAnswer({ ...results, lease: { tasks: "a" } }, 2);
    assert.deepEqual(broken.rejected, results.rejected);
    assert.deepEqual(broken.lease?.tasks, []);
    assert.equal(broken.lease?.problemCount, 1);
    // Not asked for: not read, whatever the master sent.
    assert.equal(readCompleteAnswer({ ...results, lease: { tasks: "a" } }).lease, undefined);
    assert.equal(readCompleteAnswer(results, 2).lease, undefined);
  });

  it("gives back a task it cannot read when it can read its lease, and runs a duplicate once", () => {
    const answer = readLeaseAnswer(
      {
        tasks: [task("a", { timeoutSeconds: "soon" }), { nothing: true }, task("b"), task("b")],
        leaseSeconds: 30,
      },
      4,
    );
    assert.deepEqual(
      answer.tasks.map((t) => t.id),
      ["b"],
    );
    assert.deepEqual(answer.giveBack, [{ id: "a", leaseId: "lease-a" }]);
    assert.equal(answer.problemCount, 3);
    assert.match(answer.problems[0] ?? "", /^tasks\.0: timeoutSeconds: /);
  });

  it("runs nothing of an answer without a valid lease period", () => {
    for (const leaseSeconds of [undefined, 0, 0.001, 3601, "30"]) {
      const answer = readLeaseAnswer({ tasks: [task("a")], leaseSeconds }, 4);
      assert.deepEqual(answer.tasks, []);
      assert.deepEqual(answer.giveBack, [{ id: "a", leaseId: "lease-a" }]);
    }
  });

  it("refuses answers that are not what the route answers", () => {
    for (const body of [null, "tasks", [], { tasks: "a" }, { tasks: {} }]) {
      assert.throws(() => readLeaseAnswer(body, 4), MasterProtocolError);
    }
    assert.throws(
      () => readRenewAnswer({ renewed: [], lost: [], leaseSeconds: 0.001 }),
      /POST \/worker\/v1\/renew: unexpected answer \(leaseSeconds: /,
    );
  });
});

describe("handler outcomes", () => {
  it("describes whatever a handler throws without throwing itself", () => {
    const hostile = new Proxy(
      {},
      {
        get() {
          throw new Error("trap");
        },
        getPrototypeOf() {
          throw new Error("trap");
        },
        ownKeys() {
          throw new Error("trap");
        },
      },
    );
    const badMessage = new Error("x");
    Object.defineProperty(badMessage, "message", {
      get() {
        throw new Error("trap");
      },
    });
    assert.equal(describeThrown(Object.create(null)), "[Object: null prototype] {}");
    assert.equal(describeThrown("plain text"), "plain text");
    assert.equal(describeThrown({ code: 7 }), "{ code: 7 }");
    assert.equal(describeThrown(new TypeError("")), "TypeError");
    assert.equal(describeThrown(hostile), "the handler threw a value that cannot be described");
    assert.equal(describeThrown(badMessage), "the handler threw a value that cannot be described");
    assert.equal(describeThrown("x".repeat(100_000)).length, limits.errorMaxChars);
  });

  it("measures a result in UTF-8 bytes, not characters", () => {
    const accented = "é".repeat(600);
    assert.deepEqual(serializeResult(accented.slice(0, 499), 1000), {
      ok: true,
      resultJson: JSON.stringify(accented.slice(0, 499)),
    });
    const outcome = serializeResult(accented, 1000);
    assert.equal(outcome.ok, false);
    assert.match(
      !outcome.ok ? outcome.error : "",
      /result is 1202 bytes of JSON, more than the 1000/,
    );
  });

  it("fails a result that is not JSON, without a retry", () => {
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    for (const value of [circular, 1n, () => 1, Symbol("s")]) {
      const outcome = serializeResult(value, 1000);
      assert.equal(outcome.ok, false);
      assert.equal(!outcome.ok && outcome.retryable, false);
    }
    assert.deepEqual(serializeResult(undefined, 1000), { ok: true, resultJson: "null" });
  });
});

describe("backoff", () => {
  it("doubles from the initial delay to the cap, with jitter in the upper half, until reset", () => {
    const backoff = new Backoff(100, 1000);
    const ceilings = [100, 200, 400, 800, 1000, 1000];
    for (const ceiling of ceilings) {
      const wait = backoff.next();
      assert.ok(
        wait >= ceiling / 2 && wait <= ceiling,
        `${wait} outside ${ceiling / 2}-${ceiling}`,
      );
    }
    backoff.reset();
    assert.ok(backoff.next() <= 100);
  });
});
