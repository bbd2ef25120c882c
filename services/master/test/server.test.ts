import assert from "node:assert/strict";
import { once } from "node:events";
import { connect, type Socket } from "node:net";
import { describe, it } from "node:test";
import { freePort, startMaster, waitFor } from "./process.js";

describe("master process", () => {
  it("exits 1 with a JSON line naming each bad variable, never echoing a token", async () => {
    const master = startMaster({ PORT: "99999", API_TOKEN: " ", LEASE_SECONDS: "soon" });
    const [code] = await once(master.child, "exit");
    assert.equal(code, 1);
    const lines = master
      .stderr()
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line));
    assert.deepEqual(
      lines.map((line) => [line.level, line.msg]),
      [
        ["fatal", 'invalid configuration: PORT must be an integer from 1 to 65535 (got "99999")'],
        ["fatal", "invalid configuration: API_TOKEN must be a non-empty string"],
        ["fatal", "invalid configuration: WORKER_TOKEN must be set to a non-empty string"],
        [
          "fatal",
          'invalid configuration: LEASE_SECONDS must be an integer from 1 to 3600 (got "soon")',
        ],
      ],
    );
  });

  it("does not hand a task to a long poll whose client has gone away", async (t) => {
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const master = startMaster({ PORT: String(port), HOST: "127.0.0.1", WORKER_TOKEN: "w" });
    t.after(() => master.child.kill("SIGKILL"));
    await waitFor(() => master.lines().some((line) => line.msg === "master ready"), "ready");
    const lease = (waitMs: number, signal?: AbortSignal) =>
      fetch(`${base}/worker/v1/lease`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: "Bearer w" },
        body: JSON.stringify({ workerId: "w1", max: 1, waitMs }),
        ...(signal === undefined ? {} : { signal }),
      });
    const gone = new AbortController();
    const abandoned = lease(30_000, gone.signal).catch(() => "aborted");
    await new Promise((resolve) => setTimeout(resolve, 200));
    gone.abort();
    assert.equal(await abandoned, "aborted");
    await new Promise((resolve) => setTimeout(resolve, 200));
    await fetch(`${base}/v1/tasks`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ type: "echo", payload: 1 }),
    });
    const { tasks } = (await (await lease(0)).json()) as { tasks: unknown[] };
    assert.equal(tasks.length, 1);
  });

  it("writes JSON log lines that name the service and the level by name", async (t) => {
    const port = await freePort();
    const master = startMaster({ PORT: String(port), HOST: "127.0.0.1", WORKER_TOKEN: "w" });
    t.after(() => master.child.kill("SIGKILL"));
    await waitFor(() => master.lines().some((line) => line.msg === "master ready"), "ready");
    const ready = master.lines().find((line) => line.msg === "master ready");
    assert.equal(ready?.service, "taskfleet-master");
    assert.equal(ready?.level, "info");
  });

  it("on SIGTERM keeps the port open for the drain, answering 503 with Retry-After, then exits 0", async (t) => {
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const master = startMaster({
      PORT: String(port),
      HOST: "127.0.0.1",
      WORKER_TOKEN: "w",
      SHUTDOWN_GRACE_SECONDS: "10",
      SHUTDOWN_DRAIN_SECONDS: "2",
    });
    t.after(() => master.child.kill("SIGKILL"));
    await waitFor(() => master.lines().some((line) => line.msg === "master ready"), "ready");
    const submit = () =>
      fetch(`${base}/v1/tasks`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ type: "echo", payload: 1 }),
      });
    const workerCall = (route: string, body: object) =>
      fetch(`${base}/worker/v1/${route}`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: "Bearer w" },
        body: JSON.stringify(body),
      });

    const { id } = (await (await submit()).json()) as { id: string };
    const waiting = fetch(`${base}/v1/tasks/${id}?waitSeconds=60`);
    // The queued task goes to the first poll; the second one waits for work.
    const leased = (await (await workerCall("lease", { workerId: "w1", max: 1 })).json()) as {
      tasks: { id: string; leaseId: string }[];
    };
    assert.equal(leased.tasks.length, 1);
    const polling = workerCall("lease", { workerId: "w1", max: 1, waitMs: 30_000 });
    await new Promise((resolve) => setTimeout(resolve, 200));

    const signalledAt = performance.now();
    master.child.kill("SIGTERM");
    const [waited, polled] = await Promise.all([waiting, polling]);
    // The client's wait is cut short: the task as it stands, marked as cut short by the drain.
    assert.equal(waited.status, 200);
    assert.equal(((await waited.json()) as { status: string }).status, "running");
    assert.equal(waited.headers.get("taskfleet-draining"), "true");
    assert.equal(waited.headers.get("connection"), "close");
    // The worker's poll is a 503 to back off on.
    assert.equal(polled.status, 503);
    assert.equal(polled.headers.get("retry-after"), "5");

    // Within the drain the port still answers: a submission is a 503, not a refused connection,
    // readiness is 503, and a worker's result still counts.
    const refused = await submit();
    assert.equal(refused.status, 503);
    assert.equal(refused.headers.get("retry-after"), "5");
    assert.equal(((await refused.json()) as { error: string }).error, "ServiceUnavailable");
    assert.equal((await fetch(`${base}/readyz`)).status, 503);
    const [task] = leased.tasks;
    const completed = await workerCall("complete", {
      workerId: "w1",
      results: [{ id: task?.id, leaseId: task?.leaseId, ok: true, result: 1 }],
    });
    assert.deepEqual(await completed.json(), { accepted: [id], rejected: [] });

    const [code] = await once(master.child, "exit");
    assert.equal(code, 0);
    const tookMs = performance.now() - signalledAt;
    assert.ok(tookMs >= 1900, `closed after the 2 s drain, not after ${tookMs} ms`);
    assert.ok(tookMs < 5000, `drained well within the grace period, not in ${tookMs} ms`);
    const messages = master.lines().map((line) => line.msg);
    assert.ok(messages.includes("draining"));
    assert.ok(messages.includes("stopped"));
  });

  it("with INTERNAL_PORT keeps the worker API and /metrics off the public port, each port with its own connection cap", async (t) => {
    const [port, internalPort] = [await freePort(), await freePort()];
    const master = startMaster({
      PORT: String(port),
      INTERNAL_PORT: String(internalPort),
      HOST: "127.0.0.1",
      API_TOKEN: "a",
      WORKER_TOKEN: "w",
      MAX_CONNECTIONS: "4",
      SHUTDOWN_GRACE_SECONDS: "10",
      SHUTDOWN_DRAIN_SECONDS: "1",
    });
    const idle: Socket[] = [];
    t.after(() => {
      for (const socket of idle) socket.destroy();
      master.child.kill("SIGKILL");
    });
    await waitFor(() => master.lines().some((line) => line.msg === "master ready"), "ready");
    const call = (onPort: number, method: string, route: string, token?: string, body?: object) =>
      fetch(`http://127.0.0.1:${onPort}${route}`, {
        method,
        headers: {
          ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    const lease = { workerId: "w1", max: 1 };

    // A client holding every connection the public port allows locks out neither the workers
    // nor the kubelet's probes, which come in on the internal port.
    const open = async () => {
      const socket = connect(port, "127.0.0.1");
      idle.push(socket);
      await once(socket, "connect");
      return socket;
    };
    for (let i = 0; i < 4; i++) await open();
    const fifth = await open();
    await once(fifth, "close");
    assert.equal((await call(internalPort, "GET", "/healthz")).status, 200);
    assert.equal((await call(internalPort, "GET", "/readyz")).status, 200);
    for (const socket of idle) socket.destroy();
    await waitFor(() => idle.every((socket) => socket.destroyed), "the idle connections to close");
    await new Promise((resolve) => setTimeout(resolve, 100));

    // The public port: the client API and health; the worker API and metrics are not there,
    // even with the right token.
    const submitted = await call(port, "POST", "/v1/tasks", "a", { type: "echo", payload: 1 });
    assert.equal(submitted.status, 202);
    const { id } = (await submitted.json()) as { id: string };
    assert.equal((await call(port, "GET", "/healthz")).status, 200);
    assert.equal((await call(port, "GET", "/readyz")).status, 200);
    const hidden = await call(port, "POST", "/worker/v1/lease", "w", lease);
    assert.equal(hidden.status, 404);
    assert.match(
      ((await hidden.json()) as { message: string }).message,
      /served on the master's internal port/,
    );
    assert.equal((await call(port, "GET", "/metrics")).status, 404);

    // The internal port: the worker API, metrics and health; no client API.
    const leased = await call(internalPort, "POST", "/worker/v1/lease", "w", lease);
    assert.equal(leased.status, 200);
    const { tasks } = (await leased.json()) as { tasks: { id: string }[] };
    assert.deepEqual(
      tasks.map((task) => task.id),
      [id],
    );
    const metrics = await call(internalPort, "GET", "/metrics");
    assert.equal(metrics.status, 200);
    assert.match(await metrics.text(), /taskfleet_tasks/);
    assert.equal((await call(internalPort, "GET", "/healthz")).status, 200);
    assert.equal((await call(internalPort, "GET", `/v1/tasks/${id}`, "a")).status, 404);

    // SIGTERM drains and closes both ports.
    master.child.kill("SIGTERM");
    const [code] = await once(master.child, "exit");
    assert.equal(code, 0);
    for (const closed of [port, internalPort]) {
      const error = await call(closed, "GET", "/healthz").catch((e: Error) => e);
      assert.ok(error instanceof Error, `port ${closed} still answers after exit`);
    }
  });
});
