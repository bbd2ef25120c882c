import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import { parseAllDocuments } from "yaml";
import {
  evaluateStack,
  listStacks,
  type StackEvaluation,
  stackConfig,
} from "../../infra/testing/harness.js";
import { renderStack } from "../../scripts/render/render.js";
import { renderAllStacks } from "../../scripts/render/stacks.js";

let baseline: Map<string, string>;

before(async () => {
  baseline = await renderAllStacks();
});

/** The lines of `after` that differ from `before`, as "file:line: before → after". */
function changedLines(before: Map<string, string>, after: Map<string, string>): string[] {
  assert.deepEqual([...after.keys()].sort(), [...before.keys()].sort());
  const changes: string[] = [];
  for (const [file, text] of before) {
    const was = text.split("\n");
    const now = (after.get(file) ?? "").split("\n");
    assert.equal(now.length, was.length, `${file} gained or lost lines`);
    was.forEach((line, i) => {
      if (now[i] !== line) changes.push(`${file}:${i + 1}: ${line.trim()} → ${now[i].trim()}`);
    });
  }
  return changes;
}

async function renderOne(stack: string, overrides: Record<string, string> = {}) {
  const evaluation = await evaluateStack(stack, overrides);
  return { evaluation, files: renderStack(evaluation, { ...stackConfig(stack), ...overrides }) };
}

describe("npm run render", () => {
  test("writes Kubernetes manifests and a cloud listing for every stack, each with its header", () => {
    const expected = listStacks().flatMap((s) => [`${s}/cloud.yaml`, `${s}/kubernetes.yaml`]);
    assert.deepEqual([...baseline.keys()].sort(), expected.sort());
    for (const [file, text] of baseline) {
      const stack = file.split("/")[0];
      assert.ok(
        text.startsWith(`# Rendered by npm run render from Pulumi.${stack}.yaml — do not edit\n`),
        `${file} lacks its header`,
      );
      const documents = parseAllDocuments(text);
      assert.ok(Array.isArray(documents) && documents.length > 0, `${file} holds no YAML document`);
      for (const document of documents) assert.deepEqual(document.errors, [], file);
    }
  });

  test("gives the same bytes when run twice", async () => {
    const again = await renderAllStacks();
    assert.deepEqual([...again.entries()], [...baseline.entries()]);
  });

  test("lists Kubernetes objects in apply order: namespace and network policies first, autoscaler last", () => {
    const kinds = [...(baseline.get("prod/kubernetes.yaml") ?? "").matchAll(/^kind: (\w+)$/gm)].map(
      (m) => m[1],
    );
    assert.deepEqual(kinds, [
      "Namespace",
      "Secret",
      "Secret",
      "ConfigMap",
      "NetworkPolicy",
      "NetworkPolicy",
      "NetworkPolicy",
      "NetworkPolicy",
      "Deployment",
      "Deployment",
      "Service",
      "Service",
      // prod's workers are sized by the queue: KEDA's objects, not an HPA of ours.
      "TriggerAuthentication",
      "ScaledObject",
      "PodDisruptionBudget",
    ]);
  });

  test("a changed stack setting changes exactly the lines that carry it", async () => {
    const current = Number(stackConfig("dev")["taskfleet:workerMaxReplicas"]);
    const { files } = await renderOne("dev", {
      "taskfleet:workerMaxReplicas": String(current + 3),
    });
    const before = new Map([...baseline].filter(([file]) => file.startsWith("dev/")));
    assert.deepEqual(changedLines(before, files), [
      `dev/kubernetes.yaml:${lineOf(before.get("dev/kubernetes.yaml"), `  maxReplicas: ${current}`)}: maxReplicas: ${current} → maxReplicas: ${current + 3}`,
    ]);
  });

  test("image digests appear only as placeholders, so a code change alone leaves the files as they are", () => {
    // Digests are deploy-time values: the rendered diff of a code change is empty, and the
    // Pulumi preview is where the new digest shows.
    for (const [file, text] of baseline) {
      assert.doesNotMatch(text, /sha256:[0-9a-f]{64}/, file);
      assert.doesNotMatch(text, /\b[0-9a-f]{12,}\b/, `${file} holds a digest-like hex string`);
    }
    assert.match(baseline.get("prod/kubernetes.yaml") ?? "", /master@<digest of master image>$/m);
  });

  test("names Pulumi gives objects at deploy time, and cloud addresses, are placeholders", () => {
    const prod = baseline.get("prod/kubernetes.yaml") ?? "";
    assert.match(prod, /^ {2}name: workers-<random suffix>$/m);
    assert.match(
      prod,
      /value: http:\/\/master-internal-<random suffix>\.taskfleet-prod\.svc\.cluster\.local:80$/m,
    );
    assert.match(baseline.get("prod/cloud.yaml") ?? "", /^ {2}masterUrl: http:\/\/<ip address>$/m);
    for (const [file, text] of baseline) {
      assert.doesNotMatch(text, /\b(?:192\.0\.2|198\.51\.100|203\.0\.113)\.\d+/, file);
      assert.doesNotMatch(text, /-[0-9a-f]{8}\b/, `${file} holds a generated name suffix`);
    }
  });
});

describe("secrets in the rendered output", () => {
  const configuredToken = "render-test-api-token-5d1e0c7b";

  test("a token set in the stack config appears in no file, though the program uses it", async () => {
    const { evaluation, files } = await renderOne("dev", { "taskfleet:apiToken": configuredToken });
    assert.match(JSON.stringify(evaluation.resources), new RegExp(configuredToken));
    for (const [file, text] of files) assert.ok(!text.includes(configuredToken), file);
    assert.match(files.get("dev/kubernetes.yaml") ?? "", /^ {2}apiToken: <secret>$/m);
  });

  test("generated tokens and the registry password are placeholders in every stack", () => {
    for (const [file, text] of baseline) {
      assert.doesNotMatch(text, /test-access-token|test-secret-/, file);
    }
    assert.match(baseline.get("prod/cloud.yaml") ?? "", /^ {8}password: <secret>$/m);
    assert.match(baseline.get("prod/cloud.yaml") ?? "", /^ {2}apiToken: <secret>$/m);
  });

  test("a secret that leaks into a plain value stops the render", async () => {
    const { evaluation } = await renderOne("dev", { "taskfleet:apiToken": configuredToken });
    const leaky: StackEvaluation = structuredClone(evaluation);
    const master = leaky.resources.find(
      (r) => r.type === "kubernetes:apps/v1:Deployment" && r.name === "master",
    );
    assert.ok(master, "dev has no master Deployment");
    const container = (
      master.inputs as { spec: { template: { spec: { containers: { env: unknown[] }[] } } } }
    ).spec.template.spec.containers[0];
    container.env.push({ name: "DEBUG_TOKEN", value: configuredToken });
    assert.throws(
      () => renderStack(leaky, { ...stackConfig("dev"), "taskfleet:apiToken": configuredToken }),
      /rendering dev\/kubernetes\.yaml would write a secret value \(line \d+\); refusing/,
    );
  });
});

function lineOf(text: string | undefined, line: string): number {
  const index = (text ?? "").split("\n").indexOf(line);
  assert.notEqual(index, -1, `no line ${JSON.stringify(line)}`);
  return index + 1;
}
