import assert from "node:assert/strict";
import { once } from "node:events";
import { connect, type Socket } from "node:net";
import { describe, it } from "node:test";
import { runMaster } from "./process.js";

/**
 * A real master process on loopback against clients that cost it without a token: connections
 * that send their request slowly, and 1 MiB bodies to routes that do not exist. Bounded: about
 * 10 s, a few hundred sockets.
 */

const REQUEST_TIMEOUT_S = 3;
const HEADERS_TIMEOUT_S = 2;
// Node checks the timeouts once a second; a second more for a busy machine.
const SLACK_MS = 2000;

interface SlowClient {
  openedAt: number;
  closedAt: Promise<number>;
  stop: () => void;
}

/** Connects and sends `head` a byte at a time every 300 ms, then keeps trickling body bytes. */
async function slowClient(port: number, head: string): Promise<SlowClient> {
  const socket = connect(port, "127.0.0.1");
  socket.on("error", () => {});
  await once(socket, "connect");
  const openedAt = performance.now();
  // Not `once(socket, "close")`, which rejects when a write fails first (EPIPE, once closed).
  const closedAt = new Promise<number>((resolve) => {
    socket.on("close", () => resolve(performance.now()));
  });
  let sent = 0;
  const timer = setInterval(() => {
    if (socket.destroyed) return;
    socket.write(sent < head.length ? (head[sent] ?? "") : "x");
    sent++;
  }, 300);
  void closedAt.then(() => clearInterval(timer));
  return {
    openedAt,
    closedAt,
    stop: () => {
      clearInterval(timer);
      socket.destroy();
    },
  };
}

/** Sends a whole request with a 1 MiB body and resolves with the status the master answered. */
function bigBodyRequest(port: number, path: string): Promise<number> {
  return new Promise((resolve) => {
    const socket: Socket = connect(port, "127.0.0.1");
    const body = `{"junk":"${"x".repeat(1024 * 1024 - 12)}"}`;
    let answer = "";
    const finish = () => {
      const status = /^HTTP\/1\.1 (\d{3}) /.exec(answer);
      resolve(status === null ? 0 : Number(status[1]));
    };
    socket.on("data", (chunk) => {
      answer += chunk;
      if (answer.includes("\r\n\r\n")) socket.destroy();
    });
    // The master closes the connection without reading the body: writing the rest may fail.
    socket.on("error", () => {});
    socket.on("close", finish);
    socket.write(
      `POST ${path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n`,
    );
    socket.end(body);
  });
}

describe("a master under a flood", () => {
  it("closes slow connections within its timeouts and keeps answering /healthz under a flood of large bodies to unknown routes", async (t) => {
    const master = await runMaster(t, {
      API_TOKEN: "api",
      WORKER_TOKEN: "worker",
      REQUEST_TIMEOUT_SECONDS: String(REQUEST_TIMEOUT_S),
      HEADERS_TIMEOUT_SECONDS: String(HEADERS_TIMEOUT_S),
    });

    // 100 connections that trickle a body on a real route (with its token: these are read),
    // 100 that never finish their headers.
    const slow: SlowClient[] = [];
    for (let i = 0; i < 100; i++) {
      slow.push(
        await slowClient(
          master.port,
          `POST /v1/tasks HTTP/1.1\r\nhost: x\r\nauthorization: Bearer api\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n`,
        ),
      );
      slow.push(await slowClient(master.port, "POST /v1/tasks HTTP/1.1\r\nhost: x\r\nx-slow: "));
    }
    t.after(() => {
      for (const client of slow) client.stop();
    });

    // Meanwhile 8 clients send 1 MiB bodies to unknown routes back to back, and a probe reads
    // /healthz every 200 ms with the kubelet's 3 s timeout.
    const floodUntil = performance.now() + 6000;
    const statuses = new Map<number, number>();
    const flood = Array.from({ length: 8 }, async (_, n) => {
      while (performance.now() < floodUntil) {
        const status = await bigBodyRequest(master.port, n % 2 === 0 ? "/nope" : "/v1/nope");
        statuses.set(status, (statuses.get(status) ?? 0) + 1);
      }
    });
    const probeLatencies: number[] = [];
    const probe = (async () => {
      while (performance.now() < floodUntil) {
        const started = performance.now();
        const res = await fetch(`${master.base}/healthz`, { signal: AbortSignal.timeout(3000) });
        assert.equal(res.status, 200);
        await res.arrayBuffer();
        probeLatencies.push(performance.now() - started);
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    })();
    await Promise.all([...flood, probe]);

    const closedAfter = await Promise.all(
      slow.map(async (client) => {
        const timeout = new Promise<number>((resolve) =>
          setTimeout(resolve, REQUEST_TIMEOUT_S * 1000 + SLACK_MS, Number.POSITIVE_INFINITY),
        );
        return (await Promise.race([client.closedAt, timeout])) - client.openedAt;
      }),
    );
    const slowest = Math.max(...closedAfter);
    const requests = [...statuses.values()].reduce((sum, count) => sum + count, 0);
    t.diagnostic(
      `slow connections closed after at most ${slowest.toFixed(0)} ms; ` +
        `${requests} 1 MiB requests answered ${JSON.stringify(Object.fromEntries(statuses))}; ` +
        `/healthz at most ${Math.max(...probeLatencies).toFixed(0)} ms over ${probeLatencies.length} probes`,
    );
    assert.ok(
      slowest <= REQUEST_TIMEOUT_S * 1000 + SLACK_MS,
      `every slow connection is closed by the master within its request timeout (slowest: ${slowest} ms)`,
    );
    assert.ok(requests >= 16, `the flood got answers (${requests})`);
    assert.deepEqual([...statuses.keys()].sort(), [401, 404]);
    assert.ok(probeLatencies.length >= 10);
    assert.equal(master.child.exitCode, null, "the master is still running");
  });

  it("closes connections past MAX_CONNECTIONS as they arrive", async (t) => {
    const master = await runMaster(t, { WORKER_TOKEN: "worker", MAX_CONNECTIONS: "20" });
    const sockets: Socket[] = [];
    t.after(() => {
      for (const socket of sockets) socket.destroy();
    });
    const closed: Promise<unknown>[] = [];
    for (let i = 0; i < 30; i++) {
      const socket = connect(master.port, "127.0.0.1");
      socket.on("error", () => {});
      sockets.push(socket);
      await once(socket, "connect");
      closed.push(
        Promise.race([
          new Promise((resolve) => socket.on("close", () => resolve(true))),
          new Promise((resolve) => setTimeout(resolve, 500, false)),
        ]),
      );
    }
    const outcomes = await Promise.all(closed);
    assert.equal(outcomes.filter((wasClosed) => wasClosed).length, 10);
    for (const socket of sockets) socket.destroy();
    // Once the idle ones are gone there is room again.
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal((await fetch(`${master.base}/healthz`)).status, 200);
  });
});
