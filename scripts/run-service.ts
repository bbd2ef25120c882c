import { ensureBuilt, exited, type LocalService, spawnService } from "./local-services";

/**
 * `npm run master` / `npm run worker`: builds the service if its sources changed, then runs it
 * in the foreground with this environment, passing SIGINT and SIGTERM on so it shuts down as it
 * would in a pod, and exiting with its exit code.
 */
async function main(): Promise<number> {
  const service = process.argv[2];
  if (service !== "master" && service !== "worker") {
    process.stderr.write("usage: tsx scripts/run-service.ts master|worker\n");
    return 2;
  }
  ensureBuilt(service as LocalService, (line) => process.stderr.write(`${line}\n`));
  const child = spawnService(service, {}, { stdio: "inherit" });
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => child.kill(signal));
  }
  return exited(child);
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  },
);
