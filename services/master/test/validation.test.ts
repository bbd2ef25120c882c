import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { workerEnv } from "@taskfleet/protocol/worker-env";
import { API_TOKEN, api, postJsonText, startApp, WORKER_TOKEN, worker } from "./helper.js";

describe("bad requests", () => {
  const cases: { name: string; url: string; payload: string; status: number; message: RegExp }[] = [
    {
      name: "malformed JSON",
      url: "/v1/tasks",
      payload: '{"type": "echo",',
      status: 400,
      message: /^body is not valid JSON: /,
    },
    {
      name: "an empty JSON body",
      url: "/v1/tasks",
      payload: "",
      status: 400,
      message: /^body is empty/,
    },
    {
      name: "a __proto__ key in the payload",
      url: "/v1/tasks",
      payload: '{"type": "echo", "payload": {"a": [{"__proto__": {"admin": true}}]}}',
      status: 400,
      message: /^body\/payload\/a\/0\/__proto__ is not an allowed key$/,
    },
    {
      name: "a constructor.prototype key in the payload",
      url: "/v1/tasks",
      payload: '{"type": "echo", "payload": {"constructor": {"prototype": {"admin": true}}}}',
      status: 400,
      message: /^body\/payload\/constructor\/prototype is not an allowed key$/,
    },
    {
      name: "a type of the wrong JSON type",
      url: "/v1/tasks",
      payload: '{"type": 5, "payload": null}',
      status: 400,
      message: /^body\/type must be string$/,
    },
    {
      name: "a missing payload",
      url: "/v1/tasks",
      payload: '{"type": "echo"}',
      status: 400,
      message: /^body\/payload is required$/,
    },
    {
      name: "an unknown property",
      url: "/v1/tasks",
      payload: '{"type": "echo", "payload": 1, "priority": 3}',
      status: 400,
      message: /^body\/priority is not an allowed property$/,
    },
    {
      name: "maxAttempts as a string",
      url: "/v1/tasks",
      payload: '{"type": "echo", "payload": 1, "maxAttempts": "3"}',
      status: 400,
      message: /^body\/maxAttempts must be integer$/,
    },
    {
      name: "maxAttempts out of range",
      url: "/v1/tasks",
      payload: '{"type": "echo", "payload": 1, "maxAttempts": 101}',
      status: 400,
      message: /^body\/maxAttempts must be <= 100$/,
    },
    {
      name: "a type with characters outside the allowed set",
      url: "/v1/tasks",
      payload: '{"type": "Echo Task", "payload": 1}',
      status: 400,
      message: /^body\/type must match pattern/,
    },
    {
      name: "an empty batch",
      url: "/v1/tasks/batch",
      payload: '{"tasks": []}',
      status: 400,
      message: /^body\/tasks must NOT have fewer than 1 items$/,
    },
    {
      name: "a bad task deep in a batch",
      url: "/v1/tasks/batch",
      payload: JSON.stringify({
        tasks: [
          { type: "echo", payload: 1 },
          { type: "echo", payload: 2, timeoutSeconds: 0 },
        ],
      }),
      status: 400,
      message: /^body\/tasks\/1\/timeoutSeconds must be >= 1$/,
    },
    {
      name: "a batch that is not an array",
      url: "/v1/tasks/batch",
      payload: '{"tasks": {"type": "echo"}}',
      status: 400,
      message: /^body\/tasks must be array$/,
    },
  ];
  for (const c of cases) {
    it(`answers ${c.name} with ${c.status} naming the problem, and keeps serving`, async (t) => {
      const { app } = startApp(t);
      const res = await postJsonText(app, c.url, c.payload);
      assert.equal(res.statusCode, c.status, res.body);
      assert.equal(res.headers["content-type"], "application/json; charset=utf-8");
      const body = res.json();
      assert.equal(body.error, "BadRequest");
      assert.match(body.message, c.message);
      const after = await api(app, "POST", "/v1/tasks", { type: "echo", payload: 1 });
      assert.equal(after.statusCode, 202);
    });
  }

  it("accepts the words __proto__ and constructor where they poison nothing", async (t) => {
    const { app } = startApp(t);
    const payload = { constructor: "a plain value", note: "__proto__", list: ["constructor"] };
    const res = await api(app, "POST", "/v1/tasks", { type: "echo", payload });
    assert.equal(res.statusCode, 202, res.body);
  });

  it("answers a body over the limit with 413 naming the limit", async (t) => {
    const { app } = startApp(t, { env: { BODY_LIMIT_BYTES: "8192" } });
    const res = await api(app, "POST", "/v1/tasks", { type: "echo", payload: "x".repeat(9000) });
    assert.equal(res.statusCode, 413);
    assert.deepEqual(res.json(), {
      error: "PayloadTooLarge",
      message: "body is larger than the limit of 8192 bytes",
    });
    const after = await api(app, "POST", "/v1/tasks", { type: "echo", payload: "x".repeat(1000) });
    assert.equal(after.statusCode, 202);
  });

  it("accepts a 1,000-task batch with small payloads under the default 1 MiB limit", async (t) => {
    const { app } = startApp(t);
    const tasks = Array.from({ length: 1000 }, (_, i) => ({
      type: "echo",
      payload: { n: i, text: "a small payload of some forty characters" },
      idempotencyKey: `order-${i}-0123456789abcdef`,
      maxAttempts: 3,
      timeoutSeconds: 60,
    }));
    const res = await api(app, "POST", "/v1/tasks/batch", { tasks });
    assert.equal(res.statusCode, 202, res.body);
  });

  it("rejects a content type other than JSON with 415", async (t) => {
    const { app } = startApp(t);
    const res = await app.inject({
      method: "POST",
      url: "/v1/tasks",
      headers: { "content-type": "text/plain" },
      payload: "hello",
    });
    assert.equal(res.statusCode, 415);
    assert.equal(res.json().error, "UnsupportedMediaType");
    assert.match(
      res.json().message,
      /content-type must be application\/json \(got "text\/plain"\)/,
    );
  });

  it("answers an unknown route with 404 JSON naming the route", async (t) => {
    const { app } = startApp(t);
    const res = await api(app, "GET", "/v2/tasks?x=1");
    assert.equal(res.statusCode, 404);
    assert.deepEqual(res.json(), { error: "NotFound", message: "no route for GET /v2/tasks" });
  });

  it("answers a task that does not exist with 404", async (t) => {
    const { app } = startApp(t);
    const res = await api(app, "GET", "/v1/tasks/nope");
    assert.equal(res.statusCode, 404);
    assert.deepEqual(res.json(), { error: "NotFound", message: 'task "nope" does not exist' });
  });

  for (const wait of ["abc", "-1", "61", "1.5"]) {
    it(`rejects waitSeconds=${wait} naming the parameter`, async (t) => {
      const { app } = startApp(t);
      const res = await api(app, "GET", `/v1/tasks/any?waitSeconds=${wait}`);
      assert.equal(res.statusCode, 400);
      assert.match(res.json().message, /^querystring\/waitSeconds must be an integer from 0 to 60/);
    });

    it(`rejects a submit with waitSeconds=${wait} naming the parameter, and stores nothing`, async (t) => {
      const { app } = startApp(t);
      const res = await api(app, "POST", `/v1/tasks?waitSeconds=${wait}`, {
        type: "echo",
        payload: 1,
      });
      assert.equal(res.statusCode, 400);
      assert.match(res.json().message, /^querystring\/waitSeconds must be an integer from 0 to 60/);
      assert.equal((await api(app, "GET", "/v1/stats")).json().queued, 0);
    });
  }

  it("names the field in a bad worker request", async (t) => {
    const { app } = startApp(t);
    const lease = await worker(app, "lease", { workerId: "w", max: 0 });
    assert.equal(lease.statusCode, 400);
    assert.equal(lease.json().message, "body/max must be >= 1");
    const complete = await worker(app, "complete", {
      workerId: "w",
      results: [{ id: "a", leaseId: "1", ok: false }],
    });
    assert.equal(complete.statusCode, 400);
    assert.equal(complete.json().message, "body/results/0/error is required");
  });

  it("takes a lease request's slots from 1 to the CONCURRENCY maximum, or none", async (t) => {
    const { app } = startApp(t);
    const { max } = workerEnv.CONCURRENCY;
    for (const [slots, message] of [
      [0, "body/slots must be >= 1"],
      [max + 1, `body/slots must be <= ${max}`],
      [1.5, "body/slots must be integer"],
      ["4", "body/slots must be integer"],
    ] as const) {
      const res = await worker(app, "lease", { workerId: "w", max: 1, slots });
      assert.equal(res.statusCode, 400, `slots ${slots}`);
      assert.equal(res.json().message, message);
    }
    for (const slots of [1, max, undefined]) {
      const res = await worker(app, "lease", { workerId: "w", max: 1, slots });
      assert.equal(res.statusCode, 200, `slots ${slots}`);
    }
  });
});

