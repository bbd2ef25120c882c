import * as assert from "node:assert/strict";
import { once } from "node:events";
import { describe, it, type TestContext } from "node:test";
import { STREAM_CALLS_IN_FLIGHT_MAX, WORKER_STREAM_PATH } from "@taskfleet/protocol/worker-stream";
import WebSocket from "ws";
import { type App, api, startApp, WORKER_TOKEN } from "./helper.js";

/** The master's answer to a call: the route's status and body. */
interface Answer {
  status: number;
  body: Record<string, unknown> & { message?: string };
}

/** A worker stream opened by hand, to send what the master must cope with. */
class Stream {
  private nextId = 1;
  private readonly waiting = new Map<number, (answer: Answer) => void>();
  readonly closed: Promise<{ code: number; reason: string }>;

  constructor(readonly socket: WebSocket) {
    socket.on("message", (data: Buffer) => {
      const { id, status, body } = JSON.parse(data.toString()) as Answer & { id: number };
      this.waiting.get(id)?.({ status, body });
      this.waiting.delete(id);
    });
    this.closed = once(socket, "close").then(([code, reason]) => ({
      code: code as number,
      reason: String(reason),
    }));
  }

  /** Sends a call and resolves with its answer. */
  call(call: string, body: unknown, id = this.nextId++): Promise<Answer> {
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      this.socket.send(JSON.stringify({ id, call, body }));
    });
  }

  cancel(id: number): void {
    this.socket.send(JSON.stringify({ id, cancel: true }));
  }
}

/** Opens a stream to `port`; rejects with the status of an upgrade the master refused. */
function openStream(
  t: TestContext,
  port: number,
  token: string | null = WORKER_TOKEN,
): Promise<Stream> {
  const socket = new WebSocket(`ws://127.0.0.1:${port}${WORKER_STREAM_PATH}`, {
    headers: token === null ? {} : { authorization: `Bearer ${token}` },
  });
  t.after(() => socket.terminate());
  return new Promise((resolve, reject) => {
    socket.once("open", () => resolve(new Stream(socket)));
    socket.once("unexpected-response", (_request, response) => {
      let text = "";
      response.on("data", (chunk: Buffer) => {
        text += chunk;
      });
      response.on("end", () =>
        reject(
          Object.assign(new Error(`upgrade answered ${response.statusCode}`), {
            status: response.statusCode,
            headers: response.headers,
            body: JSON.parse(text),
          }),
        ),
      );
    });
    socket.once("error", reject);
  });
}

async function listening(t: TestContext, env: Record<string, string> = {}) {
  const { app, store } = startApp(t, { env });
  await app.listen({ port: 0, host: "127.0.0.1" });
  const address = app.server.address();
  if (address === null || typeof address === "string") throw new Error("no port");
  return { app, store, port: address.port };
}

async function submit(app: App, payload: unknown): Promise<string> {
  const response = await api(app, "POST", "/v1/tasks", { type: "echo", payload });
  assert.equal(response.statusCode, 202);
  return response.json().id;
}

