import assert from "node:assert/strict";
import { once } from "node:events";
import { connect } from "node:net";
import { describe, it } from "node:test";
import { completeBodyLimitBytes, limits, maxPayloadBytes } from "@taskfleet/protocol/limits";
import {
  API_TOKEN,
  api,
  leaseTasks,
  postJsonText,
  startApp,
  submit,
  testConfig,
  WORKER_TOKEN,
  worker,
} from "./helper.js";

const BODY_LIMIT = testConfig().bodyLimitBytes;
const MAX_PAYLOAD = maxPayloadBytes(BODY_LIMIT);

/** An array nested `depth` levels deep: `[[…]]`. */
function nested(depth: number): unknown {
  return JSON.parse(`${"[".repeat(depth)}${"]".repeat(depth)}`);
}

/** A JSON string whose JSON text is exactly `bytes` long (quotes included). */
function stringOfJsonBytes(bytes: number): string {
  return "x".repeat(bytes - 2);
}

describe("payload depth", () => {
  it("refuses a payload nested deeper than the limit, naming the field and the limit", async (t) => {
    const { app } = startApp(t);
    assert.equal(limits.payloadDepthMax, 64);
    const deep = await api(app, "POST", "/v1/tasks", { type: "echo", payload: nested(65) });
    assert.equal(deep.statusCode, 400);
    assert.deepEqual(deep.json(), {
      error: "BadRequest",
      message: "body/payload nests arrays and objects deeper than the limit of 64 levels",
    });
    const atLimit = await api(app, "POST", "/v1/tasks", { type: "echo", payload: nested(64) });
    assert.equal(atLimit.statusCode, 202);
  });

  it("refuses the 4,130-level payload of the review at submission, so no lease ever holds it", async (t) => {
    const { app } = startApp(t);
    const neighbour = await submit(app, { type: "echo", payload: 1 });
    const body = `{"type":"echo","payload":${"[".repeat(4130)}${"]".repeat(4130)}}`;
    const res = await postJsonText(app, "/v1/tasks", body);
    assert.equal(res.statusCode, 400);
    assert.match(res.json().message, /^body\/payload nests .* deeper than the limit of 64 levels$/);
    const leased = await leaseTasks(app, 10);
    assert.deepEqual(
      leased.map((task) => task.id),
      [neighbour],
    );
  });

  it("refuses a batch with one payload too deep as a whole, naming the task", async (t) => {
    const { app } = startApp(t);
    const res = await api(app, "POST", "/v1/tasks/batch", {
      tasks: [
        { type: "echo", payload: 1 },
        { type: "echo", payload: { a: nested(64) } },
      ],
    });
    assert.equal(res.statusCode, 400);
    assert.equal(
      res.json().message,
      "body/tasks/1/payload nests arrays and objects deeper than the limit of 64 levels",
    );
    assert.equal((await api(app, "GET", "/v1/stats")).json().queued, 0);
  });

  it("fails a task whose result nests too deep, with the reason, keeping its neighbours' results", async (t) => {
    const { app } = startApp(t);
    await api(app, "POST", "/v1/tasks/batch", {
      tasks: [
        { type: "echo", payload: 1 },
        { type: "echo", payload: 2 },
      ],
    });
    const [deep, fine] = await leaseTasks(app, 2);
    const res = await worker(app, "complete", {
      workerId: "w1",
      results: [
        { id: deep?.id, leaseId: deep?.leaseId, ok: true, result: nested(4130) },
        { id: fine?.id, leaseId: fine?.leaseId, ok: true, result: "fine" },
      ],
    });
    assert.equal(res.statusCode, 200);
    assert.deepEqual(res.json(), { accepted: [deep?.id, fine?.id], rejected: [] });
    const failed = (await api(app, "GET", `/v1/tasks/${deep?.id}`)).json();
    assert.equal(failed.status, "failed");
    assert.equal(
      failed.error,
      "the master refused the result: the result nests arrays and objects deeper than the limit of 64 levels",
    );
    assert.equal((await api(app, "GET", `/v1/tasks/${fine?.id}`)).json().result, "fine");
  });
});

describe("a lease answer that cannot be serialized", () => {
  it("fails only the task that cannot be sent, without counting an attempt, and hands out the rest", async (t) => {
    const { app, store } = startApp(t);
    // The routes no longer let such a payload in; the store is fed directly, as a bug or a
    // future backend might, to check that the lease route contains the damage.
    const spec = { type: "echo", maxAttempts: 3, timeoutSeconds: 60, payloadBytes: 10 };
    const [before, bad, after] = await store.submit([
      { ...spec, payload: "before" },
      { ...spec, payload: { amount: 10n } },
      { ...spec, payload: "after" },
    ]);
    const res = await worker(app, "lease", { workerId: "w1", max: 3 });
    assert.equal(res.statusCode, 200);
    assert.deepEqual(
      res.json().tasks.map((task: { id: string; attempt: number }) => [task.id, task.attempt]),
      [
        [before?.id, 1],
        [after?.id, 1],
      ],
    );
    const failed = (await api(app, "GET", `/v1/tasks/${bad?.id}`)).json();
    assert.equal(failed.status, "failed");
    assert.equal(failed.attempts, 0);
    assert.match(failed.error, /^the payload could not be sent to a worker: .*BigInt/);
    const stats = (await api(app, "GET", "/v1/stats")).json();
    assert.equal(stats.running, 2);
    assert.equal(stats.failed, 1);
  });
});

