import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import type Docker from "dockerode";
import { type ServiceName, serviceBuilds } from "../../infra/service-builds.js";
import { ContainerFleet, freeLocalPort, runPrefix } from "./containers.js";
import { buildServiceImages, ContainerExitedError, sourceRoot, startMaster } from "./deployment.js";
import { connectEngine } from "./engine.js";
import { ImageBuildError } from "./images.js";

const run = promisify(execFile);
const prefix = runPrefix();
const tagOf = (service: ServiceName) => `taskfleet-${service}:containers-test-broken`;

let docker: Docker;
let fleet: ContainerFleet | undefined;
let scratch: string;

/**
 * Copies the build context into the scratch tree: the paths the repository's .dockerignore lets
 * through (it lists them one by one, after excluding everything), itself, and the service's
 * Dockerfile. Returns the scratch copy of the service's folder.
 */
async function copyContext(service: ServiceName): Promise<string> {
  const from = path.resolve(sourceRoot, serviceBuilds[service].context);
  const rules = await readFile(path.join(from, ".dockerignore"), "utf8");
  const included = rules
    .split("\n")
    .filter((line) => line.startsWith("!"))
    .map((line) => line.slice(1).trim());
  for (const file of [".dockerignore", serviceBuilds[service].dockerfile, ...included]) {
    const to = path.join(scratch, serviceBuilds[service].context, file);
    await mkdir(path.dirname(to), { recursive: true });
    await cp(path.join(from, file), to, { recursive: true, verbatimSymlinks: true });
  }
  return path.join(scratch, "services", service);
}

/**
 * Points the first `COPY` from the build context (not `--from=` another stage) at a path that
 * does not exist: the typo a rename leaves behind.
 */
function breakFirstContextCopy(dockerfile: string): { text: string; line: string } {
  const lines = dockerfile.split("\n");
  const index = lines.findIndex((line) => /^\s*COPY\s/i.test(line) && !/--from=/i.test(line));
  if (index < 0) throw new Error("the Dockerfile has no COPY from the build context");
  const tokens = lines[index].trim().split(/\s+/);
  const source = tokens.findIndex((token, position) => position > 0 && !token.startsWith("--"));
  tokens[source] = "no-such-path-in-the-context";
  lines[index] = tokens.join(" ");
  return { text: lines.join("\n"), line: lines[index] };
}

describe("a broken Dockerfile or image fails the container tests (built from a scratch copy)", {
  timeout: 30 * 60_000,
}, () => {
  before(async () => {
    docker = await connectEngine();
    fleet = new ContainerFleet(docker);
    scratch = await mkdtemp(path.join(tmpdir(), "taskfleet-broken-"));
  });

  after(async () => {
    await fleet?.removeAll();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  it("fails the build, naming the step, when a COPY names a path the context lacks", async () => {
    await copyContext("worker");
    const dockerfile = path.join(scratch, serviceBuilds.worker.dockerfile);
    const broken = breakFirstContextCopy(await readFile(dockerfile, "utf8"));
    await writeFile(dockerfile, broken.text);
    await assert.rejects(
      buildServiceImages(docker, scratch, tagOf, ["worker"]),
      (error: unknown) => {
        assert.ok(error instanceof ImageBuildError, String(error));
        assert.match(
          error.message,
          /failed at "(Step \d+\/\d+ : |#\d+ \[[^\]]+\] )COPY no-such-path-in-the-context/,
        );
        assert.match(error.message, /no-such-path-in-the-context/);
        assert.match(error.message, /last \d+ lines of the build log/);
        return true;
      },
    );
  });

  it("fails at start, with the container's exit and log, when a runtime dependency is only a dev dependency", async () => {
    const folder = await copyContext("master");
    const manifestFile = path.join(folder, "package.json");
    const manifest = JSON.parse(await readFile(manifestFile, "utf8")) as {
      dependencies?: Record<string, string>;
      devDependencies?: Record<string, string>;
    };
    assert.ok(
      Object.keys(manifest.dependencies ?? {}).length > 0,
      "the master declares no runtime dependency",
    );
    // The image builds (the build stage installs dev dependencies) but the runtime, installed
    // without them, lacks every package the server imports.
    manifest.devDependencies = { ...manifest.devDependencies, ...manifest.dependencies };
    manifest.dependencies = {};
    await writeFile(manifestFile, `${JSON.stringify(manifest, null, 2)}\n`);
    await run(
      "npm",
      ["install", "--package-lock-only", "--ignore-scripts", "--no-audit", "--no-fund"],
      // The one lockfile, at the root of the workspace.
      { cwd: scratch, timeout: 120_000 },
    );

    const images = await buildServiceImages(docker, scratch, tagOf, ["master"]);
    await assert.rejects(
      startMaster(fleet as ContainerFleet, {
        name: `${prefix}-broken-master`,
        image: images.get("master") as NonNullable<ReturnType<typeof images.get>>,
        port: await freeLocalPort(),
        apiToken: "broken-image-api-token",
        workerToken: "broken-image-worker-token",
      }),
      (error: unknown) => {
        assert.ok(error instanceof ContainerExitedError, String(error));
        assert.match(error.message, /exited with code [1-9]/);
        assert.match(error.message, /Cannot find (package|module)/);
        return true;
      },
    );
  });
});
