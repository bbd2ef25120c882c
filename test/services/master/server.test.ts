import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { createServer } from "node:net";
import * as path from "node:path";
import { describe, it } from "node:test";

const repoRoot = path.resolve(__dirname, "../../..");
const serverSource = path.join(repoRoot, "services/master/src/server.ts");

async function freePort(): Promise<number> {
  const probe = createServer();
  probe.listen(0, "127.0.0.1");
  await once(probe, "listening");
  const address = probe.address();
  probe.close();
  if (address === null || typeof address === "string") throw new Error("no port");
  return address.port;
}

interface Running {
  child: ChildProcess;
  lines: () => Record<string, unknown>[];
  stderr: () => string;
}

function startMaster(env: Record<string, string>): Running {
  const child = spawn(process.execPath, ["--import", "tsx", serverSource], {
    cwd: repoRoot,
    env: { PATH: process.env.PATH ?? "", LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout?.on("data", (chunk) => {
    out += chunk;
  });
  child.stderr?.on("data", (chunk) => {
    err += chunk;
  });
  return {
    child,
    lines: () =>
      out
        .split("\n")
        .filter((line) => line.startsWith("{"))
        .map((line) => JSON.parse(line) as Record<string, unknown>),
    stderr: () => err,
  };
}

async function waitFor(check: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

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
        ["fatal", "invalid configuration: API_TOKEN must be a non-empty string when set"],
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

  it("on SIGTERM answers pending long polls, refuses new tasks and exits 0", async (t) => {
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const master = startMaster({
      PORT: String(port),
      HOST: "127.0.0.1",
      WORKER_TOKEN: "w",
      SHUTDOWN_GRACE_SECONDS: "10",
    });
    t.after(() => master.child.kill("SIGKILL"));
    await waitFor(() => master.lines().some((line) => line.msg === "master ready"), "ready");

    const submitted = await fetch(`${base}/v1/tasks`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ type: "echo", payload: 1 }),
    });
    const { id } = (await submitted.json()) as { id: string };
    const waiting = fetch(`${base}/v1/tasks/${id}?waitSeconds=60`);
    // The queued task goes to the first poll; the second one waits for work.
    const lease = (waitMs: number) =>
      fetch(`${base}/worker/v1/lease`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: "Bearer w" },
        body: JSON.stringify({ workerId: "w1", max: 1, waitMs }),
      });
    assert.equal(((await (await lease(0)).json()) as { tasks: unknown[] }).tasks.length, 1);
    const polling = lease(30_000);
    await new Promise((resolve) => setTimeout(resolve, 200));

    const signalledAt = performance.now();
    master.child.kill("SIGTERM");
    const [waited, polled] = await Promise.all([waiting, polling]);
    assert.equal(((await waited.json()) as { status: string }).status, "running");
    assert.deepEqual(await polled.json(), { tasks: [], leaseSeconds: 30 });
    const [code] = await once(master.child, "exit");
    assert.equal(code, 0);
    assert.ok(performance.now() - signalledAt < 5000, "drained well within the grace period");
    const messages = master.lines().map((line) => line.msg);
    assert.ok(messages.includes("draining"));
    assert.ok(messages.includes("stopped"));
  });
});
