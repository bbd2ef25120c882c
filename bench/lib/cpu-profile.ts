import { readFileSync } from "node:fs";
import * as path from "node:path";

/** The parts of a V8 `.cpuprofile` (written by `node --cpu-prof`) that a summary needs. */
interface CpuProfile {
  nodes: {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
    hitCount?: number;
  }[];
  samples?: number[];
  timeDeltas?: number[];
}

export interface HotSpot {
  /** `function (file:line)`, with paths shortened to what follows node_modules or the repo. */
  name: string;
  /** Share of all samples spent in this function itself (not its callees), in percent. */
  selfPercent: number;
}

function shorten(url: string, repoRoot: string): string {
  const file = url.replace(/^file:\/\//, "");
  const inModules = file.lastIndexOf("node_modules/");
  if (inModules >= 0) return file.slice(inModules + "node_modules/".length);
  return file.startsWith(repoRoot) ? path.relative(repoRoot, file) : file || "(native)";
}

/**
 * The functions with the most self time over one or more profiles (of the same program: their
 * samples are added up), merged by name and location. `(idle)` is time the thread waited for I/O.
 */
export function hotSpots(files: readonly string[], repoRoot: string, top = 20): HotSpot[] {
  const selfHits = new Map<string, number>();
  let total = 0;
  for (const file of files) total += addSamples(file, repoRoot, selfHits);
  return [...selfHits.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([name, hits]) => ({ name, selfPercent: total === 0 ? 0 : (100 * hits) / total }));
}

/** Adds a profile's self time per function into `selfHits`; returns the profile's total. */
function addSamples(file: string, repoRoot: string, selfHits: Map<string, number>): number {
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  let total = 0;
  // Weighted by sample interval when present, so a stalled sampler does not skew shares.
  const samples = profile.samples ?? [];
  if (samples.length > 0) {
    samples.forEach((id, i) => {
      const node = byId.get(id);
      if (node === undefined) return;
      const weight = profile.timeDeltas?.[i] ?? 1;
      const frame = node.callFrame;
      const key = `${frame.functionName || "(anonymous)"} (${shorten(frame.url, repoRoot)}:${frame.lineNumber + 1})`;
      selfHits.set(key, (selfHits.get(key) ?? 0) + weight);
      total += weight;
    });
  } else {
    for (const node of profile.nodes) {
      const frame = node.callFrame;
      const key = `${frame.functionName || "(anonymous)"} (${shorten(frame.url, repoRoot)}:${frame.lineNumber + 1})`;
      selfHits.set(key, (selfHits.get(key) ?? 0) + (node.hitCount ?? 0));
      total += node.hitCount ?? 0;
    }
  }
  return total;
}
