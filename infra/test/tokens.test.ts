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

describe("the scaler's token", () => {
  it("is generated for a queue-sized stack, or taken from config, and kept in the tokens' Secret", async () => {
    const generated = await evaluateStack("minikube");
    const password = inputs(
      findResource(generated, "random:index/randomPassword:RandomPassword", "scaler-token"),
    );
    assert.ok(password.length >= 32);
    const secret = inputs(findResource(generated, "kubernetes:core/v1:Secret", "master-tokens"));
    const tokens = new Set([
      secret.stringData.apiToken,
      secret.stringData.workerToken,
      secret.stringData.scalerToken,
    ]);
    assert.equal(tokens.size, 3, "three different tokens");

    const configured = await evaluateStack("minikube", {
      "taskfleet:scalerToken": "configured-scaler-token-0123456789abcdef",
    });
    assert.equal(
      resourcesOfType(configured, "random:index/randomPassword:RandomPassword").filter(
        (r) => r.name === "scaler-token",
      ).length,
      0,
    );
    assert.equal(
      inputs(findResource(configured, "kubernetes:core/v1:Secret", "master-tokens")).stringData
        .scalerToken,
      "configured-scaler-token-0123456789abcdef",
    );
  });

  it("is not made for a CPU-sized stack", async () => {
    const evaluation = await evaluateStack("dev");
    assert.equal(
      resourcesOfType(evaluation, "random:index/randomPassword:RandomPassword").filter(
        (r) => r.name === "scaler-token",
      ).length,
      0,
    );
  });
});
