/**
 * The ServiceImages component on its own, under mocks, with the args written out here: what it
 * builds, where the images go, and the reference the pods get for each destination. The mocks'
 * docker provider gives a pushed image the digest `<repository>@sha256:<64 hex>` and a local one
 * `sha256:<64 hex>`, as the real provider does.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import type { LocalDestination, RegistryDestination } from "../../cluster/target";
import { type DeployableImage, ServiceImages, type ServiceImagesArgs } from "../../images";
import { evaluateComponent, promiseOf } from "../../testing/harness";
import { findResource, inputs, resourcesOfType } from "../../testing/resources";

const Image = "docker:index/image:Image";
const Tag = "docker:index/tag:Tag";
const Command = "command:local:Command";
const services = ["master", "worker"] as const;

function registry(): RegistryDestination {
  return {
    kind: "registry",
    repositoryUrl: pulumi.output("europe-west1-docker.pkg.dev/acme/fleet"),
    server: pulumi.output("europe-west1-docker.pkg.dev"),
    username: "oauth2accesstoken",
    password: pulumi.secret("registry-token"),
  };
}

function images(args: () => ServiceImagesArgs) {
  return evaluateComponent(() => new ServiceImages("images", args()));
}

/** A DeployableImage with its Outputs resolved. */
async function resolved(image: DeployableImage) {
  return {
    ref: await promiseOf(image.ref),
    digest: await promiseOf(image.digest),
    pullPolicy: image.pullPolicy,
    checks: image.acceptedFindings.map((finding) => finding.check),
  };
}

describe("ServiceImages", () => {
  it("builds each service for amd64 and pushes it to the registry, and deploys it by the pushed digest", async () => {
    const evaluation = await images(() => ({
      destination: registry(),
      stack: "prod",
      prebuilt: {},
    }));
    assert.deepEqual(resourcesOfType(evaluation, Tag), []);
    assert.deepEqual(resourcesOfType(evaluation, Command), []);
    for (const service of services) {
      const image = inputs(findResource(evaluation, Image, `images-${service}`));
      assert.equal(image.imageName, `europe-west1-docker.pkg.dev/acme/fleet/${service}:latest`);
      assert.equal(image.build.context, ".");
      assert.equal(image.build.dockerfile, "services/Dockerfile");
      assert.deepEqual(image.build.args, { SERVICE: service });
      assert.equal(image.build.platform, "linux/amd64");
      assert.notEqual(image.skipPush, true, "pushed");
      assert.deepEqual(image.registry, {
        server: "europe-west1-docker.pkg.dev",
        username: "oauth2accesstoken",
        password: "registry-token",
      });
      const deployable = await resolved(evaluation.component[service]);
      assert.match(
        deployable.ref,
        new RegExp(`^europe-west1-docker\\.pkg\\.dev/acme/fleet/${service}@sha256:[0-9a-f]{64}$`),
      );
      assert.equal(deployable.digest, deployable.ref);
      assert.equal(deployable.pullPolicy, "IfNotPresent");
      assert.deepEqual(deployable.checks, []);
    }
  });

  it("keeps images in the local engine for the engine's own platform, deployed by a tag made of the image id and never pulled", async () => {
    const destination: LocalDestination = { kind: "local", loadCommand: undefined, loadAfter: [] };
    const evaluation = await images(() => ({ destination, stack: "dev", prebuilt: {} }));
    assert.deepEqual(resourcesOfType(evaluation, Command), []);
    for (const service of services) {
      const image = inputs(findResource(evaluation, Image, `images-${service}`));
      assert.equal(image.imageName, `taskfleet-dev/${service}:latest`);
      assert.equal(image.skipPush, true);
      assert.equal(image.registry, undefined);
      assert.equal(image.build.platform, undefined);
      const tag = inputs(findResource(evaluation, Tag, `images-${service}-tag`));
      const id = /^sha256:([0-9a-f]{64})$/.exec(tag.sourceImage)?.[1];
      assert.ok(id, `the tag's source ${tag.sourceImage} is the local image id`);
      assert.equal(tag.targetImage, `taskfleet-dev/${service}:${id.slice(0, 16)}`);
      const deployable = await resolved(evaluation.component[service]);
      assert.equal(deployable.ref, tag.targetImage);
      assert.equal(deployable.digest, tag.sourceImage);
      assert.equal(deployable.pullPolicy, "Never");
      assert.deepEqual(deployable.checks, ["CKV_K8S_15", "CKV_K8S_43"]);
    }
  });

  it("loads each local image into the cluster once the cluster exists, before anything using the image", async () => {
    const evaluation = await evaluateComponent(() => {
      const cluster = new command.local.Command("cluster", { create: "make-a-cluster" });
      const destination: LocalDestination = {
        kind: "local",
        loadCommand: "kind load docker-image --name fleet",
        loadAfter: [cluster],
      };
      const built = new ServiceImages("images", { destination, stack: "dev", prebuilt: {} });
      // Stands for a Deployment: it must wait for the load through the image reference alone.
      for (const service of services) {
        new command.local.Command(`uses-${service}`, { create: built[service].ref });
      }
      return built;
    });
    for (const service of services) {
      const tag = inputs(findResource(evaluation, Tag, `images-${service}-tag`));
      const loaded = findResource(evaluation, Command, `images-${service}-load`);
      assert.equal(inputs(loaded).create, 'kind load docker-image --name fleet "$IMAGE"');
      assert.deepEqual(inputs(loaded).environment, { IMAGE: tag.targetImage });
      assert.deepEqual(inputs(loaded).triggers, [tag.sourceImage]);
      assert.ok(loaded.dependsOn.includes(`${Command}::cluster`), "loads after the cluster");
      const user = findResource(evaluation, Command, `uses-${service}`);
      assert.equal(inputs(user).create, tag.targetImage);
      assert.ok(
        user.dependsOn.includes(`${Command}::images-${service}-load`),
        `what uses the ${service} image waits for its load`,
      );
    }
  });

  it("deploys a prebuilt image as given, pulled, and builds only the other service", async () => {
    const digest = `sha256:${"cd".repeat(32)}`;
    const given = `registry.example/team/worker@${digest}`;
    const evaluation = await images(() => ({
      destination: registry(),
      stack: "prod",
      prebuilt: { worker: given },
    }));
    assert.deepEqual(
      resourcesOfType(evaluation, Image).map((r) => r.name),
      ["images-master"],
    );
    assert.deepEqual(await resolved(evaluation.component.worker), {
      ref: given,
      digest,
      pullPolicy: "IfNotPresent",
      checks: [],
    });

    const byTag = await images(() => ({
      destination: { kind: "local", loadCommand: "kind load docker-image", loadAfter: [] },
      stack: "dev",
      prebuilt: { master: "registry.example/team/master:1.4.2" },
    }));
    assert.deepEqual(await resolved(byTag.component.master), {
      ref: "registry.example/team/master:1.4.2",
      digest: "",
      pullPolicy: "IfNotPresent",
      checks: [],
    });
    assert.deepEqual(
      resourcesOfType(byTag, Command).map((r) => r.name),
      ["images-worker-load"],
      "a prebuilt image is not loaded: it is pulled, or already on the nodes",
    );
  });
});
