import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createInterface } from "node:readline";
import {
  ensureBuilt,
  exited,
  onStopSignal,
  portIsFree,
  spawnService,
  waitUntilReady,
} from "./local-services";

/**
 * `npm start`: one master and two workers on this machine, no cluster, no Docker. Builds what
 * changed, starts the processes, waits for the master to be ready, prints where it is and how to
 * send it a task, and on Ctrl+C stops the workers first (so they can hand back their tasks) and
 * then the master.
 */

const workerCount = 2;
const quietKeys = new Set(["level", "time", "pid", "hostname", "msg", "service", "workerId"]);

/** One readable line per JSON log line: cheap, and raw text passes through untouched. */
function pipeLogs(name: string, child: ChildProcess): void {
  for (const stream of [child.stdout, child.stderr]) {
    if (!stream) continue;
    createInterface({ input: stream }).on("line", (line) => {
      let text = line;
      try {
        const record = JSON.parse(line) as Record<string, unknown>;
        const extras = Object.entries(record)
          .filter(([key]) => !quietKeys.has(key))
          .map(
            ([key, value]) => `${key}=${typeof value === "string" ? value : JSON.stringify(value)}`,
          );
        const level = String(record.level).toUpperCase();
        text = `${level.padEnd(5)} ${String(record.msg ?? "")}${extras.length ? `  ${extras.join(" ")}` : ""}`;
      } catch {
        // Not JSON (a stack trace, npm output): print it as it is.
      }
      process.stdout.write(`${name.padEnd(9)}| ${text}\n`);
    });
  }
}

async function main(): Promise<number> {
  const port = process.env.PORT ?? "8080";
  const host = process.env.HOST ?? "127.0.0.1";
  const workerToken = process.env.WORKER_TOKEN ?? randomBytes(24).toString("base64url");
  const apiToken = process.env.API_TOKEN;
  const say = (line: string) => process.stdout.write(`${line}\n`);

  // An invalid PORT is left to the master, whose message names what is allowed.
  const portNumber = Number(port);
  const validPort = /^\d+$/.test(port) && portNumber >= 1 && portNumber <= 65535;
  if (validPort && !(await portIsFree(host, portNumber))) {
    say(
      `port ${port} on ${host} is taken (an earlier taskfleet master?): stop it, or set PORT to use another one`,
    );
    return 1;
  }
  ensureBuilt("master", (line) => say(`building ${line}`));
  ensureBuilt("worker", (line) => say(`building ${line}`));

  const children: { name: string; child: ChildProcess }[] = [];
  let stopping = false;
  const stopAll = async (signal: NodeJS.Signals, force = false) => {
    if (force) {
      say("stopping at once");
      for (const { child } of children) if (child.exitCode === null) child.kill("SIGKILL");
      return;
    }
    if (stopping) return;
    stopping = true;
    say(`${signal}: stopping the workers, then the master`);
    const workers = children.filter(({ name }) => name !== "master");
    for (const { child } of workers) child.kill("SIGTERM");
    await Promise.all(workers.map(({ child }) => exited(child)));
    for (const { name, child } of children) if (name === "master") child.kill("SIGTERM");
  };
  onStopSignal((signal, force) => void stopAll(signal, force));

  // Own process groups: Ctrl+C reaches only this script, which stops the children in order.
  const master = spawnService(
    "master",
    { PORT: port, HOST: host, WORKER_TOKEN: workerToken },
    { detached: true },
  );
  children.push({ name: "master", child: master });
  pipeLogs("master", master);
  process.on("exit", () => {
    for (const { child } of children) if (child.exitCode === null) child.kill("SIGKILL");
  });

  const masterUrl = `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
  try {
    await waitUntilReady(`${masterUrl}/readyz`, master);
  } catch (error) {
    if (stopping) return 0;
    say(`the master did not start: ${error instanceof Error ? error.message : String(error)}`);
    say(`(is port ${port} taken? set PORT to use another one)`);
    return 1;
  }

  for (let i = 1; i <= workerCount && !stopping; i++) {
    const name = `worker-${i}`;
    const child = spawnService(
      "worker",
      { MASTER_URL: masterUrl, WORKER_TOKEN: workerToken, WORKER_ID: `local-${name}` },
      { detached: true },
    );
    children.push({ name, child });
    pipeLogs(name, child);
  }

  const auth = apiToken ? ` -H 'authorization: Bearer ${apiToken}'` : "";
  say("");
  say(`taskfleet is running: master ${masterUrl}, ${workerCount} workers.`);
  say(
    apiToken
      ? `API token (from API_TOKEN): ${apiToken}`
      : "No API token is set, so /v1/* needs none (set API_TOKEN to require one).",
  );
  say("Send a task and wait for its result:");
  say(
    `  id=$(curl -s -X POST ${masterUrl}/v1/tasks${auth} -H 'content-type: application/json' \\\n` +
      `    -d '{"type":"cpu","payload":{"n":1000000}}' | sed -E 's/.*"id":"([^"]+)".*/\\1/')\n` +
      `  curl -s "${masterUrl}/v1/tasks/$id?waitSeconds=10"${auth}`,
  );
  say(`Queue and workers: curl -s ${masterUrl}/v1/stats${auth}`);
  say("Press Ctrl+C to stop.");
  say("");

  // A child that dies on its own takes the whole run down, so nothing is left half-working.
  const first = await Promise.race(
    children.map(async ({ name, child }) => ({ name, code: await exited(child) })),
  );
  if (!stopping) {
    say(`${first.name} exited with code ${first.code}; stopping the rest`);
    await stopAll("SIGTERM");
  }
  const codes = await Promise.all(children.map(({ child }) => exited(child)));
  return codes.every((code) => code === 0) ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  },
);
