import { readdir, readFile } from "node:fs/promises";
import * as path from "node:path";
import type { Readable } from "node:stream";
import dockerignore from "@balena/dockerignore";
import * as tar from "tar-fs";

/** A build context ready to send to the engine. */
export interface PackedContext {
  /** The context as a tar stream. */
  tar: Readable;
  /** The Dockerfile's path inside the context, as the engine's `dockerfile` build option. */
  dockerfile: string;
  /** Every file and symlink sent, relative to the context, `/`-separated, sorted. */
  files: string[];
}

const toPosix = (relative: string) => relative.split(path.sep).join("/");

/**
 * The files `docker build` would send from `contextDir`: everything the context's `.dockerignore`
 * does not exclude (Docker's own matching rules: a pattern that matches a directory excludes all
 * below it, `!` re-includes), plus the Dockerfile and `.dockerignore` themselves, which the docker
 * CLI always sends. Sorted, `/`-separated, relative to the context.
 */
export async function listContextFiles(contextDir: string, dockerfile?: string): Promise<string[]> {
  const rules = await readFile(path.join(contextDir, ".dockerignore"), "utf8").catch(
    (error: NodeJS.ErrnoException) => {
      if (error.code === "ENOENT") return "";
      throw error;
    },
  );
  const matcher = dockerignore({ ignorecase: false }).add(rules);
  // With no `!` rule nothing below an excluded directory can come back, so such a directory
  // (node_modules, dist) is not walked at all.
  const hasExceptions = rules.split(/\r?\n/).some((line) => line.trim().startsWith("!"));
  const always = new Set([".dockerignore"]);
  if (dockerfile !== undefined) always.add(dockerfile);

  const files: string[] = [];
  async function walk(relativeDir: string): Promise<void> {
    const entries = await readdir(path.join(contextDir, relativeDir), { withFileTypes: true });
    for (const entry of entries) {
      const relative = toPosix(path.join(relativeDir, entry.name));
      const ignored = matcher.ignores(relative);
      if (entry.isDirectory()) {
        if (!ignored || hasExceptions) await walk(relative);
      } else if (!ignored || always.has(relative)) {
        if (entry.isFile() || entry.isSymbolicLink()) files.push(relative);
      }
    }
  }
  await walk("");
  for (const file of always) {
    if (!files.includes(file) && (await exists(path.join(contextDir, file)))) files.push(file);
  }
  return files.sort();
}

async function exists(file: string): Promise<boolean> {
  return readFile(file).then(
    () => true,
    () => false,
  );
}

/**
 * Packs `contextDir` as `docker build <contextDir> -f <dockerfilePath>` would: only the files
 * {@link listContextFiles} returns. A Dockerfile outside the context is added under a generated
 * name, as the docker CLI does, so the build sees exactly that file.
 */
export async function packBuildContext(
  contextDir: string,
  dockerfilePath: string,
): Promise<PackedContext> {
  const relativeDockerfile = toPosix(path.relative(contextDir, dockerfilePath));
  const outside = relativeDockerfile.startsWith("../") || path.isAbsolute(relativeDockerfile);
  const dockerfile = outside ? ".dockerfile.taskfleet-test" : relativeDockerfile;
  const files = await listContextFiles(contextDir, outside ? undefined : dockerfile);
  if (!outside && !files.includes(dockerfile)) {
    throw new Error(`no Dockerfile at ${dockerfilePath}`);
  }
  const outsideContent = outside ? await readFile(dockerfilePath) : undefined;
  const packed = tar.pack(contextDir, {
    // tar-fs consumes its entries array as a work queue.
    entries: [...files],
    finalize: !outside,
    finish(pack) {
      if (outsideContent === undefined) return;
      pack.entry({ name: dockerfile, mode: 0o644 }, outsideContent);
      pack.finalize();
    },
  });
  return { tar: packed, dockerfile, files: outside ? [...files, dockerfile].sort() : files };
}
