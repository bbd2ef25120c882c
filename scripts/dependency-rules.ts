/**
 * What `npm run check:deps` holds every direct dependency to. Pure: the registry's answers come in
 * as data, so the rules are tested on recorded answers (test/scripts/dependency-rules.test.ts).
 */

/** One version's manifest as the npm registry serves it (`npm view <name>@<version> --json`). */
export interface RegistryManifest {
  name: string;
  version: string;
  deprecated?: string;
  "dist-tags"?: Record<string, string>;
  scripts?: Record<string, string>;
  /** Set by Pulumi packages: `resource: true` when the package drives a provider plugin. */
  pulumi?: { resource?: boolean; name?: string; version?: string };
}

/** A direct dependency: where it is declared and the registry's manifest of the installed version. */
export interface InstalledDependency {
  /** The package.json that declares it, for messages. */
  declaredIn: string;
  manifest: RegistryManifest;
}

/**
 * The plugin a Pulumi package asks the engine for, or undefined for a package without one. Newer
 * packages state it in `pulumi.version`; older ones only in their install script
 * (`install-pulumi-plugin.js resource <name> <version>`).
 */
export function requestedPlugin(
  manifest: RegistryManifest,
): { name: string; version: string } | undefined {
  const script = /install-pulumi-plugin\.js resource (\S+) v?(\S+)/.exec(
    manifest.scripts?.install ?? "",
  );
  if (manifest.pulumi?.resource !== true && script === null) return undefined;
  const name = manifest.pulumi?.name ?? script?.[1] ?? manifest.name.replace(/^@pulumi\//, "");
  const version = (manifest.pulumi?.version ?? script?.[2] ?? manifest.version).replace(/^v/, "");
  return { name, version };
}

function major(version: string): number {
  return Number(version.split(".")[0]);
}

/** Every problem, one line each naming the package, what is wrong and what to do. */
export function dependencyProblems(dependencies: readonly InstalledDependency[]): string[] {
  const problems: string[] = [];
  for (const { declaredIn, manifest } of dependencies) {
    const id = `${manifest.name}@${manifest.version} (${declaredIn})`;
    if (manifest.deprecated !== undefined) {
      problems.push(`${id} is deprecated: ${manifest.deprecated}`);
    }
    const plugin = requestedPlugin(manifest);
    if (plugin === undefined) continue;
    const latest = manifest["dist-tags"]?.latest;
    if (latest === undefined) {
      problems.push(`${id} has no latest release on the registry`);
    } else if (major(latest) !== major(manifest.version)) {
      problems.push(
        `${id} drives a Pulumi plugin and is not on its latest major: the registry's latest is ${latest}`,
      );
    }
    if (plugin.version !== manifest.version) {
      problems.push(
        `${id} asks the engine for plugin ${plugin.name} v${plugin.version}, not its own version: a release published by mistake?`,
      );
    }
  }
  return problems;
}
