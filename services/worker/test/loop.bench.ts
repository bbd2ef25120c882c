/**
 * Micro-benchmark of the worker's per-task overhead: no-op `echo` tasks through a real worker
 * process (the built `services/worker/dist/main.js`, as a pod runs it) against the in-process fake
 * master. Reports tasks per second and the worker process's CPU time per task, read from
 * /proc/<pid>/stat between its first lease and its last completion (so start-up is not counted).
 * Not part of `npm test` (its name does not end in `.test.ts`); Linux only.
 *
 *   node --import tsx services/worker/test/loop.bench.ts [tasks=20000] [concurrency=4] [entry]
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { productionNodeArgs } from "../../../scripts/local-services.js";
import { FakeMaster } from "./fake-master.js";

const tasks = Number(process.argv[2] ?? 20_000);
const concurrency = Number(process.argv[3] ?? 4);
const entry = path.resolve(process.argv[4] ?? "services/worker/dist/main.js");

/** utime + stime of a process, in milliseconds (the kernel counts in clock ticks of 10 ms). */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

async function main(): Promise<void> {
  const master = await new FakeMaster().listen();
  for (let i = 0; i < tasks; i++) master.add("echo", { i });
  const child = spawn(process.execPath, [...productionNodeArgs, entry], {
    env: {
      PATH: process.env.PATH ?? "",
      MASTER_URL: master.url,
      WORKER_TOKEN: master.token,
      CONCURRENCY: String(concurrency),
      LOG_LEVEL: "warn",
    },
    stdio: ["ignore", "inherit", "inherit"],
  });
  const pid = child.pid as number;
  // Steady state only: the first tasks also pay for starting the process and its task threads
  // (reported apart, as start-up CPU).
  const warmUp = Math.floor(tasks / 10);
  await master.until(() => master.finished().length >= warmUp, 60_000);
  const startupCpu = cpuMs(pid);
  const start = performance.now();
  await master.until(() => master.finished().length === tasks, 600_000);
  const elapsedMs = performance.now() - start;
  const cpu = cpuMs(pid) - startupCpu;
  const measured = tasks - warmUp;
  const rssMb =
    Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]) / 1024;
  child.kill("SIGTERM");
  await new Promise((resolve) => child.once("exit", resolve));
  await master.close();
  const failed = master.finished().filter((task) => task.status !== "succeeded").length;
  console.log(
    JSON.stringify({
      entry: path.relative(process.cwd(), entry),
      tasks,
      concurrency,
      failed,
      tasksPerSecond: Math.round(measured / (elapsedMs / 1000)),
      workerCpuMsPerTask: Number((cpu / measured).toFixed(4)),
      cpuMsUntilFirstTenth: startupCpu,
      workerRssMb: Math.round(rssMb),
      completeRequests: master.callsTo("complete").length,
      leaseRequests: master.callsTo("lease").length,
    }),
  );
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
