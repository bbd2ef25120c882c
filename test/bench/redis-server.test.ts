import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { after, describe, it } from "node:test";
import { stopAllChildren } from "../../bench/lib/processes.js";
import {
  infoField,
  REDIS_SETTINGS,
  redisDataBytes,
  redisServerVersion,
  startRedis,
} from "../../bench/lib/redis-server.js";

const missing = redisServerVersion() === undefined ? "redis-server is not installed" : false;

describe("the benchmark's redis-server", { skip: missing }, () => {
  after(() => stopAllChildren());

  it("runs with the append-only file fsynced every second and no eviction, for every system", async () => {
    const redis = await startRedis();
    try {
      const config = async (name: string) =>
        ((await redis.connection.config("GET", name)) as string[])[1];
      assert.equal(await config("appendonly"), "yes");
      assert.equal(await config("appendfsync"), "everysec");
      assert.equal(await config("maxmemory-policy"), "noeviction");
      assert.equal(await config("save"), "");
      assert.equal(await config("bind"), "127.0.0.1");
      assert.ok(REDIS_SETTINGS.includes("everysec"));
    } finally {
      await redis.stop();
    }
  });

  it("starts empty in a data directory of its own and deletes it when stopped", async () => {
    const first = await startRedis();
    await first.connection.set("left-behind", "1");
    const dir = ((await first.connection.config("GET", "dir")) as string[])[1];
    await first.stop();
    assert.equal(existsSync(dir), false, "the data directory is gone");
    const second = await startRedis();
    try {
      assert.notEqual(second.port, first.port);
      assert.equal(await second.connection.dbsize(), 0);
    } finally {
      await second.stop();
    }
  });

  it("counts the data held, which grows with what is stored", async () => {
    const redis = await startRedis();
    try {
      const before = await redisDataBytes(redis.connection);
      await redis.connection.set("payload", "x".repeat(100_000));
      const afterSet = await redisDataBytes(redis.connection);
      assert.ok(afterSet.used - before.used >= 100_000, `${afterSet.used} - ${before.used}`);
      assert.ok(afterSet.rss > 0);
    } finally {
      await redis.stop();
    }
  });
});

describe("infoField", () => {
  it("reads a number field of INFO's text and refuses a missing one", () => {
    const info = "# Memory\r\nused_memory:1048576\r\nused_memory_rss:2097152\r\n";
    assert.equal(infoField(info, "used_memory"), 1_048_576);
    assert.equal(infoField(info, "used_memory_rss"), 2_097_152);
    assert.throws(() => infoField(info, "mem_aof_buffer"), /no mem_aof_buffer/);
  });
});
