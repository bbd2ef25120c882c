/**
 * `npm run render`: evaluates the Pulumi program of every stack under mocks (no CLI, no cloud,
 * no credentials) and writes its Kubernetes manifests and cloud resources to rendered/<stack>/,
 * the folder committed with the code so that a pull request shows what it changes.
 */
import * as path from "node:path";
import { repoRoot } from "../infra/service-builds";
import {
  firstDifference,
  readRendered,
  renderAllStacks,
  renderedDir,
  writeRendered,
} from "./render/stacks";

async function main(): Promise<void> {
  const files = await renderAllStacks();
  const change = firstDifference(files, readRendered());
  writeRendered(files);
  const where = path.relative(repoRoot, renderedDir);
  console.log(
    change === undefined
      ? `${where}/ is up to date (${files.size} files)`
      : `${where}/ updated (${files.size} files); first change: ${change.split("\n")[0]}`,
  );
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exitCode = 1;
});
