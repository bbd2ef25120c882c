import * as path from "node:path";
import type Docker from "dockerode";
import { fromRepoRoot, type ServiceName, serviceBuilds } from "../../infra/service-builds.js";
import type { ContainerFleet } from "./containers.js";
import { buildImage, nonRootUser } from "./images.js";
import { HopelessWaitError, MasterApi, waitUntil } from "./master-api.js";

/**
 * Where the service contexts are read from: the repository itself, or a copy of it named by
 * `TASKFLEET_SOURCE_ROOT` (to prove on a scratch copy that a broken Dockerfile fails the suite
 * without breaking the shared tree). The paths inside it are always `serviceBuilds`'.
 */
export const sourceRoot = process.env.TASKFLEET_SOURCE_ROOT ?? fromRepoRoot(".");

/** A built image and the user it declares. */
export interface BuiltImage {
  tag: string;
  /** `uid[:gid]`, numeric and non-root (checked). */
  user: string;
}

/**
 * Builds each service's image from `sourceRoot` (the repository, or a copy of it) with the
 * context and Dockerfile that `serviceBuilds` gives, in parallel, and checks that each runs as a
 * non-root numeric user.
 */
export async function buildServiceImages(
  docker: Docker,
  sourceRoot: string,
  tagOf: (service: ServiceName) => string,
  services: readonly ServiceName[] = Object.keys(serviceBuilds) as ServiceName[],
): Promise<Map<ServiceName, BuiltImage>> {
  const built = new Map<ServiceName, BuiltImage>();
  await Promise.all(
    services.map(async (service) => {
      const started = Date.now();
      const tag = tagOf(service);
      await buildImage({
        name: service,
        contextDir: path.resolve(sourceRoot, serviceBuilds[service].context),
        dockerfilePath: path.resolve(sourceRoot, serviceBuilds[service].dockerfile),
        args: serviceBuilds[service].args,
        tag,
      });
      console.log(`built ${tag} in ${((Date.now() - started) / 1000).toFixed(0)}s`);
      built.set(service, { tag, user: await nonRootUser(docker, tag) });
    }),
  );
  return built;
}

export interface MasterOptions {
  name: string;
  image: BuiltImage;
  port: number;
  apiToken: string;
  workerToken: string;
  /** More of the master's variables (docs/protocol.md). */
  env?: Record<string, string>;
  readyTimeoutMs?: number;
}

/**
 * Starts the master as the cluster does, configured only by its environment, and waits until
 * `/readyz` answers 200 on its port. Fails at once, with its last log lines, if it exits first.
 */
export async function startMaster(
  fleet: ContainerFleet,
  options: MasterOptions,
): Promise<MasterApi> {
  const master = new MasterApi(`http://127.0.0.1:${options.port}`, options.apiToken);
  await fleet.start({
    name: options.name,
    image: options.image.tag,
    env: {
      PORT: String(options.port),
      // Host networking shares the host's interfaces: listen on loopback only.
      HOST: "127.0.0.1",
      API_TOKEN: options.apiToken,
      WORKER_TOKEN: options.workerToken,
      ...options.env,
    },
  });
  await waitUntil(
    async () => {
      const exited = await fleet.exited(options.name);
      if (exited) throw new ContainerExitedError(`${exited}\n${await fleet.logTail(options.name)}`);
      const ready = await master.raw("GET", "/readyz", undefined, 2_000).catch(() => undefined);
      return ready?.status === 200 ? true : undefined;
    },
    {
      timeoutMs: options.readyTimeoutMs ?? 30_000,
      describe: async () =>
        `the master never became ready on ${master.baseUrl} (it runs with host networking: an ` +
        `engine without it, such as Docker Desktop with host networking off, never exposes that ` +
        `port)\n${await fleet.logTail(options.name)}`,
    },
  );
  return master;
}

export interface WorkerOptions {
  name: string;
  image: BuiltImage;
  masterUrl: string;
  workerToken: string;
  env?: Record<string, string>;
}

/** Starts one worker, configured only by its environment; it opens no port. */
export function startWorker(
  fleet: ContainerFleet,
  options: WorkerOptions,
): Promise<Docker.Container> {
  return fleet.start({
    name: options.name,
    image: options.image.tag,
    env: {
      MASTER_URL: options.masterUrl,
      WORKER_TOKEN: options.workerToken,
      WORKER_ID: options.name,
      ...options.env,
    },
  });
}

/** A container stopped before it was ready; the message carries its exit and last log lines. */
export class ContainerExitedError extends HopelessWaitError {
  override name = "ContainerExitedError";
}