describe("payload and result sizes", () => {
  it("refuses a payload over the largest size at submission, naming the field and the limit", async (t) => {
    const { app } = startApp(t);
    assert.equal(MAX_PAYLOAD, 1_048_576 - 4096);
    // The review's payload: accepted, then its result refused with 413 at every completion.
    const res = await api(app, "POST", "/v1/tasks", {
      type: "echo",
      payload: stringOfJsonBytes(1_048_547),
    });
    assert.equal(res.statusCode, 400);
    assert.deepEqual(res.json(), {
      error: "BadRequest",
      message: "body/payload is 1048547 bytes as JSON, over the limit of 1044480 bytes",
    });
    const over = await api(app, "POST", "/v1/tasks", {
      type: "echo",
      payload: stringOfJsonBytes(MAX_PAYLOAD + 1),
    });
    assert.equal(over.statusCode, 400);
  });

  it("takes back as a result every payload it accepts: an echo of the largest one succeeds", async (t) => {
    const { app } = startApp(t);
    const payload = stringOfJsonBytes(MAX_PAYLOAD);
    const id = await submit(app, {
      type: "echo",
      payload,
      idempotencyKey: "k".repeat(limits.idempotencyKeyMaxLength),
    });
    const [task] = await leaseTasks(app, 1, 0, "w".repeat(limits.workerIdMaxLength));
    const res = await worker(app, "complete", {
      workerId: "w".repeat(limits.workerIdMaxLength),
      results: [{ id, leaseId: task?.leaseId, ok: true, result: task?.payload }],
    });
    assert.equal(res.statusCode, 200, res.body);
    assert.deepEqual(res.json().accepted, [id]);
    const done = (await api(app, "GET", `/v1/tasks/${id}`)).json();
    assert.equal(done.status, "succeeded");
    assert.equal(done.result, payload);
  });

  it("takes four full-size results in one completion, the batch of a default worker", async (t) => {
    const { app } = startApp(t);
    const tasks = Array.from({ length: 4 }, (_, n) => ({
      type: "echo",
      payload: stringOfJsonBytes(MAX_PAYLOAD - 1000 * n),
    }));
    for (const task of tasks) await submit(app, task);
    const leased = await leaseTasks(app, 4);
    assert.equal(leased.length, 4);
    const results = leased.map((task) => ({
      id: task.id,
      leaseId: task.leaseId,
      ok: true,
      result: task.payload,
    }));
    const res = await worker(app, "complete", { workerId: "w1", results });
    assert.equal(res.statusCode, 200, res.body);
    assert.equal(res.json().accepted.length, 4);
  });

  it("names the completion route's own limit when a completion is too large", async (t) => {
    const { app } = startApp(t);
    const limit = completeBodyLimitBytes(BODY_LIMIT);
    const res = await worker(app, "complete", {
      workerId: "w1",
      results: [{ id: "a", leaseId: "b", ok: true, result: "x".repeat(limit) }],
    });
    assert.equal(res.statusCode, 413);
    assert.equal(res.json().message, `body is larger than the limit of ${limit} bytes`);
  });

  it("fails a task whose result is over the largest size, with the reason", async (t) => {
    const { app } = startApp(t);
    const id = await submit(app, { type: "echo", payload: 1 });
    const [task] = await leaseTasks(app);
    const res = await worker(app, "complete", {
      workerId: "w1",
      results: [
        { id, leaseId: task?.leaseId, ok: true, result: stringOfJsonBytes(MAX_PAYLOAD + 1) },
      ],
    });
    assert.deepEqual(res.json().accepted, [id]);
    const failed = (await api(app, "GET", `/v1/tasks/${id}`)).json();
    assert.equal(failed.status, "failed");
    assert.equal(
      failed.error,
      `the master refused the result: the result is ${MAX_PAYLOAD + 1} bytes as JSON, over the limit of ${MAX_PAYLOAD} bytes`,
    );
  });

  it("hands out at most four full-size payloads per lease answer, and always at least one", async (t) => {
    const { app } = startApp(t);
    for (let n = 0; n < 6; n++) {
      await submit(app, { type: "echo", payload: stringOfJsonBytes(MAX_PAYLOAD) });
    }
    assert.equal((await leaseTasks(app, 256)).length, 4);
    assert.equal((await leaseTasks(app, 256)).length, 2);
  });
});

