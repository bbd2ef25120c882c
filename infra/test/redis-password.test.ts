/**
 * Where the Redis password goes, configured or generated, in-cluster or Memorystore's AUTH
 * string: into one Secret, and nowhere else the program declares or renders.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { renderStack } from "../../scripts/render/render";
import {
  evaluateStack,
  isSecretOutput,
  type StackEvaluation,
  stackConfig,
} from "../testing/harness";
import { findResource, inputs, type Json, resourcesOfType } from "../testing/resources";

const Secret = "kubernetes:core/v1:Secret";

/** Every container of every pod template the stack declares, init containers included. */
function containers(evaluation: StackEvaluation): Json[] {
  return evaluation.resources
    .map(inputs)
    .filter((object: Json) => object.spec?.template?.spec)
    .flatMap((object: Json) => [
      ...(object.spec.template.spec.containers ?? []),
      ...(object.spec.template.spec.initContainers ?? []),
    ]);
}

/** Fails naming each place outside `secretName`'s Secret that holds `value`. */
function assertOnlyInSecret(
  evaluation: StackEvaluation,
  secretName: string,
  value: string,
  overrides: Record<string, string> = {},
): void {
  assert.ok(value.length >= 16, "a password long enough to be found unambiguously");
  const secret = inputs(findResource(evaluation, Secret, secretName));
  assert.equal(secret.stringData.password, value, "the Secret holds it");

  for (const container of containers(evaluation)) {
    for (const entry of container.env ?? []) {
      assert.ok(
        !String(entry.value ?? "").includes(value),
        `${container.name}: env ${entry.name} holds the password as a plain value`,
      );
    }
    const commandLine = [...(container.command ?? []), ...(container.args ?? [])].join(" ");
    assert.ok(
      !commandLine.includes(value),
      `${container.name}: the password is on its command line`,
    );
  }
  for (const configMap of resourcesOfType(evaluation, "kubernetes:core/v1:ConfigMap")) {
    assert.ok(!JSON.stringify(inputs(configMap)).includes(value), `ConfigMap ${configMap.name}`);
  }
  for (const resource of evaluation.resources) {
    if (resource.type === Secret && resource.name === secretName) continue;
    // The generator's own state is where a generated password comes from.
    if (resource.type === "random:index/randomPassword:RandomPassword") continue;
    assert.ok(
      !JSON.stringify(resource.inputs).includes(value),
      `${resource.type} ${resource.name} holds the password`,
    );
  }
  for (const [key, output] of Object.entries(evaluation.outputs)) {
    if (isSecretOutput(output)) continue;
    assert.ok(!JSON.stringify(output).includes(value), `plain output ${key} holds the password`);
  }
  const files = renderStack(evaluation, { ...stackConfig(evaluation.stack), ...overrides });
  for (const [file, text] of files) {
    assert.ok(!text.includes(value), `rendered/${file} holds the password`);
  }
}

describe("the Redis password", () => {
  it("configured, is in its Secret and nowhere else: not in env values, command lines, ConfigMaps, outputs or rendered files", async () => {
    const password = "configured-redis-password-0123456789";
    const overrides = { "taskfleet:redisPassword": password };
    const evaluation = await evaluateStack("dev", overrides);
    assert.deepEqual(
      evaluation.resources
        .filter((r) => r.type === "random:index/randomPassword:RandomPassword")
        .map((r) => r.name)
        .sort(),
      ["api-token", "worker-token"],
      "a configured password is not generated",
    );
    assertOnlyInSecret(evaluation, "redis-password", password, overrides);
  });

  it("generated, is long, alphanumeric, and likewise only in its Secret", async () => {
    const evaluation = await evaluateStack("dev");
    const generator = inputs(
      findResource(evaluation, "random:index/randomPassword:RandomPassword", "redis-password"),
    );
    assert.ok(generator.length >= 32);
    assert.equal(generator.special, false, "no character redis.conf or a shell would split");
    const secret = inputs(findResource(evaluation, Secret, "redis-password"));
    assertOnlyInSecret(evaluation, "redis-password", secret.stringData.password);
  });

  it("from Memorystore, its AUTH string, is only in the Secret the masters read", async () => {
    const evaluation = await evaluateStack("prod");
    const secret = inputs(findResource(evaluation, Secret, "memorystore-password"));
    assertOnlyInSecret(evaluation, "memorystore-password", secret.stringData.password);
  });
});
