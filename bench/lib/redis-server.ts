import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { Redis } from "ioredis";
import { type Child, freePort, startChild, waitFor } from "./processes.js";

/** The one line to print when Redis is not installed. */
export const REDIS_MISSING =
  "redis-server not found: the benchmark runs BullMQ and taskfleet's Redis store on a Redis it starts itself; install it with `sudo apt-get install -y redis-server` (Debian/Ubuntu) and run the benchmark again";

/** Redis's version (`redis-server --version`), or undefined when it is not installed. */
export function redisServerVersion(): string | undefined {
  const probe = spawnSync("redis-server", ["--version"], { encoding: "utf8" });
  if (probe.error !== undefined || probe.status !== 0) return undefined;
  return /v=(\S+)/.exec(probe.stdout)?.[1] ?? probe.stdout.trim();
}

/**
 * The settings every Redis in the benchmark runs with, whichever system it serves: the append-only
 * file on and fsynced once a second (what a production queue on Redis runs with, and what
 * Memorystore's persistence option offers), no RDB snapshots, and no eviction (BullMQ requires it;
 * taskfleet's store loses tasks without it). Exported so the tests and docs name one list.
 */
export const REDIS_SETTINGS: readonly string[] = [
  "--appendonly",
  "yes",
  "--appendfsync",
  "everysec",
  "--save",
  "",
  "--maxmemory-policy",
  "noeviction",
  "--loglevel",
  "warning",
];

/** A redis-server of the benchmark's own: its process, port and a connection for the bench. */
export interface BenchRedis {
  readonly child: Child;
  readonly port: number;
  readonly url: string;
  /** For the bench's own commands (INFO, and BullMQ's Queue); never blocks. */
  readonly connection: Redis;
  /** Closes the connection, stops the server and deletes its data directory. */
  stop(): Promise<void>;
}

/**
 * Starts a fresh redis-server on 127.0.0.1 with {@link REDIS_SETTINGS} and an empty data directory
 * of its own, so no system inherits another's data or append-only file; resolves once it answers
 * PING.
 */
export async function startRedis(): Promise<BenchRedis> {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), "taskfleet-bench-redis-"));
  const child = startChild("redis-server", "redis-server", [
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--dir",
    dir,
    ...REDIS_SETTINGS,
  ]);
  const connection = new Redis({
    host: "127.0.0.1",
    port,
    // The bench's own commands fail rather than wait forever if Redis dies mid-run.
    maxRetriesPerRequest: 1,
    commandTimeout: 60_000,
    lazyConnect: true,
    retryStrategy: () => 50,
  });
  // Refused connections are expected while redis-server starts; waitFor reports a real failure.
  connection.on("error", () => undefined);
  const stop = async () => {
    connection.disconnect();
    await child.stop("SIGTERM", 10_000);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(
      "redis-server to answer PING",
      async () => {
        if (connection.status === "wait") await connection.connect();
        return (await connection.ping()) === "PONG";
      },
      { child },
    );
  } catch (error) {
    connection.disconnect();
    await child.stop("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  return { child, port, url: `redis://127.0.0.1:${port}/0`, connection, stop };
}

/** A number field of Redis's `INFO` text. */
export function infoField(info: string, field: string): number {
  const match = new RegExp(`^${field}:(\\d+)`, "m").exec(info);
  if (!match) throw new Error(`Redis INFO has no ${field}`);
  return Number(match[1]);
}

/**
 * Redis's memory for the data it holds: `used_memory` (its allocator's own count, exact without
 * any settling) less the append-only buffer, which holds writes not yet handed to the file and
 * would count the last burst of commands as data.
 */
export async function redisDataBytes(connection: Redis): Promise<{ used: number; rss: number }> {
  const info = await connection.info("memory");
  return {
    used: infoField(info, "used_memory") - infoField(info, "mem_aof_buffer"),
    rss: infoField(info, "used_memory_rss"),
  };
}
