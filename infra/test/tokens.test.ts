import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { evaluateStack, isSecretOutput } from "../testing/harness";
import { findResource, inputs, resourcesOfType } from "../testing/resources";

describe("tokens", () => {
  it("generates long alphanumeric tokens and a Redis password when none is configured", async () => {
    const evaluation = await evaluateStack("dev");
    for (const name of ["api-token", "worker-token", "redis-password"]) {
      const password = inputs(
        findResource(evaluation, "random:index/randomPassword:RandomPassword", name),
      );
      assert.ok(password.length >= 32, `${name} length ${password.length}`);
      assert.equal(password.special, false);
    }
    const secret = inputs(findResource(evaluation, "kubernetes:core/v1:Secret", "master-tokens"));
    assert.notEqual(secret.stringData.apiToken, secret.stringData.workerToken);
  });

  it("uses configured secret tokens and Redis password and generates none", async () => {
    const evaluation = await evaluateStack("dev", {
      "taskfleet:apiToken": "configured-api-token-0123456789abcdef",
      "taskfleet:workerToken": "configured-worker-token-0123456789abcdef",
      "taskfleet:redisPassword": "configured-redis-password-0123456789abcdef",
    });
    assert.deepEqual(resourcesOfType(evaluation, "random:index/randomPassword:RandomPassword"), []);
    const secret = inputs(findResource(evaluation, "kubernetes:core/v1:Secret", "master-tokens"));
    assert.equal(secret.stringData.apiToken, "configured-api-token-0123456789abcdef");
    assert.equal(secret.stringData.workerToken, "configured-worker-token-0123456789abcdef");
    assert.equal(
      inputs(findResource(evaluation, "kubernetes:core/v1:Secret", "redis-password")).stringData
        .password,
      "configured-redis-password-0123456789abcdef",
    );
    const apiToken = evaluation.outputs.apiToken;
    assert.ok(isSecretOutput(apiToken));
    assert.equal(apiToken.value, "configured-api-token-0123456789abcdef");
  });
});
