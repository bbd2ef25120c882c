import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { validateConfig } from "../config";
import { evaluateStack } from "../testing/harness";
import { findResource, inputs, resourcesOfType } from "../testing/resources";

const digest = `sha256:${"ab".repeat(32)}`;

describe("prebuilt images", () => {
  it("deploys a given image as it is and builds only the other one", async () => {
    const given = `europe-west1-docker.pkg.dev/acme/ci/worker@${digest}`;
    const evaluation = await evaluateStack("prod", { "taskfleet:workerImage": given });
    const images = resourcesOfType(evaluation, "docker:index/image:Image").map((r) => r.name);
    assert.deepEqual(images, ["images-master"]);
    const workers = inputs(findResource(evaluation, "kubernetes:apps/v1:Deployment", "workers"));
    const container = workers.spec.template.spec.containers[0];
    assert.equal(container.image, given);
    assert.equal(container.imagePullPolicy, "IfNotPresent");
    assert.equal(evaluation.outputs.workerImage, given);
    assert.equal(evaluation.outputs.workerImageDigest, digest);
  });

  it("accepts a reference by digest or by a fixed tag, and refuses latest or no tag at all", () => {
    const image = (value: string) =>
      validateConfig({ stack: "test", values: { "taskfleet:masterImage": value } }).prebuiltImages
        .master;
    assert.equal(
      image(`registry.example:5000/team/master@${digest}`),
      `registry.example:5000/team/master@${digest}`,
    );
    assert.equal(image("taskfleet/master:1.4.2"), "taskfleet/master:1.4.2");
    assert.equal(image(""), undefined);
    for (const bad of [
      "taskfleet/master",
      "taskfleet/master:latest",
      "Taskfleet/master:1",
      "master:1 ",
    ]) {
      assert.throws(
        () => image(bad),
        {
          message: `Invalid config taskfleet:masterImage = "${bad}": must be an image reference with a digest (repo@sha256:...) or a tag other than latest (repo:1.2.3).`,
        },
        bad,
      );
    }
  });
});
