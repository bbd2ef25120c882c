import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, it } from "node:test";
import { repoRoot } from "../service-builds";
import {
  createRecordingMocks,
  evaluateStack,
  listStacks,
  stackConfigIn,
  testSecretValue,
} from "../testing/harness";

describe("harness", () => {
  it("lists every Pulumi.<stack>.yaml of the repository root, sorted", () => {
    const files = fs
      .readdirSync(repoRoot)
      .filter((file) => /^Pulumi\..+\.yaml$/.test(file))
      .map((file) => file.slice("Pulumi.".length, -".yaml".length))
      .sort();
    assert.deepEqual(listStacks(), files);
  });

  it("picks up a new stack file and merges it over the project defaults, replacing secure values", () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "taskfleet-harness-"));
    try {
      fs.writeFileSync(
        path.join(root, "Pulumi.yaml"),
        [
          "name: taskfleet",
          "runtime: nodejs",
          "config:",
          "  taskfleet:leaseSeconds: { type: integer, default: 30 }",
          "  taskfleet:cluster: { type: string, default: kind }",
          "  gcp:region: { value: europe-west4 }",
          "",
        ].join("\n"),
      );
      fs.writeFileSync(
        path.join(root, "Pulumi.extra.yaml"),
        [
          "config:",
          "  taskfleet:leaseSeconds: 60",
          "  taskfleet:apiToken:",
          "    secure: v1:abcdef",
          "",
        ].join("\n"),
      );
      assert.deepEqual(listStacks(root), ["extra"]);
      assert.deepEqual(stackConfigIn(root, "extra"), {
        config: {
          "taskfleet:leaseSeconds": "60",
          "taskfleet:cluster": "kind",
          "gcp:region": "europe-west4",
          "taskfleet:apiToken": testSecretValue("taskfleet:apiToken"),
        },
        secretKeys: ["taskfleet:apiToken"],
      });
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  it("evaluates stacks one after another with no state carried between them", async () => {
    const first = await evaluateStack("dev");
    const other = await evaluateStack("prod");
    const again = await evaluateStack("dev");
    assert.deepEqual(again, first);
    assert.notDeepEqual(other.resources, first.resources);
  });

  it("fails any invoke it does not know, naming it, and answers the one the program makes", async () => {
    const { mocks, invokes } = createRecordingMocks();
    assert.throws(
      () => mocks.call({ token: "gcp:organizations/getProject:getProject", inputs: {} }),
      {
        message: "unexpected invoke gcp:organizations/getProject:getProject",
      },
    );
    const client = await mocks.call({
      token: "gcp:organizations/getClientConfig:getClientConfig",
      inputs: {},
    });
    assert.equal(client.accessToken, "test-access-token");
    assert.deepEqual(invokes, [
      "gcp:organizations/getProject:getProject",
      "gcp:organizations/getClientConfig:getClientConfig",
    ]);
  });
});