describe("the worker stream", () => {
  it("answers each call as its route does: lease, renew, complete with the next lease, release", async (t) => {
    const { app, port } = await listening(t);
    const stream = await openStream(t, port);
    const first = await submit(app, 1);
    const second = await submit(app, 2);

    const leased = await stream.call("lease", { workerId: "w1", max: 1 });
    assert.equal(leased.status, 200);
    const [task] = leased.body.tasks as { id: string; leaseId: string; payload: unknown }[];
    assert.equal(task?.id, first);
    assert.equal(task?.payload, 1);
    const lease = { id: first, leaseId: task.leaseId };

    const renewed = await stream.call("renew", { workerId: "w1", leases: [lease] });
    assert.deepEqual(renewed, {
      status: 200,
      body: { renewed: [first], lost: [], leaseSeconds: 30 },
    });

    const completed = await stream.call("complete", {
      workerId: "w1",
      results: [{ ...lease, ok: true, result: { doubled: 2 } }],
      lease: { max: 4 },
    });
    assert.equal(completed.status, 200);
    assert.deepEqual(completed.body.accepted, [first]);
    const next = completed.body.lease as { tasks: { id: string; leaseId: string }[] };
    assert.deepEqual(
      next.tasks.map((t) => t.id),
      [second],
    );

    const released = await stream.call("release", {
      workerId: "w1",
      leases: [{ id: second, leaseId: next.tasks[0]?.leaseId }],
    });
    assert.deepEqual(released, { status: 200, body: { released: [second] } });
    const read = await api(app, "GET", `/v1/tasks/${first}`);
    assert.deepEqual(read.json().result, { doubled: 2 });
    assert.equal((await api(app, "GET", `/v1/tasks/${second}`)).json().status, "queued");
  });

  it("refuses an upgrade without the worker token, as the routes do", async (t) => {
    const { port } = await listening(t);
    for (const token of [null, "wrong"]) {
      await assert.rejects(openStream(t, port, token), (error: Record<string, unknown>) => {
        assert.equal(error.status, 401);
        assert.equal((error.headers as Record<string, string>)["www-authenticate"], "Bearer");
        assert.match(String((error.body as { message: string }).message), /Authorization header/);
        return true;
      });
    }
  });

  it("opens on the internal port only, when the master has two", async (t) => {
    const { app, port } = await listening(t, { INTERNAL_PORT: "18099" });
    const internalPort = await app.internalListener?.listen(0, "127.0.0.1");
    await assert.rejects(openStream(t, port), (error: Record<string, unknown>) => {
      assert.equal(error.status, 404);
      assert.match(String((error.body as { message: string }).message), /internal port/);
      return true;
    });
    const stream = await openStream(t, internalPort as number);
    assert.equal((await stream.call("lease", { workerId: "w1" })).status, 200);
  });

  it("answers a body its route's schema refuses with 400 naming the field, and an unknown call", async (t) => {
    const { port } = await listening(t);
    const stream = await openStream(t, port);
    assert.deepEqual(await stream.call("lease", { max: 1 }), {
      status: 400,
      body: { error: "BadRequest", message: "body/workerId is required" },
    });
    assert.deepEqual(await stream.call("lease", { workerId: "w1", max: "1" }), {
      status: 400,
      body: { error: "BadRequest", message: "body/max must be integer" },
    });
    assert.deepEqual(await stream.call("complete", { workerId: "w1", results: [], extra: 1 }), {
      status: 400,
      body: { error: "BadRequest", message: "body/extra is not an allowed property" },
    });
    const unknown = await stream.call("submit", {});
    assert.equal(unknown.status, 400);
    assert.match(
      String(unknown.body.message),
      /call must be one of \["lease","renew","complete","release"\]/,
    );
    // The stream is still up.
    assert.equal((await stream.call("lease", { workerId: "w1" })).status, 200);
  });

  it(`answers 429 to calls beyond ${STREAM_CALLS_IN_FLIGHT_MAX} in flight`, async (t) => {
    const { port } = await listening(t);
    const stream = await openStream(t, port);
    const waiting = Array.from({ length: STREAM_CALLS_IN_FLIGHT_MAX }, () =>
      stream.call("lease", { workerId: "w1", waitMs: 30_000 }),
    );
    const refused = await stream.call("lease", { workerId: "w1" });
    assert.equal(refused.status, 429);
    assert.match(String(refused.body.message), /more than 16 calls in flight on one stream/);
    stream.socket.close();
    await stream.closed;
    void waiting;
  });

  it("closes a stream that sends what is not a call, naming why", async (t) => {
    const { port } = await listening(t);
    const cases: [string | Buffer, number, RegExp][] = [
      ["{not json", 1008, /a message is not JSON/],
      ["[1,2]", 1008, /id must be an integer/],
      ['{"id":0,"call":"lease","body":{}}', 1008, /id must be an integer from 1 to 2147483647/],
      [Buffer.from([1, 2, 3]), 1008, /messages are JSON text, not binary/],
    ];
    for (const [message, code, reason] of cases) {
      const stream = await openStream(t, port);
      stream.socket.send(message, { binary: Buffer.isBuffer(message) });
      const closed = await stream.closed;
      assert.equal(closed.code, code);
      assert.match(closed.reason, reason);
    }
  });

  it("closes a stream that reuses the id of a call in flight", async (t) => {
    const { port } = await listening(t);
    const stream = await openStream(t, port);
    void stream.call("lease", { workerId: "w1", waitMs: 30_000 }, 7);
    void stream.call("lease", { workerId: "w1" }, 7);
    const closed = await stream.closed;
    assert.equal(closed.code, 1008);
    assert.match(closed.reason, /call 7 is already in flight/);
  });

  it("closes a stream whose message is larger than the largest completion (1009)", async (t) => {
    const { port } = await listening(t, { BODY_LIMIT_BYTES: "8192" });
    const stream = await openStream(t, port);
    // complete takes 16 bodies' worth (128 KiB here), and the envelope.
    stream.socket.send(JSON.stringify({ id: 1, call: "lease", body: "x".repeat(129 * 1024) }));
    assert.equal((await stream.closed).code, 1009);
  });

  it("answers a withdrawn lease at once and leases nothing to it after", async (t) => {
    const { app, port } = await listening(t);
    const stream = await openStream(t, port);
    const waiting = stream.call("lease", { workerId: "w1", waitMs: 30_000 }, 5);
    await new Promise((resolve) => setTimeout(resolve, 50));
    stream.cancel(5);
    const answer = await waiting;
    assert.deepEqual(answer, { status: 200, body: { tasks: [], leaseSeconds: 30 } });
    const id = await submit(app, 1);
    assert.equal((await api(app, "GET", `/v1/tasks/${id}`)).json().status, "queued");
  });

  it("stops a waiting lease when its stream closes: a task submitted after stays queued", async (t) => {
    const { app, port } = await listening(t);
    const stream = await openStream(t, port);
    void stream.call("lease", { workerId: "w1", waitMs: 30_000 });
    await new Promise((resolve) => setTimeout(resolve, 50));
    stream.socket.terminate();
    await stream.closed;
    await new Promise((resolve) => setTimeout(resolve, 50));
    const id = await submit(app, 1);
    assert.equal((await api(app, "GET", `/v1/tasks/${id}`)).json().status, "queued");
  });

  it("while draining answers leases 503, still takes completions, and tells the worker to move on", async (t) => {
    const { app, store, port } = await listening(t);
    const stream = await openStream(t, port);
    const notices: unknown[] = [];
    stream.socket.on("message", (data: Buffer) => {
      const message = JSON.parse(data.toString());
      if (message.id === undefined) notices.push(message);
    });
    const id = await submit(app, 1);
    const leased = await stream.call("lease", { workerId: "w1" });
    const [task] = leased.body.tasks as { leaseId: string }[];
    const waiting = stream.call("lease", { workerId: "w1", waitMs: 30_000 });
    await new Promise((resolve) => setTimeout(resolve, 50));
    store.drain();
    const cut = await waiting;
    assert.equal(cut.status, 503);
    assert.match(String(cut.body.message), /shutting down/);
    assert.deepEqual(notices, [{ goingAway: true }]);
    // The stream still serves the worker's calls until it closes it: a completion counts.
    const completed = await stream.call("complete", {
      workerId: "w1",
      results: [{ id, leaseId: task?.leaseId, ok: true, result: "done" }],
    });
    assert.deepEqual(completed.body.accepted, [id]);
    assert.equal((await api(app, "GET", `/v1/tasks/${id}`)).json().result, "done");
    assert.equal(notices.length, 1, "the notice is sent once");
  });

  it("closes its streams when the app closes, answering a waiting lease first", async (t) => {
    const { app, port } = await listening(t);
    const stream = await openStream(t, port);
    const waiting = stream.call("lease", { workerId: "w1", waitMs: 30_000 });
    await new Promise((resolve) => setTimeout(resolve, 50));
    const started = Date.now();
    await app.close();
    assert.ok(Date.now() - started < 5000, "the close did not wait for the long poll's 30 s");
    assert.equal((await waiting).status, 200);
    assert.equal((await stream.closed).code, 1001);
  });

  it("counts open streams and its calls in /metrics", async (t) => {
    const { app, port } = await listening(t);
    const stream = await openStream(t, port);
    await stream.call("lease", { workerId: "w1" });
    await stream.call("lease", { max: 1 });
    const text = (await api(app, "GET", "/metrics")).body;
    assert.match(text, /^taskfleet_worker_streams 1$/m);
    assert.match(
      text,
      /^taskfleet_worker_stream_call_duration_seconds_count\{call="lease",status_code="200"\} 1$/m,
    );
    assert.match(
      text,
      /^taskfleet_worker_stream_call_duration_seconds_count\{call="lease",status_code="400"\} 1$/m,
    );
  });
});
