import * as path from "node:path";

/**
 * Where each service image is built from: the one definition shared by the Pulumi program
 * (`infra/images.ts`) and the container tests (`test/containers/`), so the two cannot drift.
 * Paths are relative to the repository root, which is also the Pulumi project directory.
 */
export interface ServiceBuild {
  /**
   * Build context, relative to the repository root: the root itself, so that an image can copy
   * the protocol package; the root's .dockerignore sends only what the Dockerfiles copy.
   */
  context: string;
  /** Dockerfile, relative to the repository root. */
  dockerfile: string;
  /** Build arguments: the one Dockerfile builds either service. */
  args: Record<string, string>;
}

export const serviceBuilds = {
  master: { context: ".", dockerfile: "services/Dockerfile", args: { SERVICE: "master" } },
  worker: { context: ".", dockerfile: "services/Dockerfile", args: { SERVICE: "worker" } },
} as const satisfies Record<string, ServiceBuild>;

export type ServiceName = keyof typeof serviceBuilds;

/**
 * The platform of images pushed to a registry: GKE's node pools are amd64. Local images are built
 * for the platform of the engine that builds them (arm64 on Apple-silicon laptops), which is what
 * the local cluster's nodes run.
 */
export const registryImagePlatform = "linux/amd64";

/** The repository root, resolved from this file so it does not depend on the working directory. */
export const repoRoot = path.resolve(__dirname, "..");

/** An absolute path inside the repository, for tools that need one. */
export function fromRepoRoot(relative: string): string {
  return path.join(repoRoot, relative);
}