describe("prototype keys in deep bodies", () => {
  it("answers a deep body of constructor keys with 400, not a stack overflow's 500", async (t) => {
    const { app } = startApp(t);
    const depth = 20_000;
    const body = `{"type":"echo","payload":${'{"constructor":'.repeat(depth)}1${"}".repeat(depth)}}`;
    const res = await postJsonText(app, "/v1/tasks", body);
    assert.equal(res.statusCode, 400, res.body);
    assert.match(res.json().message, /deeper than the limit of 64 levels$/);
  });

  it("finds a poisoned key thousands of levels down, naming its path in a short message", async (t) => {
    const { app } = startApp(t);
    const depth = 20_000;
    const body = `{"type":"echo","payload":${'{"a":'.repeat(depth)}{"__proto__":{"admin":true}}${"}".repeat(depth)}}`;
    const res = await postJsonText(app, "/v1/tasks", body);
    assert.equal(res.statusCode, 400, res.body);
    assert.equal(
      res.json().message,
      "body/payload/a/a/a/a/a/a/a/…19992 more…/a/__proto__ is not an allowed key",
    );
  });
});

describe("requests to unknown routes", () => {
  it("answers without parsing the body: malformed JSON gets a 404, not a parse error", async (t) => {
    const { app } = startApp(t);
    for (const url of ["/nope", "/v1/nope", "/worker/v1/nope", "/v1/tasks/batch/x"]) {
      const res = await app.inject({
        method: "POST",
        url,
        headers: { "content-type": "application/json", authorization: `Bearer ${WORKER_TOKEN}` },
        payload: '{"a":',
      });
      assert.equal(res.statusCode, 404, `${url}: ${res.body}`);
      assert.equal(res.json().message, `no route for POST ${url}`);
    }
  });

  it("answers unknown /v1 and /worker routes with 401 without a token, as the real ones", async (t) => {
    const { app } = startApp(t, { env: { API_TOKEN } });
    const cases: [string, string | undefined, number][] = [
      ["/v1/nope", undefined, 401],
      ["/v1/nope", WORKER_TOKEN, 401],
      ["/v1/nope", API_TOKEN, 404],
      ["/v1", undefined, 401],
      ["/worker/v1/nope", undefined, 401],
      ["/worker/v1/nope", API_TOKEN, 401],
      ["/worker/v1/nope", WORKER_TOKEN, 404],
      ["/v2/tasks", undefined, 404],
    ];
    for (const [url, token, status] of cases) {
      const res = await app.inject({
        method: "POST",
        url,
        headers: {
          "content-type": "application/json",
          ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
        },
        payload: '{"a":',
      });
      assert.equal(res.statusCode, status, `${url} with ${token}: ${res.body}`);
    }
  });

  it("checks the token before reading the body of a real route", async (t) => {
    const { app } = startApp(t, { env: { API_TOKEN } });
    const res = await postJsonText(app, "/v1/tasks", '{"a":');
    assert.equal(res.statusCode, 401);
  });

  it("answers before the body has arrived, and closes the connection when the body is over the limit", async (t) => {
    const { app } = startApp(t, { env: { API_TOKEN } });
    await app.listen({ port: 0, host: "127.0.0.1" });
    const address = app.server.address();
    if (address === null || typeof address === "string") throw new Error("no address");
    const cases: [string, number, number, boolean][] = [
      // url, declared length, status, closed
      ["/nope", BODY_LIMIT, 404, false],
      ["/v1/nope", BODY_LIMIT, 401, false],
      ["/v1/tasks", BODY_LIMIT, 401, false],
      ["/nope", 100 * BODY_LIMIT, 404, true],
      ["/v1/tasks", 100 * BODY_LIMIT, 401, true],
    ];
    for (const [url, length, status, closes] of cases) {
      const socket = connect(address.port, "127.0.0.1");
      socket.on("error", () => {});
      await once(socket, "connect");
      // Headers and 10 bytes of the body: a server that reads the body before answering waits.
      socket.write(
        `POST ${url} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${length}\r\n\r\n{"a": 1234`,
      );
      let answer = "";
      let closed = false;
      socket.on("data", (chunk) => {
        answer += chunk;
      });
      socket.on("close", () => {
        closed = true;
      });
      const deadline = Date.now() + 2000;
      while (!answer.includes("\r\n\r\n") && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
      socket.destroy();
      const what = `${url} declaring ${length} bytes`;
      assert.match(answer, new RegExp(`^HTTP/1.1 ${status} `), `${what} was answered at once`);
      assert.equal(/\r\nconnection: close\r\n/i.test(answer), closes, what);
      assert.equal(closed, closes, what);
    }
    // A request with no body at all keeps its connection.
    const res = await fetch(`http://127.0.0.1:${address.port}/nope`);
    assert.equal(res.status, 404);
    assert.equal(res.headers.get("connection"), "keep-alive");
  });
});
