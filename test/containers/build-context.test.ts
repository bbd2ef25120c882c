import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { pipeline } from "node:stream/promises";
import { after, before, describe, it } from "node:test";
import * as tar from "tar-fs";
import { listContextFiles, packBuildContext } from "./build-context.js";

let root: string;

async function put(relative: string, content = relative): Promise<void> {
  const file = path.join(root, relative);
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, content);
}

/** Extracts a tar stream into `out` and returns the names of its entries. */
async function unpack(stream: NodeJS.ReadableStream, out: string): Promise<string[]> {
  const names: string[] = [];
  await pipeline(
    stream,
    tar.extract(out, {
      map(header) {
        names.push(header.name);
        return header;
      },
    }),
  );
  return names;
}

describe("build context packing", () => {
  before(async () => {
    root = await mkdtemp(path.join(tmpdir(), "taskfleet-context-"));
    await put(
      "svc/.dockerignore",
      [
        "node_modules",
        "dist",
        "**/*.test.ts",
        "*.md",
        "!README.md",
        "Dockerfile",
        ".dockerignore",
      ].join("\n"),
    );
    await put("svc/Dockerfile", "FROM node:22-slim\n");
    await put("svc/package.json", "{}");
    await put("svc/src/app.ts");
    await put("svc/src/app.test.ts");
    await put("svc/src/notes.md");
    await put("svc/README.md");
    await put("svc/CHANGES.md");
    await put("svc/node_modules/zod/index.js");
    await put("svc/dist/app.js");
    await symlink("app.ts", path.join(root, "svc/src/link.ts"));
    await put("other/Dockerfile.elsewhere", "FROM node:22-slim\nCOPY . .\n");
  });

  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("sends what .dockerignore keeps, with Docker's matching rules, and always the Dockerfile and .dockerignore", async () => {
    assert.deepEqual(await listContextFiles(path.join(root, "svc"), "Dockerfile"), [
      ".dockerignore",
      "Dockerfile",
      "README.md",
      "package.json",
      "src/app.ts",
      "src/link.ts",
      "src/notes.md",
    ]);
  });

  it("sends every file when there is no .dockerignore", async () => {
    const files = await listContextFiles(path.join(root, "other"));
    assert.deepEqual(files, ["Dockerfile.elsewhere"]);
  });

  it("re-includes a file below an ignored directory when a ! rule names it", async () => {
    await put("negated/.dockerignore", "dist\n!dist/keep.js\n");
    await put("negated/dist/keep.js");
    await put("negated/dist/drop.js");
    assert.deepEqual(await listContextFiles(path.join(root, "negated")), [
      ".dockerignore",
      "dist/keep.js",
    ]);
  });

  it("packs exactly the listed files into the tar the engine receives", async () => {
    const packed = await packBuildContext(
      path.join(root, "svc"),
      path.join(root, "svc/Dockerfile"),
    );
    assert.equal(packed.dockerfile, "Dockerfile");
    const out = path.join(root, "unpacked");
    const names = await unpack(packed.tar, out);
    assert.deepEqual(names.sort(), packed.files);
    assert.ok(packed.files.includes("src/app.ts"));
    assert.equal(await readFile(path.join(out, "src/app.ts"), "utf8"), "svc/src/app.ts");
  });

  it("adds a Dockerfile from outside the context under its own name, as the docker CLI does", async () => {
    const packed = await packBuildContext(
      path.join(root, "svc"),
      path.join(root, "other/Dockerfile.elsewhere"),
    );
    assert.notEqual(packed.dockerfile, "Dockerfile");
    const out = path.join(root, "unpacked-outside");
    assert.ok((await unpack(packed.tar, out)).includes(packed.dockerfile));
    assert.equal(
      await readFile(path.join(out, packed.dockerfile), "utf8"),
      "FROM node:22-slim\nCOPY . .\n",
    );
  });

  it("refuses a context that has no Dockerfile at the given path", async () => {
    await assert.rejects(
      packBuildContext(path.join(root, "svc"), path.join(root, "svc/Dockerfile.missing")),
      /no Dockerfile at .*Dockerfile\.missing/,
    );
  });
});
