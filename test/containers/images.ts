import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import type Docker from "dockerode";

/** What to build: absolute paths, as `fromRepoRoot` gives them. */
export interface ImageBuildRequest {
  /** Names the image in messages ("master"). */
  name: string;
  contextDir: string;
  dockerfilePath: string;
  /** `--build-arg`s. */
  args?: Record<string, string>;
  tag: string;
  /** A build still running after this long is abandoned (default 20 minutes). */
  timeoutMs?: number;
}

const logTailLines = 40;

/** A build that failed or did not finish; the message carries the failing step and the log tail. */
export class ImageBuildError extends Error {
  override name = "ImageBuildError";
}

/**
 * Builds one image with the docker CLI, which sends the context as `docker build` always does
 * (its .dockerignore applied), with host networking (the only network some engines have; on
 * others the build simply uses the host's network). The engine is the one DOCKER_HOST names, as
 * for the tests' own client. Resolves when the image is tagged; a failed step rejects with the
 * step, the error and the last lines of the build log, so a broken Dockerfile is diagnosed from
 * the test output alone.
 */
export async function buildImage(request: ImageBuildRequest): Promise<void> {
  const timeoutMs = request.timeoutMs ?? 20 * 60_000;
  // No platform: like the program's local images, the build is for the engine's own platform.
  const args = ["build", "--network", "host", "-f", request.dockerfilePath, "-t", request.tag];
  for (const [name, value] of Object.entries(request.args ?? {})) {
    args.push("--build-arg", `${name}=${value}`);
  }
  const child = spawn("docker", [...args, request.contextDir], {
    stdio: ["ignore", "pipe", "pipe"],
    signal: AbortSignal.timeout(timeoutMs),
  });
  const log: string[] = [];
  let currentStep = "(before the first step)";
  const collect = (chunk: Buffer) => {
    for (const line of chunk.toString("utf8").split("\n")) {
      if (line.trim() === "") continue;
      log.push(line);
      // The classic builder's "Step 3/14 : COPY …", or BuildKit's "#7 [build 3/9] COPY …".
      if (/^Step \d+\/\d+ : |^#\d+ \[[^\]]+\] /.test(line)) currentStep = line;
    }
    if (log.length > logTailLines * 4) log.splice(0, log.length - logTailLines);
  };
  child.stdout.on("data", collect);
  child.stderr.on("data", collect);
  const outcome = await new Promise<number | Error>((resolve) => {
    child.on("error", resolve);
    child.on("close", (code) => resolve(code ?? -1));
  });
  const logTail = `--- last ${logTailLines} lines of the build log ---\n${log.slice(-logTailLines).join("\n")}`;
  if (outcome instanceof Error) {
    const reason =
      outcome.name === "AbortError"
        ? `did not finish within ${timeoutMs / 1000}s; it was at ${JSON.stringify(currentStep)}`
        : `could not run the docker CLI: ${outcome.message}`;
    throw new ImageBuildError(`building the ${request.name} image ${reason}\n${logTail}`);
  }
  if (outcome !== 0) {
    throw new ImageBuildError(
      `building the ${request.name} image failed at ${JSON.stringify(currentStep)} (docker build exited ${outcome})\n${logTail}`,
    );
  }
}

/**
 * The user the image runs as, when it is a non-root numeric uid (optionally `uid:gid`); throws
 * otherwise. Kubernetes can only enforce `runAsNonRoot` against a numeric user, so a name such
 * as `node` counts as a defect even though it is not root.
 */
export async function nonRootUser(docker: Docker, tag: string): Promise<string> {
  const user = (await docker.getImage(tag).inspect()).Config.User ?? "";
  const match = /^(\d+)(?::(\d+))?$/.exec(user);
  if (!match || Number(match[1]) === 0) {
    throw new Error(
      `image ${tag} runs as user ${JSON.stringify(user)}: its Dockerfile must end with USER <uid>:<gid>, ` +
        "a numeric non-zero uid, so that runAsNonRoot can be enforced",
    );
  }
  return user;
}

/**
 * The image the Dockerfile's final stage starts from (a `FROM` that names an earlier stage is
 * followed back to that stage's own base).
 */
export async function finalBaseImage(dockerfilePath: string): Promise<string> {
  const text = await readFile(dockerfilePath, "utf8");
  const args = new Map<string, string>();
  const stages = new Map<string, string>();
  let last: string | undefined;
  for (const rawLine of text.replace(/\\\r?\n/g, " ").split(/\r?\n/)) {
    const line = rawLine.trim();
    const arg = /^ARG\s+([A-Za-z_][A-Za-z0-9_]*)=("?)([^"\s]*)\2\s*$/i.exec(line);
    if (arg && last === undefined) args.set(arg[1], arg[3]);
    const from = /^FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?/i.exec(line);
    if (!from) continue;
    const image = from[1].replace(
      /\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?/g,
      (_, name: string) => args.get(name) ?? "",
    );
    const resolved = stages.get(image.toLowerCase()) ?? image;
    if (from[2]) stages.set(from[2].toLowerCase(), resolved);
    last = resolved;
  }
  if (last === undefined) throw new Error(`${dockerfilePath} has no FROM line`);
  return last;
}

/** What a Dockerfile adds on top of its base image. */
export interface ImageGrowth {
  image: string;
  base: string;
  /** Bytes in the layers above the base's own layers. */
  addedBytes: number;
  /** The steps that added the most, largest first, with their sizes in bytes. */
  largestSteps: { step: string; bytes: number }[];
}

/**
 * Measures the layers an image has on top of its base: the base's layers must be the image's
 * first layers (else the image was not built from that base); the history entries above the
 * base's own entries are what the Dockerfile added.
 */
export async function imageGrowth(
  docker: Docker,
  image: string,
  base: string,
): Promise<ImageGrowth> {
  const [imageInfo, baseInfo] = await Promise.all([
    docker.getImage(image).inspect(),
    docker.getImage(base).inspect(),
  ]);
  const imageLayers = imageInfo.RootFS.Layers ?? [];
  const baseLayers = baseInfo.RootFS.Layers ?? [];
  if (!baseLayers.every((layer, index) => imageLayers[index] === layer)) {
    throw new Error(
      `image ${image} is not built on ${base}: the base's layers are not its first layers`,
    );
  }
  const [imageHistory, baseHistory] = (await Promise.all([
    docker.getImage(image).history(),
    docker.getImage(base).history(),
  ])) as { CreatedBy: string; Size: number }[][];
  // History is newest first; the base's entries are the oldest ones.
  const added = imageHistory.slice(0, imageHistory.length - baseHistory.length);
  const addedBytes = added.reduce((sum, entry) => sum + entry.Size, 0);
  const largestSteps = added
    .filter((entry) => entry.Size > 0)
    .sort((a, b) => b.Size - a.Size)
    .slice(0, 3)
    .map((entry) => ({ step: describeStep(entry.CreatedBy), bytes: entry.Size }));
  return { image, base, addedBytes, largestSteps };
}

/** A history entry's command, readable: `COPY dir:<hash> in ./x` becomes `COPY ... ./x`. */
export function describeStep(createdBy: string): string {
  const step = createdBy
    .replace(/^\/bin\/sh -c #\(nop\)\s*/, "")
    .replace(/^\/bin\/sh -c /, "RUN ")
    .replace(/^(COPY|ADD) (?:dir|file|multi):[0-9a-f]+ in /, "$1 ... ")
    .trim();
  return step.length > 80 ? `${step.slice(0, 77)}...` : step;
}

export const toMB = (bytes: number) => Math.round((bytes / 1_000_000) * 10) / 10;
