import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  dependencyProblems,
  type RegistryManifest,
  requestedPlugin,
} from "../../scripts/dependency-rules";

// Recorded registry answers (`npm view <name>@<version> --json`, trimmed to the fields read).
const strayCommand: RegistryManifest = {
  name: "@pulumi/command",
  version: "4.5.0",
  pulumi: { resource: true, name: "command" },
  scripts: { install: "node scripts/install-pulumi-plugin.js resource command v4.5.0" },
  "dist-tags": { latest: "1.2.1" },
};
const command: RegistryManifest = {
  name: "@pulumi/command",
  version: "1.2.1",
  pulumi: { resource: true, name: "command", version: "1.2.1" },
  scripts: { install: "node scripts/install-pulumi-plugin.js resource command 1.2.1" },
  "dist-tags": { latest: "1.2.1" },
};
const kubernetes: RegistryManifest = {
  name: "@pulumi/kubernetes",
  version: "4.34.2",
  scripts: { install: "node scripts/install-pulumi-plugin.js resource kubernetes 4.34.2" },
  "dist-tags": { latest: "4.34.2" },
};
const pulumiSdk: RegistryManifest = {
  name: "@pulumi/pulumi",
  version: "3.276.0",
  "dist-tags": { latest: "3.276.0" },
};

const at = (manifest: RegistryManifest) => ({ declaredIn: "package.json", manifest });

describe("the dependency check", () => {
  it("reads the plugin a package asks for from pulumi.version or, for older packages, its install script", () => {
    assert.deepEqual(requestedPlugin(command), { name: "command", version: "1.2.1" });
    assert.deepEqual(requestedPlugin(strayCommand), { name: "command", version: "4.5.0" });
    assert.deepEqual(requestedPlugin(kubernetes), { name: "kubernetes", version: "4.34.2" });
    assert.equal(requestedPlugin(pulumiSdk), undefined);
  });

  it("passes current releases", () => {
    assert.deepEqual(dependencyProblems([command, kubernetes, pulumiSdk].map(at)), []);
  });

  it("fails the stray @pulumi/command 4.5.0 that a real pulumi up could not install", () => {
    assert.deepEqual(dependencyProblems([at(strayCommand)]), [
      "@pulumi/command@4.5.0 (package.json) drives a Pulumi plugin and is not on its latest major: the registry's latest is 1.2.1",
    ]);
  });

  it("fails a plugin package that asks for a plugin version other than its own", () => {
    const mismatched = { ...command, pulumi: { ...command.pulumi, version: "1.2.0" } };
    assert.deepEqual(dependencyProblems([at(mismatched)]), [
      "@pulumi/command@1.2.1 (package.json) asks the engine for plugin command v1.2.0, not its own version: a release published by mistake?",
    ]);
  });

  it("fails any deprecated dependency, plugin or not", () => {
    const deprecated = { ...pulumiSdk, deprecated: "use 3.277.0" };
    assert.deepEqual(
      dependencyProblems([{ declaredIn: "services/master/package.json", manifest: deprecated }]),
      ["@pulumi/pulumi@3.276.0 (services/master/package.json) is deprecated: use 3.277.0"],
    );
  });
});
