import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import { limits, RESULT_ENVELOPE_BYTES } from "@taskfleet/protocol/limits";
import {
  type CompleteResponse,
  type EncodedResult,
  encodeResult,
  type MasterApi,
  MasterRejectedError,
  MasterUnavailableError,
  type TaskResult,
} from "../src/master-client.js";
import { ResultBatcher, type ResultBatcherOptions } from "../src/result-batcher.js";
import { captureLogger } from "./helpers.js";

/** One `complete` call as the batcher made it: when, and the body `MasterClient` would send. */
interface CompleteCall {
  at: number;
  results: EncodedResult[];
  body: string;
}

/** A master whose `complete` answers with `answer`, recording each call. */
function fakeMaster(
  answer: (results: readonly EncodedResult[]) => Promise<CompleteResponse> = async (results) => ({
    accepted: results.map(({ id }) => id),
    rejected: [],
  }),
) {
  const calls: CompleteCall[] = [];
  const unused = () => Promise.reject(new Error("not used by the result batcher"));
  const master: MasterApi = {
    lease: unused,
    renew: unused,
    release: unused,
    close() {},
    complete(workerId, results) {
      const list = results.map((result) => result.json).join(",");
      const body = `{"workerId":${JSON.stringify(workerId)},"results":[${list}]}`;
      calls.push({ at: performance.now(), results: [...results], body });
      return answer(results);
    },
  };
  return { master, calls };
}

function batcher(master: MasterApi, options: Partial<ResultBatcherOptions> = {}) {
  const { logger, lines } = captureLogger();
  const events: string[] = [];
  const stop = new AbortController();
  const results = new ResultBatcher({
    master,
    workerId: "test-worker",
    logger,
    maxResultBytes: 1024 * 1024,
    bufferBytes: 16 * 1024 * 1024,
    initialBackoffMs: 20,
    maxBackoffMs: 200,
    signal: stop.signal,
    onReachable: () => events.push("reachable"),
    onUnreachable: (error) => events.push(`unreachable: ${(error as Error).message}`),
    afterSend: () => events.push("sent"),
    ...options,
  });
  return { results, logs: lines, events, stop };
}

function success(id: string, chars = 10): TaskResult {
  return { id, leaseId: `lease-${id}`, ok: true, resultJson: JSON.stringify("x".repeat(chars)) };
}

async function until(predicate: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error("timed out waiting for a condition");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** A promise and the function that settles it, to hold a request open. */
function deferred<T>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((done) => {
    resolve = done;
  });
  return { promise, resolve };
}

const ids = (call: CompleteCall | undefined) => call?.results.map(({ id }) => id);

