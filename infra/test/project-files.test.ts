import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, it } from "node:test";
import YAML from "yaml";
import {
  type ConfigKeySpec,
  ConfigReader,
  configSpec,
  projectName,
  secretKeys,
  validateConfig,
} from "../config";
import { repoRoot } from "../service-builds";
import { evaluateStack, listStacks, readProjectFile, stackConfig } from "../testing/harness";

const specs = Object.entries(configSpec) as [string, ConfigKeySpec][];

function readYaml(file: string): Record<string, unknown> {
  return YAML.parse(fs.readFileSync(path.join(repoRoot, file), "utf8")) ?? {};
}

describe("Pulumi.yaml", () => {
  const project = readProjectFile() as unknown as Record<string, unknown> & {
    config: Record<string, Record<string, unknown>>;
  };

  it("is the taskfleet TypeScript project with its program in infra/", () => {
    assert.equal(project.name, projectName);
    assert.deepEqual(project.runtime, {
      name: "nodejs",
      options: { typescript: true, packagemanager: "npm" },
    });
    assert.equal(project.main, "infra/");
    assert.ok(fs.existsSync(path.join(repoRoot, "infra", "index.ts")));
  });

  it("declares each key with a type, a default of that type and a one-line description", () => {
    for (const [key, declaration] of Object.entries(project.config)) {
      assert.ok(key.startsWith(`${projectName}:`), `${key} is not a ${projectName}: key`);
      assert.deepEqual(Object.keys(declaration).sort(), ["default", "description", "type"], key);
      const { type, default: fallback, description } = declaration;
      assert.ok(["string", "integer", "boolean"].includes(String(type)), `${key}: type ${type}`);
      assert.equal(typeof fallback, type === "integer" ? "number" : type, `${key}: default`);
      assert.match(String(description), /^[^\n]{10,}$/, `${key}: description`);
    }
  });

  it("declares exactly the keys the program reads: none unread, and reading another throws", () => {
    const read = new Set<string>();
    const recording = (values: Record<string, string | undefined>) =>
      new Proxy(values, {
        get(target, key) {
          if (typeof key === "string") read.add(key);
          return target[key as string];
        },
      });
    // A kind stack and a GKE stack between them read every key.
    for (const stack of ["dev", "prod"]) {
      validateConfig({ stack, values: recording(stackConfig(stack)) });
    }
    // The tokens are read as secrets, apart from the plain values validateConfig sees.
    const secret = new Set(secretKeys.map((key) => `${projectName}:${key}`));
    const declared = Object.keys(project.config).sort();
    assert.deepEqual(
      declared.filter((key) => !read.has(key) && !secret.has(key)),
      [],
      "declared in Pulumi.yaml but never read",
    );
    assert.throws(
      () => new ConfigReader({}).string("undeclaredKey"),
      /config key taskfleet:undeclaredKey is not declared in Pulumi.yaml/,
    );
  });
});

describe("stack files", () => {
  for (const stack of listStacks()) {
    it(`Pulumi.${stack}.yaml sets only declared keys, each to a value that differs from its default`, () => {
      const config = (readYaml(`Pulumi.${stack}.yaml`).config ?? {}) as Record<string, unknown>;
      for (const [key, value] of Object.entries(config)) {
        if (key.startsWith("gcp:")) continue;
        const name = key.replace(`${projectName}:`, "");
        const spec = (configSpec as Record<string, ConfigKeySpec>)[name];
        assert.ok(spec && key.startsWith(`${projectName}:`), `${key} is not a declared config key`);
        assert.notEqual(String(value), String(spec.default), `${key} repeats its default`);
      }
      assert.doesNotThrow(() => validateConfig({ stack, values: stackConfig(stack) }));
    });
  }

  it("gives every GKE stack a project and a region, and no other stack any gcp setting", () => {
    for (const stack of listStacks()) {
      const config = stackConfig(stack);
      const gcpKeys = Object.keys(config)
        .filter((key) => key.startsWith("gcp:"))
        .sort();
      if (config[`${projectName}:cluster`] === "gke") {
        assert.deepEqual(gcpKeys, ["gcp:project", "gcp:region"], stack);
      } else {
        assert.deepEqual(gcpKeys, [], stack);
      }
    }
  });
});

describe("the README's configuration table", () => {
  const docs = fs.readFileSync(path.join(repoRoot, "README.md"), "utf8");

  it("lists every config key with the program's type and default", () => {
    const rows = new Map<string, { type: string; default: string }>();
    for (const match of docs.matchAll(
      /^\| `([a-zA-Z]+)` +\| ([a-z]+)(?: \(secret\))? +\| `([^`]*)` +\|/gm,
    )) {
      rows.set(match[1] as string, { type: match[2] as string, default: match[3] as string });
    }
    assert.deepEqual([...rows.keys()].sort(), specs.map(([key]) => key).sort());
    for (const [key, spec] of specs) {
      const expected = spec.default === "" ? '""' : String(spec.default);
      assert.deepEqual(rows.get(key), { type: spec.type, default: expected }, key);
    }
  });
});

describe("infra/index.ts", () => {
  it("exports exactly the outputs the program computes", async () => {
    const source = fs.readFileSync(path.join(repoRoot, "infra", "index.ts"), "utf8");
    const exported = [...source.matchAll(/^export const (\w+) = taskfleet\.(\w+);$/gm)];
    for (const match of exported) assert.equal(match[1], match[2]);
    const evaluation = await evaluateStack("prod");
    assert.deepEqual(exported.map((m) => m[1]).sort(), Object.keys(evaluation.outputs).sort());
    for (const required of [
      "masterUrl",
      "namespace",
      "masterImageDigest",
      "workerImageDigest",
      "kubeconfig",
      "apiToken",
      "clusterName",
    ]) {
      assert.ok(required in evaluation.outputs, required);
    }
  });
});
