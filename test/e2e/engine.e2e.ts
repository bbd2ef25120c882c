/**
 * `npm run test:e2e`: what a user does, done by the real Pulumi engine against a real Kubernetes
 * API server: preview → up → up again (no changes) → a source change → a config change → destroy.
 * Each step depends on the one before; after a failure the rest are skipped.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { appendFileSync } from "node:fs";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import { clusterMode, type E2eEnvironment, type PreviewStep, setUp } from "./engine";

const Deployment = "kubernetes:apps/v1:Deployment";
const Hpa = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler";

/** The stack's own settings: small, and distinct from the defaults so a change is visible. */
const workerMaxReplicas = 3;

/** `op type::name`, sorted: what a reviewer reads in a preview. */
function summary(steps: PreviewStep[]): string[] {
  return steps.map((step) => `${step.op} ${step.type}::${step.name}`).sort();
}

describe("the real engine against a real API server", () => {
  let e2e: E2eEnvironment;
  let failed = false;

  before(() => {
    const settings = { "taskfleet:workerMaxReplicas": String(workerMaxReplicas) };
    if (clusterMode === "kind") {
      e2e = setUp(settings);
      return;
    }
    // The toolchain has no image, random or command provider (see toolchainPluginPackages): the
    // images are given (kwok runs no containers, so they need not exist) and the tokens are set.
    e2e = setUp(
      {
        ...settings,
        "taskfleet:masterImage": "taskfleet-e2e/master:1",
        "taskfleet:workerImage": "taskfleet-e2e/worker:1",
      },
      {
        "taskfleet:apiToken": randomBytes(24).toString("base64url"),
        "taskfleet:workerToken": randomBytes(24).toString("base64url"),
      },
    );
  });
  after(() => e2e?.tearDown());

  /** A step of the sequence: skipped once an earlier one failed. */
  function step(name: string, body: () => void | Promise<void>) {
    it(name, async (t) => {
      if (failed) return t.skip("an earlier step failed");
      try {
        await body();
      } catch (error) {
        failed = true;
        throw error;
      }
    });
  }

  const json = (args: string[]) => JSON.parse(e2e.kubectl([...args, "-o", "json"]).stdout);

  step("pulumi preview lists every resource of the stack, all to be created", () => {
    const steps = e2e.previewChanges();
    assert.ok(
      steps.every((s) => s.op === "create"),
      summary(steps).join("\n"),
    );
    const types = summary(steps).map((line) => line.replace(/^create /, "").replace(/::.*/, ""));
    for (const [type, count] of [
      ["kubernetes:core/v1:Namespace", 1],
      ["kubernetes:core/v1:Secret", 1],
      [Deployment, 2],
      ["kubernetes:core/v1:Service", 2],
      [Hpa, 1],
      ["pulumi:providers:kubernetes", 1],
    ] as const) {
      assert.equal(
        types.filter((t) => t === type).length,
        count,
        `${type} in\n${types.join("\n")}`,
      );
    }
  });

  step("pulumi up creates it: Deployments Available, pods admitted under restricted", () => {
    e2e.pulumi(["up", "--yes", "--skip-preview", "--stack", e2e.stack]);
    e2e.kubectl([
      "-n",
      e2e.namespace,
      "wait",
      "deployment",
      "--all",
      "--for=condition=Available",
      "--timeout=180s",
    ]);
    const deployments = json(["-n", e2e.namespace, "get", "deployments"]).items;
    assert.deepEqual(
      deployments
        .map(
          (d: { metadata: { labels: Record<string, string> } }) =>
            d.metadata.labels["app.kubernetes.io/component"],
        )
        .sort(),
      ["master", "worker"],
    );
    const namespace = json(["get", "namespace", e2e.namespace]);
    assert.equal(namespace.metadata.labels["pod-security.kubernetes.io/enforce"], "restricted");
    const pods = json(["-n", e2e.namespace, "get", "pods"]).items;
    assert.ok(pods.length >= 2, `${pods.length} pods`);
    for (const pod of pods) {
      assert.equal(pod.status.phase, "Running", pod.metadata.name);
    }
  });

  step("the namespace enforces restricted: a privileged pod is refused by the API server", () => {
    const refused = e2e.kubectl(["-n", e2e.namespace, "apply", "--dry-run=server", "-f", "-"], {
      allowFailure: true,
      input: JSON.stringify({
        apiVersion: "v1",
        kind: "Pod",
        metadata: { name: "not-restricted" },
        spec: {
          containers: [{ name: "c", image: "busybox", securityContext: { privileged: true } }],
        },
      }),
    });
    assert.notEqual(refused.status, 0);
    assert.match(refused.stderr, /violates PodSecurity "restricted/);
  });

  step("the autoscaler is accepted and owns the workers; the load balancer has an address", () => {
    const [hpa, ...others] = json(["-n", e2e.namespace, "get", "hpa"]).items;
    assert.deepEqual(others, []);
    assert.equal(hpa.spec.maxReplicas, workerMaxReplicas);
    assert.equal(hpa.spec.scaleTargetRef.kind, "Deployment");
    const services = json(["-n", e2e.namespace, "get", "services"]).items;
    // The load balancer takes the client API's port only; the worker API stays in the cluster.
    assert.deepEqual(
      services
        .map((s: { spec: { type: string; ports: { targetPort: string }[] } }) =>
          [s.spec.type, ...s.spec.ports.map((p) => p.targetPort)].join(" "),
        )
        .sort(),
      ["ClusterIP internal", "LoadBalancer http"],
    );
    const service = services.find(
      (s: { spec: { type: string } }) => s.spec.type === "LoadBalancer",
    );
    if (e2e.mode === "toolchain") {
      // kwok's stage plays the cloud's load balancer; kind has none without cloud-provider-kind.
      assert.ok(service.status.loadBalancer.ingress?.[0]?.ip, JSON.stringify(service.status));
    }
  });

  step("the stack outputs name what runs, and no secret is in the state in plain text", () => {
    const outputs = JSON.parse(
      e2e.pulumi(["stack", "output", "--json", "--stack", e2e.stack]).stdout,
    );
    assert.equal(outputs.namespace, e2e.namespace);
    assert.equal(outputs.apiToken, "[secret]");
    const deployments = json(["-n", e2e.namespace, "get", "deployments"]).items;
    const images = deployments
      .map(
        (d: { spec: { template: { spec: { containers: { image: string }[] } } } }) =>
          d.spec.template.spec.containers[0]?.image,
      )
      .sort();
    assert.deepEqual(images, [outputs.masterImage, outputs.workerImage].sort());

    const apiToken = JSON.parse(
      e2e.pulumi(["stack", "output", "apiToken", "--show-secrets", "--json", "--stack", e2e.stack])
        .stdout,
    ) as string;
    const [secret] = json(["-n", e2e.namespace, "get", "secrets"]).items;
    const values = Object.values(secret.data as Record<string, string>).map((v) =>
      Buffer.from(v, "base64").toString("utf8"),
    );
    assert.ok(values.includes(apiToken));
    const state = e2e.pulumi(["stack", "export", "--stack", e2e.stack]).stdout;
    for (const value of values) {
      assert.ok(value.length >= 16, "a token is long enough to be found unambiguously");
      assert.ok(!state.includes(value), "a token is in the exported state in plain text");
      assert.ok(
        !state.includes(Buffer.from(value).toString("base64")),
        "a token is in the state, base64-encoded",
      );
    }
  });

  step("pulumi up again changes nothing", () => {
    e2e.pulumi(["up", "--yes", "--skip-preview", "--expect-no-changes", "--stack", e2e.stack]);
  });

  step(
    "a new worker image (kind: a change to the worker's source) updates exactly the workers' Deployment",
    () => {
      if (e2e.mode === "kind") {
        appendFileSync(
          path.join(e2e.projectDir, "services", "worker", "src", "main.ts"),
          "\n// changed by the end-to-end test\n",
        );
      } else {
        e2e.pulumi([
          "config",
          "set",
          "taskfleet:workerImage",
          "taskfleet-e2e/worker:2",
          "--stack",
          e2e.stack,
        ]);
      }
      const changes = summary(e2e.previewChanges()).filter(
        (line) => !line.includes("pulumi:pulumi:Stack"),
      );
      const kubernetes = changes.filter((line) => line.includes(" kubernetes:"));
      assert.deepEqual(kubernetes, [`update ${Deployment}::workers`], changes.join("\n"));
      if (e2e.mode === "kind") {
        // The worker's image is rebuilt from the changed source.
        assert.ok(
          changes.some((line) => /images-worker/.test(line)),
          changes.join("\n"),
        );
      }
      assert.ok(!changes.some((line) => /images-master/.test(line)), changes.join("\n"));

      const before = json(["-n", e2e.namespace, "get", "deployments"]).items;
      e2e.pulumi(["up", "--yes", "--skip-preview", "--stack", e2e.stack]);
      e2e.kubectl(["-n", e2e.namespace, "rollout", "status", "deployment", "--timeout=180s"]);
      const after = json(["-n", e2e.namespace, "get", "deployments"]).items;
      const image = (
        items: {
          metadata: { labels: Record<string, string> };
          spec: { template: { spec: { containers: { image: string }[] } } };
        }[],
        component: string,
      ) =>
        items.find((d) => d.metadata.labels["app.kubernetes.io/component"] === component)?.spec
          .template.spec.containers[0]?.image;
      assert.notEqual(image(after, "worker"), image(before, "worker"));
      assert.equal(image(after, "master"), image(before, "master"));
    },
  );

  step("a change to one config key updates only what depends on it", () => {
    e2e.pulumi([
      "config",
      "set",
      "taskfleet:workerMaxReplicas",
      String(workerMaxReplicas + 2),
      "--stack",
      e2e.stack,
    ]);
    const changes = summary(e2e.previewChanges()).filter(
      (line) => !line.includes("pulumi:pulumi:Stack"),
    );
    assert.deepEqual(changes, [`update ${Hpa}::workers`]);
    e2e.pulumi(["up", "--yes", "--skip-preview", "--stack", e2e.stack]);
    const [hpa] = json(["-n", e2e.namespace, "get", "hpa"]).items;
    assert.equal(hpa.spec.maxReplicas, workerMaxReplicas + 2);
  });

  step("pulumi destroy leaves nothing of the stack in the cluster", () => {
    e2e.pulumi(["destroy", "--yes", "--skip-preview", "--stack", e2e.stack]);
    const namespace = e2e.kubectl(["get", "namespace", e2e.namespace], { allowFailure: true });
    assert.notEqual(namespace.status, 0, "the namespace is gone");
    const left = json([
      "get",
      "all,secrets,hpa",
      "--all-namespaces",
      "-l",
      "app.kubernetes.io/part-of=taskfleet",
    ]).items;
    assert.deepEqual(
      left.map((o: { kind: string; metadata: { name: string } }) => `${o.kind}/${o.metadata.name}`),
      [],
    );
    const state = JSON.parse(e2e.pulumi(["stack", "export", "--stack", e2e.stack]).stdout);
    assert.deepEqual(state.deployment.resources ?? [], []);
  });
});
