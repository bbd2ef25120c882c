import { randomBytes } from "node:crypto";
import { createServer } from "node:net";
import type Docker from "dockerode";
import { containerSecurityContext, podSecurityContext, tmpMount } from "../../infra/pod.js";

/** The label every container of this suite carries, so leftovers can be found and removed. */
export const suiteLabel = { key: "taskfleet.test", value: "containers" } as const;

/**
 * The pods' lockdown (`infra/pod.ts`, the Pulumi program's own settings) as Docker settings, so
 * that the containers here cannot drift from the pods: the same numeric user and group, a
 * read-only root file system with a writable `/tmp` where the pods mount an emptyDir, every
 * capability dropped, no privilege escalation. Host networking, because it is the only network
 * some engines have; each container listens on its own port of 127.0.0.1.
 */
export function podLockdown(): { user: string; hostConfig: Docker.HostConfig } {
  const uid = podSecurityContext.runAsUser;
  const gid = podSecurityContext.runAsGroup;
  if (typeof uid !== "number" || typeof gid !== "number") {
    throw new Error("infra/pod.ts must set runAsUser and runAsGroup to plain numbers");
  }
  const drop = containerSecurityContext.capabilities as { drop?: unknown } | undefined;
  return {
    user: `${uid}:${gid}`,
    hostConfig: {
      NetworkMode: "host",
      ReadonlyRootfs: containerSecurityContext.readOnlyRootFilesystem === true,
      Tmpfs: { [tmpMount.mountPath]: "rw,noexec,nosuid,size=64m" },
      CapDrop: Array.isArray(drop?.drop) ? (drop.drop as string[]) : [],
      SecurityOpt:
        containerSecurityContext.allowPrivilegeEscalation === false ? ["no-new-privileges"] : [],
    },
  };
}

/** A prefix unique to this run, for container names. */
export function runPrefix(): string {
  return `taskfleet-test-${randomBytes(3).toString("hex")}`;
}

/** A TCP port free on 127.0.0.1 right now (the kernel picks it). */
export function freeLocalPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => {
        if (address && typeof address === "object") resolve(address.port);
        else reject(new Error("no port assigned"));
      });
    });
  });
}

/** What to run: only an image, a name and environment variables, as the pods are configured. */
export interface ContainerSpec {
  name: string;
  image: string;
  env: Record<string, string>;
}

/**
 * Starts containers and remembers them, so that {@link ContainerFleet.removeAll} can always
 * remove every one of them, whatever failed in between.
 */
export class ContainerFleet {
  private static readonly live = new Set<ContainerFleet>();
  private readonly started = new Map<string, Docker.Container>();
  /** The user and host settings every container gets. */
  readonly lockdown = podLockdown();

  constructor(private readonly docker: Docker) {
    // Ctrl-C must not leave containers holding ports on the host.
    if (ContainerFleet.live.size === 0) {
      process.once("SIGINT", () => {
        const fleets = [...ContainerFleet.live];
        void Promise.all(fleets.map((fleet) => fleet.removeAll())).finally(() => process.exit(130));
      });
    }
    ContainerFleet.live.add(this);
  }

  /** Creates and starts one locked-down container. */
  async start(spec: ContainerSpec): Promise<Docker.Container> {
    const container = await this.docker.createContainer({
      name: spec.name,
      Image: spec.image,
      User: this.lockdown.user,
      Env: Object.entries(spec.env).map(([key, value]) => `${key}=${value}`),
      Labels: { [suiteLabel.key]: suiteLabel.value },
      HostConfig: this.lockdown.hostConfig,
    });
    this.started.set(spec.name, container);
    await container.start();
    return container;
  }

  /**
   * How a container ended, or `undefined` while it runs: a container that exits while the suite
   * waits for it to become ready will never become ready, so the wait stops at once.
   */
  async exited(name: string): Promise<string | undefined> {
    const container = this.started.get(name);
    if (!container) return `no container ${name} was started`;
    const state = (await container.inspect()).State;
    if (state.Running) return undefined;
    return `container ${name} exited with code ${state.ExitCode}${state.OOMKilled ? " (out of memory)" : ""}${state.Error ? `: ${state.Error}` : ""}`;
  }

  /** The last lines a container wrote (stdout and stderr), for failure messages. */
  async logTail(name: string, lines = 30): Promise<string> {
    const container = this.started.get(name);
    if (!container) return `(no container ${name})`;
    try {
      const raw = (await container.logs({ stdout: true, stderr: true, tail: lines })) as Buffer;
      return demultiplex(raw).trimEnd() || "(no output)";
    } catch (error) {
      return `(logs unavailable: ${error instanceof Error ? error.message : String(error)})`;
    }
  }

  /** Removes every container this fleet started, running or not; never throws. */
  async removeAll(): Promise<void> {
    const containers = [...this.started.values()];
    this.started.clear();
    await Promise.all(containers.map((container) => removeQuietly(container)));
  }
}

/** Removes containers left by an earlier run that could not clean up (killed, power cut). */
export async function removeLeftovers(docker: Docker): Promise<number> {
  const leftovers = await docker.listContainers({
    all: true,
    filters: { label: [`${suiteLabel.key}=${suiteLabel.value}`] },
  });
  await Promise.all(leftovers.map((info) => removeQuietly(docker.getContainer(info.Id))));
  return leftovers.length;
}

async function removeQuietly(container: Docker.Container): Promise<void> {
  try {
    await container.remove({ force: true, v: true });
  } catch (error) {
    // Already gone is the goal; anything else is reported but must not hide the test's own result.
    const status = (error as { statusCode?: number }).statusCode;
    if (status !== 404 && status !== 409) {
      console.error(`could not remove container ${container.id}: ${String(error)}`);
    }
  }
}

/**
 * Docker's log stream, when the container has no TTY, frames each chunk with an 8-byte header
 * (stream type, 3 zero bytes, big-endian length).
 */
export function demultiplex(raw: Buffer): string {
  const chunks: Buffer[] = [];
  let offset = 0;
  while (offset + 8 <= raw.length) {
    const length = raw.readUInt32BE(offset + 4);
    chunks.push(raw.subarray(offset + 8, offset + 8 + length));
    offset += 8 + length;
  }
  if (offset !== raw.length) return raw.toString("utf8");
  return Buffer.concat(chunks).toString("utf8");
}
