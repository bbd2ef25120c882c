import { execFile } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import * as path from "node:path";
import { promisify } from "node:util";
import { fromRepoRoot } from "../infra/service-builds";
import {
  dependencyProblems,
  type InstalledDependency,
  type RegistryManifest,
} from "./dependency-rules";

/**
 * `npm run check:deps`: asks the npm registry about every direct dependency of the project and
 * its services, as installed, and fails when one is deprecated or, for a package that drives a
 * Pulumi plugin, is off its latest major or asks the engine for a plugin version that is not its
 * own. Needs the registry; run after `npm ci`.
 */

/** The root package.json and each workspace's, relative to the repository root. */
function manifests(): string[] {
  const root = JSON.parse(readFileSync(fromRepoRoot("package.json"), "utf8")) as {
    workspaces: string[];
  };
  return ["package.json", ...root.workspaces.map((folder) => `${folder}/package.json`)];
}

const run = promisify(execFile);

async function registryManifest(name: string, version: string): Promise<RegistryManifest> {
  const { stdout } = await run("npm", ["view", `${name}@${version}`, "--json"], {
    maxBuffer: 16 * 1024 * 1024,
  });
  return JSON.parse(stdout) as RegistryManifest;
}

/** The version installed for a package of `dir`: in its own node_modules, or hoisted to the root. */
function installedVersion(dir: string, name: string): string {
  for (const modules of [path.join(dir, "node_modules"), fromRepoRoot("node_modules")]) {
    const file = path.join(modules, name, "package.json");
    if (existsSync(file)) {
      return (JSON.parse(readFileSync(file, "utf8")) as { version: string }).version;
    }
  }
  throw new Error(`${name} is not installed for ${dir}: run npm ci first`);
}

async function main(): Promise<number> {
  const wanted: { declaredIn: string; name: string; version: string }[] = [];
  const files = manifests();
  // The workspace's own packages are not on the registry.
  const own = new Set(
    files.map(
      (file) => (JSON.parse(readFileSync(fromRepoRoot(file), "utf8")) as { name: string }).name,
    ),
  );
  for (const file of files) {
    const pkg = JSON.parse(readFileSync(fromRepoRoot(file), "utf8")) as {
      dependencies?: Record<string, string>;
      devDependencies?: Record<string, string>;
    };
    const dir = path.dirname(fromRepoRoot(file));
    for (const name of Object.keys({ ...pkg.dependencies, ...pkg.devDependencies })) {
      if (own.has(name)) continue;
      wanted.push({ declaredIn: file, name, version: installedVersion(dir, name) });
    }
  }
  // A few at a time: each lookup is one npm process.
  const dependencies: InstalledDependency[] = [];
  for (let i = 0; i < wanted.length; i += 6) {
    const batch = wanted.slice(i, i + 6);
    const answers = await Promise.all(batch.map((d) => registryManifest(d.name, d.version)));
    for (const [j, d] of batch.entries()) {
      dependencies.push({ declaredIn: d.declaredIn, manifest: answers[j] as RegistryManifest });
    }
  }
  const problems = dependencyProblems(dependencies);
  for (const problem of problems) process.stderr.write(`${problem}\n`);
  process.stdout.write(
    `checked ${dependencies.length} direct dependencies against the npm registry: ${problems.length === 0 ? "all current" : `${problems.length} problem(s)`}\n`,
  );
  return problems.length === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  },
);
