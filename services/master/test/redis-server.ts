import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import * as net from "node:net";
import { tmpdir } from "node:os";
import * as path from "node:path";

/**
 * A redis-server of the test's own: on a free 127.0.0.1 port, in a temporary directory, saving
 * nothing to disk unless asked to, stopped (and its directory removed) by `stop()`.
 */
export interface TestRedis {
  host: string;
  port: number;
  /** `redis://127.0.0.1:<port>/0`, as the master's REDIS_URL takes it. */
  url: string;
  /** Where it keeps its files (its append-only file, when it has one). */
  dir: string;
  /**
   * Sends SIGTERM and waits for the exit, keeping the directory: Redis writes and fsyncs its
   * append-only file first, as it does when a pod is stopped.
   */
  shutdown(): Promise<void>;
  /** Starts it again on the same port and directory; resolves once it answers PING (loaded). */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export interface StartRedisOptions {
  /**
   * Keep an append-only file, fsynced every second (`--appendonly yes --appendfsync everysec`), so
   * that what Redis acknowledged survives a {@link TestRedis.shutdown} and restart.
   */
  appendOnly?: boolean;
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as net.AddressInfo;
  server.close();
  await once(server, "close");
  return port;
}

/** Resolves once the server answers on its port, or rejects when it exits first. */
async function ready(child: ChildProcess, port: number, output: () => string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`redis-server exited: ${output()}`);
    const answered = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, "127.0.0.1");
      socket.once("connect", () => {
        socket.write("PING\r\n");
      });
      socket.once("data", (data) => {
        socket.destroy();
        resolve(data.toString().startsWith("+PONG"));
      });
      socket.once("error", () => resolve(false));
    });
    if (answered) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`redis-server did not answer on port ${port}: ${output()}`);
}

/**
 * Why the Redis tests cannot run here, or undefined when they can: they need `redis-server` on the
 * PATH (the Debian and Ubuntu package `redis-server`).
 */
export function redisUnavailable(): string | undefined {
  const probe = spawnSync("redis-server", ["--version"], { encoding: "utf8" });
  return probe.error === undefined && probe.status === 0
    ? undefined
    : "redis-server is not installed (apt-get install redis-server)";
}

export async function startRedis(options: StartRedisOptions = {}): Promise<TestRedis> {
  const dir = await mkdtemp(path.join(tmpdir(), "taskfleet-redis-"));
  const port = await freePort();
  const persistence = options.appendOnly
    ? ["--appendonly", "yes", "--appendfsync", "everysec"]
    : ["--appendonly", "no"];
  const args = [
    "--bind",
    "127.0.0.1",
    "--port",
    String(port),
    "--dir",
    dir,
    "--save",
    "",
    ...persistence,
    "--maxmemory-policy",
    "noeviction",
  ];
  let output = "";
  let child: ChildProcess | undefined;
  const launch = async () => {
    const started = spawn("redis-server", args, { stdio: ["ignore", "pipe", "pipe"] });
    child = started;
    for (const stream of [started.stdout, started.stderr]) {
      stream?.setEncoding("utf8");
      stream?.on("data", (chunk: string) => {
        output = (output + chunk).slice(-4000);
      });
    }
    await ready(started, port, () => output);
  };
  const shutdown = async () => {
    const running = child;
    if (running !== undefined && running.exitCode === null && running.signalCode === null) {
      const exited = once(running, "exit");
      running.kill("SIGTERM");
      await exited;
    }
  };
  const stop = async () => {
    await shutdown();
    await rm(dir, { recursive: true, force: true });
  };
  const restart = async () => {
    await shutdown();
    await launch();
  };
  try {
    await launch();
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    host: "127.0.0.1",
    port,
    url: `redis://127.0.0.1:${port}/0`,
    dir,
    shutdown,
    restart: async () => {
      try {
        await restart();
      } catch (error) {
        await shutdown();
        throw error;
      }
    },
    stop,
  };
}