describe("tokens", () => {
  it("lets /v1 through without a token when API_TOKEN is unset", async (t) => {
    const { app } = startApp(t);
    assert.equal((await api(app, "GET", "/v1/stats")).statusCode, 200);
  });

  it("answers /v1 without the API token with 401", async (t) => {
    const { app } = startApp(t, { env: { API_TOKEN } });
    for (const token of [undefined, "wrong", WORKER_TOKEN]) {
      const res = await api(app, "POST", "/v1/tasks", { type: "echo", payload: 1 }, token);
      assert.equal(res.statusCode, 401, `token ${token}`);
      assert.equal(res.json().error, "Unauthorized");
      assert.equal(res.headers["www-authenticate"], "Bearer");
    }
    const stats = await api(app, "GET", "/v1/stats", undefined, "wrong");
    assert.equal(stats.statusCode, 401);
    const ok = await api(app, "POST", "/v1/tasks", { type: "echo", payload: 1 }, API_TOKEN);
    assert.equal(ok.statusCode, 202);
  });

  it("accepts the Bearer scheme in any case, and only the exact token after it", async (t) => {
    const { app } = startApp(t, { env: { API_TOKEN } });
    const send = (authorization: string) =>
      app.inject({ method: "GET", url: "/v1/stats", headers: { authorization } });
    for (const scheme of ["Bearer", "bearer", "BEARER"]) {
      assert.equal((await send(`${scheme} ${API_TOKEN}`)).statusCode, 200, scheme);
    }
    for (const header of [
      `Basic ${API_TOKEN}`,
      `Bearer ${API_TOKEN.toUpperCase()}`,
      `Bearer${API_TOKEN}`,
      API_TOKEN,
    ]) {
      assert.equal((await send(header)).statusCode, 401, header);
    }
  });

  it("answers the worker routes without the worker token with 401, even with the API token", async (t) => {
    const { app } = startApp(t, { env: { API_TOKEN } });
    for (const token of [undefined, "wrong", API_TOKEN]) {
      const res = await api(app, "POST", "/worker/v1/lease", { workerId: "w" }, token);
      assert.equal(res.statusCode, 401, `token ${token}`);
    }
  });

  it("serves health, readiness and metrics without a token", async (t) => {
    const { app } = startApp(t, { env: { API_TOKEN } });
    assert.deepEqual((await api(app, "GET", "/healthz")).json(), { status: "ok" });
    assert.deepEqual((await api(app, "GET", "/readyz")).json(), { status: "ready" });
    assert.equal((await api(app, "GET", "/metrics")).statusCode, 200);
  });
});
