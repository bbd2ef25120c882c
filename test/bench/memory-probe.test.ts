import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { describe, it } from "node:test";
import { fromRepoRoot } from "../../infra/service-builds.js";

const probe = fromRepoRoot("bench/lib/memory-probe.cjs");

describe("memory probe preloaded into the master", () => {
  it("answers with memory use taken after a full GC", async () => {
    // An idle process collects nothing by itself: the dropped object is only finalized if the
    // probe really runs a full collection before it answers.
    const script =
      "globalThis.kept = Array.from({ length: 1e5 }, (_, i) => ({ i }));" +
      "const registry = new FinalizationRegistry(() => process.stdout.write('collected\\n'));" +
      "let dropped = { payload: new Array(1000).fill(1) }; registry.register(dropped, 0); dropped = null;" +
      "setTimeout(() => {}, 5000);";
    const child = spawn(process.execPath, ["--expose-gc", "--require", probe, "-e", script], {
      stdio: ["ignore", "pipe", "inherit", "ipc"],
    });
    let output = "";
    child.stdout?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    try {
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.equal(output, "", "nothing is collected before the probe runs");
      child.send({ type: "taskfleet-bench:memory" });
      const [reply] = (await once(child, "message")) as [
        { type: string; usage: NodeJS.MemoryUsage },
      ];
      assert.equal(reply.type, "taskfleet-bench:memory");
      assert.ok(reply.usage.heapUsed > 1e6, "the kept objects are counted");
      assert.ok(reply.usage.rss >= reply.usage.heapUsed);
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal(output, "collected\n");
    } finally {
      child.kill("SIGKILL");
    }
  });

  it("does not keep a process alive that would otherwise exit", async () => {
    const child = spawn(
      process.execPath,
      ["--expose-gc", "--require", probe, "-e", "setTimeout(() => {}, 100)"],
      {
        stdio: ["ignore", "ignore", "inherit", "ipc"],
      },
    );
    const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
    const [code, signal] = await once(child, "exit");
    clearTimeout(timer);
    assert.deepEqual([code, signal], [0, null]);
  });
});