describe("result batcher", () => {
  it("sends the results added in one event-loop turn in one request", async () => {
    const { master, calls } = fakeMaster();
    const { results, events } = batcher(master);
    for (const id of ["a", "b", "c"]) results.add(success(id));
    assert.equal(calls.length, 0, "sent before the turn was over");
    await until(() => calls.length === 1 && events.includes("sent"));
    assert.deepEqual(ids(calls[0]), ["a", "b", "c"]);
    results.add(success("d"));
    await until(() => calls.length === 2);
    assert.deepEqual(ids(calls[1]), ["d"]);
    assert.equal(results.pendingCount, 0);
  });

  it("sends a result added while a request is finishing, as inline tasks add theirs", async () => {
    const { master, calls } = fakeMaster();
    let added = false;
    // After the answer, before the request's bookkeeping is over: a task that ran on this thread
    // (an inline type, started by a lease answer) can finish right there, within microtasks.
    const { results } = batcher(master, {
      afterSend: () => {
        if (added) return;
        added = true;
        void Promise.resolve().then(() => results.add(success("late")));
      },
    });
    results.add(success("first"));
    await until(() => calls.length === 2);
    assert.deepEqual(calls.map(ids), [["first"], ["late"]]);
    assert.equal(results.pendingCount, 0);
  });

  it("splits results so that no request is over MAX_RESULT_BYTES plus the envelope", async () => {
    const maxResultBytes = 1000;
    const requestMaxBytes = maxResultBytes + RESULT_ENVELOPE_BYTES;
    const { master, calls } = fakeMaster();
    const { results } = batcher(master, { maxResultBytes });
    // Sizes from a few bytes to the largest allowed, so batches end at different counts.
    const sent: string[] = [];
    for (let i = 0; i < 60; i++) {
      const id = `t${i}`;
      const result = success(id, (i * 379) % 950);
      assert.ok(encodeResult(result).bytes <= maxResultBytes);
      results.add(result);
      sent.push(id);
    }
    await until(() => calls.flatMap((call) => call.results).length === sent.length);
    for (const call of calls) {
      const bytes = Buffer.byteLength(call.body);
      assert.ok(bytes <= requestMaxBytes, `a request of ${bytes} bytes`);
    }
    assert.ok(calls.length > 1, "the results were not split");
    assert.ok(calls.length < sent.length, "the results were not batched at all");
    assert.deepEqual(
      calls.flatMap((call) => ids(call)),
      sent,
    );
  });

  it("sends at most limits.workerBatchMax results per request", async () => {
    const { master, calls } = fakeMaster();
    const { results } = batcher(master, { maxResultBytes: 64 * 1024 * 1024 });
    for (let i = 0; i <= limits.workerBatchMax; i++) results.add(success(`t${i}`, 0));
    await until(() => calls.length === 2);
    assert.deepEqual(
      calls.map((call) => call.results.length),
      [limits.workerBatchMax, 1],
    );
  });

  it("is full while unaccepted results fill RESULT_BUFFER_BYTES, logging each change once", async () => {
    const answer = deferred<CompleteResponse>();
    const { master, calls } = fakeMaster(() => answer.promise);
    const { results, logs, events } = batcher(master, { bufferBytes: 250 });
    results.add(success("a", 100));
    assert.equal(results.isFull(), false);
    results.add(success("b", 100));
    assert.equal(results.isFull(), true);
    await until(() => calls.length === 1);
    // Being sent is not accepted yet: the bytes still count.
    assert.equal(results.isFull(), true);
    answer.resolve({ accepted: ["a", "b"], rejected: [] });
    await until(() => events.includes("sent"));
    assert.equal(results.isFull(), false);
    assert.equal(results.isFull(), false);
    const messages = logs.map((line) => [line.level, line.msg]);
    assert.deepEqual(messages, [
      ["warn", "results waiting for the master fill RESULT_BUFFER_BYTES; leasing paused"],
      ["info", "results drained; leasing again"],
    ]);
    const paused = logs.find((line) => line.level === "warn");
    assert.ok((paused?.bytes as number) >= 250);
  });

  it("lists the leases of the results being sent, then of those waiting", async () => {
    const answer = deferred<CompleteResponse>();
    const { master, calls } = fakeMaster(() => answer.promise);
    const { results, events } = batcher(master);
    results.add(success("a"));
    await until(() => calls.length === 1);
    results.add(success("b"));
    assert.deepEqual(
      [...results.leases()].map(({ id, leaseId }) => ({ id, leaseId })),
      [
        { id: "a", leaseId: "lease-a" },
        { id: "b", leaseId: "lease-b" },
      ],
    );
    answer.resolve({ accepted: ["a"], rejected: [] });
    await until(() => calls.length === 2 && events.filter((e) => e === "sent").length === 2);
    assert.deepEqual([...results.leases()], []);
  });

  it("retries a failed request with a growing backoff, reporting the master unreachable", async () => {
    let failures = 0;
    const { master, calls } = fakeMaster(async (sent) => {
      if (failures++ < 3) throw new MasterUnavailableError("POST /worker/v1/complete answered 503");
      return { accepted: sent.map(({ id }) => id), rejected: [] };
    });
    const { results, events } = batcher(master, { initialBackoffMs: 20, maxBackoffMs: 200 });
    results.add(success("a"));
    await until(() => events.includes("reachable"));
    assert.equal(calls.length, 4);
    for (const call of calls) assert.deepEqual(ids(call), ["a"]);
    // Equal jitter: the n-th wait is at least half of 20 ms × 2^n. A millisecond or two of slack
    // for the timer clock's rounding.
    const gaps = calls.slice(1).map((call, n) => call.at - (calls[n]?.at ?? 0));
    gaps.forEach((gap, n) => {
      assert.ok(gap >= 10 * 2 ** n - 2, `wait ${n} was ${gap} ms`);
    });
    const unreachable = "unreachable: POST /worker/v1/complete answered 503";
    assert.deepEqual(events, [
      unreachable,
      "sent",
      unreachable,
      "sent",
      unreachable,
      "sent",
      "reachable",
      "sent",
    ]);
  });

  it("logs each result the master rejects, and does not send it again", async () => {
    const { master, calls } = fakeMaster(async () => ({
      accepted: ["a"],
      rejected: [{ id: "b", reason: "lease_lost" }],
    }));
    const { results, logs } = batcher(master);
    results.add(success("a"));
    results.add(success("b"));
    await until(() => logs.some((line) => line.msg === "the master rejected a completion"));
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(calls.length, 1);
    const warning = logs.find((line) => line.msg === "the master rejected a completion");
    assert.equal(warning?.level, "warn");
    assert.equal(warning?.taskId, "b");
    assert.equal(warning?.reason, "lease_lost");
  });

  it("sends a refused batch one by one and reports a refused result as a failure", async () => {
    const { master, calls } = fakeMaster(async (sent) => {
      if (sent.length > 1) throw new MasterRejectedError("answered 413: too large", 413);
      if (sent[0]?.id === "bad" && sent[0].json.includes('"ok":true'))
        throw new MasterRejectedError("answered 400: bad result", 400);
      return { accepted: sent.map(({ id }) => id), rejected: [] };
    });
    const { results, logs } = batcher(master);
    for (const id of ["a", "bad", "c"]) results.add(success(id));
    await until(() => calls.length === 5);
    assert.deepEqual(calls.map(ids), [["a", "bad", "c"], ["a"], ["bad"], ["c"], ["bad"]]);
    assert.deepEqual(JSON.parse(calls[4]?.body ?? "").results, [
      {
        id: "bad",
        leaseId: "lease-bad",
        ok: false,
        error: "the master refused the result: answered 400: bad result",
        retryable: false,
      },
    ]);
    const refused = logs.filter((line) => line.msg === "the master refused a task's result");
    assert.deepEqual(
      refused.map((line) => [line.level, line.taskId]),
      [["error", "bad"]],
    );
    // The refused result's bytes were freed, and the failure report's bytes with its answer.
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(results.pendingCount, 0);
    assert.deepEqual([...results.leases()], []);
  });

  it("once stopped gives up at once; a drain retries until its deadline only", async () => {
    const { master, calls } = fakeMaster(async () => {
      throw new MasterUnavailableError("POST /worker/v1/complete: connect ECONNREFUSED");
    });
    const { results, stop } = batcher(master, { initialBackoffMs: 20, maxBackoffMs: 40 });
    stop.abort();
    results.add(success("a"));
    await until(() => calls.length === 1);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(calls.length, 1, "retried after the worker stopped");
    const begun = performance.now();
    await results.drain(Date.now() + 300);
    const took = performance.now() - begun;
    assert.ok(took >= 290 && took < 1500, `the drain took ${took} ms`);
    assert.ok(calls.length >= 5, `${calls.length} attempts in 300 ms of 20 to 40 ms waits`);
    assert.equal(results.pendingCount, 1);
  });
});
