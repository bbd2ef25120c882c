import {
  ensureBuilt,
  exited,
  type LocalService,
  onStopSignal,
  spawnService,
} from "./local-services";

/**
 * `npm run master` / `npm run worker`: builds the service if its sources changed, then runs it
 * in the foreground with this environment, passing SIGINT and SIGTERM on once so it shuts down as
 * it would in a pod (a second Ctrl+C a moment later kills it), and exiting with its exit code.
 * package.json runs it as `exec node --import tsx`: `exec`, because dash turns an interrupted
 * script into exit 130; not the tsx CLI, whose signal relay SIGKILLs a child that does not
 * acknowledge a signal within 30 ms (on a busy machine), orphaning the service.
 */
async function main(): Promise<number> {
  const service = process.argv[2];
  if (service !== "master" && service !== "worker") {
    process.stderr.write("usage: tsx scripts/run-service.ts master|worker\n");
    return 2;
  }
  ensureBuilt(service as LocalService, (line) => process.stderr.write(`${line}\n`));
  // Its own process group: the terminal's Ctrl+C reaches only this script, which passes it on
  // exactly once.
  const child = spawnService(service, {}, { stdio: "inherit", detached: true });
  process.on("exit", () => {
    if (child.exitCode === null) child.kill("SIGKILL");
  });
  onStopSignal((signal, force) => child.kill(force ? "SIGKILL" : signal));
  return exited(child);
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  },
);
