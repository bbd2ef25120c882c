import Docker from "dockerode";

/**
 * Where the Docker client connects: `DOCKER_HOST` when set (as the docker CLI and dockerode read
 * it), otherwise the engine's default local socket.
 */
export function engineEndpoint(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env.DOCKER_HOST?.trim();
  if (fromEnv) return fromEnv;
  return process.platform === "win32"
    ? "npipe:////./pipe/docker_engine"
    : "unix:///var/run/docker.sock";
}

/** The engine could not be reached; `message` is one line meant for a person, no stack needed. */
export class EngineUnreachableError extends Error {
  override name = "EngineUnreachableError";
}

/**
 * A client for the local Docker engine, after proving that the engine answers. Fails with one
 * line that says where it looked and how to get an engine, because the usual cause is simply that
 * none is running.
 */
export async function connectEngine(timeoutMs = 5_000): Promise<Docker> {
  const endpoint = engineEndpoint();
  // No arguments: dockerode reads DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH itself.
  const docker = new Docker({ timeout: timeoutMs } as Docker.DockerOptions);
  try {
    await docker.ping();
  } catch (error) {
    const reason = error instanceof Error ? error.message.split("\n")[0] : String(error);
    throw new EngineUnreachableError(
      `Docker engine not reachable at ${endpoint} (${reason}): start one ` +
        "(on this project's build machines: ../shared/tools/offline-docker up && " +
        "../shared/tools/offline-docker base; elsewhere: start Docker) or set DOCKER_HOST",
    );
  }
  // The ping's timeout must not apply to builds and long waits that follow.
  return new Docker();
}
