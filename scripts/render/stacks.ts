import * as fs from "node:fs";
import * as path from "node:path";
import { repoRoot } from "../../infra/service-builds";
import { evaluateStack, listStacks, stackConfig } from "../../infra/testing/harness";
import { type RenderedFiles, renderStack } from "./render";

/** The committed output folder: one sub-folder per stack. */
export const renderedDir = path.join(repoRoot, "rendered");

/** Config values to set on top of a stack's files, by stack: what tests use to simulate an edit. */
export type StackOverrides = Record<string, Record<string, string>>;

/** Renders every stack of the repository, one after another (evaluations cannot overlap). */
export async function renderAllStacks(overrides: StackOverrides = {}): Promise<RenderedFiles> {
  const files: RenderedFiles = new Map();
  for (const stack of listStacks()) {
    const stackOverrides = overrides[stack] ?? {};
    const evaluation = await evaluateStack(stack, stackOverrides);
    const rendered = renderStack(evaluation, { ...stackConfig(stack), ...stackOverrides });
    for (const [file, text] of rendered) files.set(file, text);
  }
  return files;
}

/** What is on disk under `dir`, in the same shape as a render. */
export function readRendered(dir: string = renderedDir): RenderedFiles {
  const files: RenderedFiles = new Map();
  if (!fs.existsSync(dir)) return files;
  for (const entry of fs.readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const full = path.join(entry.parentPath, entry.name);
    files.set(path.relative(dir, full).split(path.sep).join("/"), fs.readFileSync(full, "utf8"));
  }
  return files;
}

/**
 * Replaces `dir`'s contents by `files`: files of stacks that no longer exist go too, so the
 * folder is exactly what a render gives.
 */
export function writeRendered(files: RenderedFiles, dir: string = renderedDir): void {
  for (const existing of readRendered(dir).keys()) {
    if (!files.has(existing)) fs.rmSync(path.join(dir, existing));
  }
  for (const [file, text] of files) {
    const target = path.join(dir, file);
    fs.mkdirSync(path.dirname(target), { recursive: true });
    fs.writeFileSync(target, text);
  }
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const sub = path.join(dir, entry.name);
    if (entry.isDirectory() && fs.readdirSync(sub).length === 0) fs.rmdirSync(sub);
  }
}

/**
 * Where `actual` first differs from `expected` (a missing, extra or changed file, with the first
 * changed line), or undefined when they are the same bytes.
 */
export function firstDifference(
  expected: RenderedFiles,
  actual: RenderedFiles,
): string | undefined {
  const names = [...new Set([...expected.keys(), ...actual.keys()])].sort();
  for (const name of names) {
    const want = expected.get(name);
    const have = actual.get(name);
    if (want === have) continue;
    if (have === undefined) return `rendered/${name} is missing`;
    if (want === undefined) return `rendered/${name} belongs to no stack`;
    const wantLines = want.split("\n");
    const haveLines = have.split("\n");
    const line = wantLines.findIndex((text, i) => text !== haveLines[i]);
    const at = line === -1 ? wantLines.length : line;
    return (
      `rendered/${name}:${at + 1} differs\n` +
      `  committed: ${JSON.stringify(haveLines[at] ?? "<end of file>")}\n` +
      `  rendered:  ${JSON.stringify(wantLines[at] ?? "<end of file>")}`
    );
  }
  return undefined;
}
