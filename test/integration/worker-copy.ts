import { copyFileSync, cpSync, symlinkSync } from "node:fs";
import * as path from "node:path";
import { fromRepoRoot } from "../../infra/service-builds";
import { serviceEntries } from "../../scripts/local-services";

/** Task files written for tests, to run from a worker copy's task folder. */
export const testTaskFolder = path.join(__dirname, "tasks");

/**
 * Copies the built worker (services/worker/dist, which `Fleet.build` makes) into `folder`,
 * adds `taskFiles` (built JavaScript named `<type>.js`, from {@link testTaskFolder}) to its task
 * folder, and returns the copy's entry point. The worker loads task types only from the folder
 * beside its own registry (tasks/registry.ts) and has no setting for another, so a test whose
 * handler must do something of its own, such as recording every run outside the worker, runs
 * such a copy. The copy's node_modules links to the repository's: the same code on the same
 * dependencies.
 */
export function copyWorkerWithTasks(folder: string, taskFiles: readonly string[]): string {
  const service = fromRepoRoot("services/worker");
  cpSync(path.join(service, "dist"), path.join(folder, "dist"), { recursive: true });
  // Its "type": "module" makes the copy's .js files ES modules, as in the service.
  copyFileSync(path.join(service, "package.json"), path.join(folder, "package.json"));
  symlinkSync(fromRepoRoot("node_modules"), path.join(folder, "node_modules"), "dir");
  for (const file of taskFiles) {
    copyFileSync(path.join(testTaskFolder, file), path.join(folder, "dist", "tasks", file));
  }
  return path.join(folder, path.relative(service, fromRepoRoot(serviceEntries.worker)));
}
