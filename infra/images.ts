import * as path from "node:path";
import * as command from "@pulumi/command";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import type { LocalDestination, RegistryDestination } from "./cluster/target";
import type { AcceptedFinding } from "./pod";
import {
  fromRepoRoot,
  registryImagePlatform,
  type ServiceName,
  serviceBuilds,
} from "./service-builds";

export interface ServiceImagesArgs {
  /** Where the images go: a registry (pushed) or the local engine (loaded into the cluster). */
  destination: RegistryDestination | LocalDestination;
  /** Distinguishes local image names of two stacks on one machine. */
  stack: string;
  /** Images to deploy as they are, by service; a service without one is built. */
  prebuilt: Partial<Record<ServiceName, string>>;
}

/** What checkov says of a local image, which is by design. */
const localImageFindings: AcceptedFinding[] = [
  { check: "CKV_K8S_15", reason: "a local image is loaded into the cluster and cannot be pulled" },
  {
    check: "CKV_K8S_43",
    reason:
      "a local image has no registry digest; its tag is its content id, so it rolls exactly when it changes",
  },
];

/** One image as the workloads use it. */
export interface DeployableImage {
  /** What goes into the pod's `image` field: changes exactly when the built image changes. */
  ref: pulumi.Output<string>;
  /** `Never` for local images: there is nowhere to pull them from. */
  pullPolicy: "IfNotPresent" | "Never";
  /** The digest (registry) or image id (local) of the build. */
  digest: pulumi.Output<string>;
  /** Manifest checker findings that a Deployment of this image accepts. */
  acceptedFindings: AcceptedFinding[];
}

/**
 * The tag a local image is deployed by: its content id, so that a code change rolls the pods and
 * an unchanged tree leaves the Deployment untouched.
 */
export function contentTag(repository: string, imageId: string): string {
  const hex = imageId.replace(/^sha256:/, "");
  if (!/^[0-9a-f]{12,}$/.test(hex)) {
    throw new Error(`expected a sha256 image id, got "${imageId}"`);
  }
  return `${repository}:${hex.slice(0, 16)}`;
}

/**
 * A path relative to the working directory, so the build inputs stored in the state do not carry
 * one machine's absolute checkout path (which would rebuild on every other machine).
 */
function buildPath(relativeToRoot: string): string {
  return path.relative(process.cwd(), fromRepoRoot(relativeToRoot)) || ".";
}

/**
 * The master and worker images, built from `services/`: for {@link registryImagePlatform} when
 * pushed, for the building engine's own platform when they stay local.
 */
export class ServiceImages extends pulumi.ComponentResource {
  public readonly master: DeployableImage;
  public readonly worker: DeployableImage;

  constructor(name: string, args: ServiceImagesArgs, opts?: pulumi.ComponentResourceOptions) {
    super("taskfleet:index:ServiceImages", name, {}, opts);
    this.master = this.build(name, "master", args);
    this.worker = this.build(name, "worker", args);
    this.registerOutputs({
      masterRef: this.master.ref,
      masterDigest: this.master.digest,
      workerRef: this.worker.ref,
      workerDigest: this.worker.digest,
    });
  }

  private build(name: string, service: ServiceName, args: ServiceImagesArgs): DeployableImage {
    const prebuilt = args.prebuilt[service];
    if (prebuilt !== undefined) {
      // Pulled like any image: from a registry, or already on the nodes (loaded by the user).
      return {
        ref: pulumi.output(prebuilt),
        pullPolicy: "IfNotPresent",
        digest: pulumi.output(/@(sha256:[0-9a-f]{64})$/.exec(prebuilt)?.[1] ?? ""),
        // A given tag is the user's choice; checkov's digest finding stays visible for it.
        acceptedFindings: [],
      };
    }
    const source = serviceBuilds[service];
    const { destination } = args;
    const build = {
      context: buildPath(source.context),
      dockerfile: buildPath(source.dockerfile),
      args: source.args,
      platform: destination.kind === "registry" ? registryImagePlatform : undefined,
    };

    if (destination.kind === "registry") {
      const image = new docker.Image(
        `${name}-${service}`,
        {
          imageName: pulumi.interpolate`${destination.repositoryUrl}/${service}:latest`,
          build,
          registry: {
            server: destination.server,
            username: destination.username,
            password: destination.password,
          },
        },
        { parent: this },
      );
      // repoDigest of a pushed image is `<repository>@sha256:<manifest digest>`: pullable and unique.
      return {
        ref: image.repoDigest,
        pullPolicy: "IfNotPresent",
        digest: image.repoDigest,
        acceptedFindings: [],
      };
    }

    // Nothing is pushed, and then repoDigest is only the local image id (`sha256:…`), which a
    // kubelet cannot use as an image reference; the image is tagged with that id instead.
    const repository = `taskfleet-${args.stack}/${service}`;
    const image = new docker.Image(
      `${name}-${service}`,
      { imageName: `${repository}:latest`, build, skipPush: true },
      { parent: this },
    );
    const tag = new docker.Tag(
      `${name}-${service}-tag`,
      {
        sourceImage: image.repoDigest,
        targetImage: image.repoDigest.apply((id) => contentTag(repository, id)),
      },
      { parent: this },
    );
    let ref: pulumi.Output<string> = tag.targetImage;
    if (destination.loadCommand !== undefined) {
      const load = new command.local.Command(
        `${name}-${service}-load`,
        {
          create: pulumi.interpolate`${destination.loadCommand} "$IMAGE"`,
          environment: { IMAGE: tag.targetImage },
          triggers: [image.repoDigest],
        },
        { parent: this, dependsOn: destination.loadAfter },
      );
      // The pods must not start before the image is in the cluster.
      ref = pulumi.all([tag.targetImage, load.stdout]).apply(([target]) => target);
    }
    return {
      ref,
      pullPolicy: "Never",
      digest: image.repoDigest,
      acceptedFindings: localImageFindings,
    };
  }
}
