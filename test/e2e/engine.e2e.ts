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
import { kedaCrdDirectory } from "../../infra/testing/keda-crds";
import { clusterMode, type E2eEnvironment, type PreviewStep, setUp } from "./engine";

const Deployment = "kubernetes:apps/v1:Deployment";
const StatefulSet = "kubernetes:apps/v1:StatefulSet";
const Secret = "kubernetes:core/v1:Secret";
const Hpa = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler";
const ScaledObject = "kubernetes:keda.sh/v1alpha1:ScaledObject";
const TriggerAuthentication = "kubernetes:keda.sh/v1alpha1:TriggerAuthentication";
const NetworkPolicy = "kubernetes:networking.k8s.io/v1:NetworkPolicy";

/** The stack's own settings: small, and distinct from the defaults so a change is visible. */
const workerMaxReplicas = 3;
/** Two masters (an existing cluster's default is one): a rolling update and a budget to hold. */
const masterReplicas = 2;

/**
 * The toolchain's cluster has no volume provisioner: a class whose volumes are made by hand, and
 * one volume for Redis's claim. kwok mounts nothing, so the path is never touched.
 */
const staticStorageClass = "taskfleet-e2e-static";
const staticStorage = [
  {
    apiVersion: "storage.k8s.io/v1",
    kind: "StorageClass",
    metadata: { name: staticStorageClass },
    provisioner: "kubernetes.io/no-provisioner",
    volumeBindingMode: "Immediate",
  },
  {
    apiVersion: "v1",
    kind: "PersistentVolume",
    metadata: { name: "taskfleet-e2e-redis" },
    spec: {
      storageClassName: staticStorageClass,
      capacity: { storage: "1Gi" },
      accessModes: ["ReadWriteOnce"],
      persistentVolumeReclaimPolicy: "Retain",
      hostPath: { path: "/var/lib/taskfleet-e2e/redis" },
    },
  },
];

/**
 * A secret for `pulumi config set --secret KEY VALUE`: long, no character redis.conf splits, and
 * never starting with "-", which the CLI would read as a flag (base64url did, one run in 64).
 */
function configSecret(): string {
  return randomBytes(24).toString("hex");
}

/** `op type::name`, sorted: what a reviewer reads in a preview. */
function summary(steps: PreviewStep[]): string[] {
  return steps.map((step) => `${step.op} ${step.type}::${step.name}`).sort();
}

describe("the real engine against a real API server", () => {
  let e2e: E2eEnvironment;
  let failed = false;

  before(() => {
    const settings = {
      "taskfleet:workerMaxReplicas": String(workerMaxReplicas),
      "taskfleet:masterReplicas": String(masterReplicas),
    };
    if (clusterMode === "kind") {
      // kind's default StorageClass provisions Redis's volume.
      e2e = setUp(settings);
      return;
    }
    // The toolchain has no image, random or command provider (see toolchainPluginPackages): the
    // images are given (kwok runs no containers, so they need not exist), the tokens and Redis's
    // password are set, and Redis's volume is made by hand.
    e2e = setUp(
      {
        ...settings,
        "taskfleet:masterImage": "taskfleet-e2e/master:1",
        "taskfleet:workerImage": "taskfleet-e2e/worker:1",
        "taskfleet:redisStorageClass": staticStorageClass,
      },
      {
        "taskfleet:apiToken": configSecret(),
        "taskfleet:workerToken": configSecret(),
        "taskfleet:redisPassword": configSecret(),
      },
    );
    e2e.kubectl(["apply", "-f", "-"], {
      input: JSON.stringify({ apiVersion: "v1", kind: "List", items: staticStorage }),
    });
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

  /** What a preview would do to Kubernetes objects. */
  const kubernetesChanges = () =>
    e2e.previewChanges().filter((s) => s.type.startsWith("kubernetes:"));
  const json = (args: string[]) => JSON.parse(e2e.kubectl([...args, "-o", "json"]).stdout);
  /** The stack's Deployment of one component (`master`, `worker`), as the cluster has it. */
  const deploymentOf = (component: string) =>
    json([
      "-n",
      e2e.namespace,
      "get",
      "deployments",
      "-l",
      `app.kubernetes.io/component=${component}`,
    ]).items[0];

  step("pulumi preview lists every resource of the stack, all to be created", () => {
    const steps = e2e.previewChanges();
    assert.ok(
      steps.every((s) => s.op === "create"),
      summary(steps).join("\n"),
    );
    const types = summary(steps).map((line) => line.replace(/^create /, "").replace(/::.*/, ""));
    for (const [type, count] of [
      ["kubernetes:core/v1:Namespace", 1],
      // The tokens, and Redis's password.
      [Secret, 2],
      // redis.conf.
      ["kubernetes:core/v1:ConfigMap", 1],
      [Deployment, 2],
      [StatefulSet, 1],
      // The master's two, and Redis's.
      ["kubernetes:core/v1:Service", 3],
      [Hpa, 1],
      // Two masters: one budget, for them.
      ["kubernetes:policy/v1:PodDisruptionBudget", 1],
      // Default deny; master in and out; workers out; Redis in.
      ["kubernetes:networking.k8s.io/v1:NetworkPolicy", 5],
      ["pulumi:providers:kubernetes", 1],
    ] as const) {
      assert.equal(
        types.filter((t) => t === type).length,
        count,
        `${type} in\n${types.join("\n")}`,
      );
    }
  });

  step(
    "pulumi up creates it: Deployments Available, Redis Ready on its volume, pods admitted under restricted",
    () => {
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
      e2e.kubectl([
        "-n",
        e2e.namespace,
        "wait",
        "statefulset",
        "--all",
        "--for=jsonpath={.status.readyReplicas}=1",
        "--timeout=180s",
      ]);
      const [claim, ...otherClaims] = json(["-n", e2e.namespace, "get", "pvc"]).items;
      assert.deepEqual(otherClaims, []);
      assert.equal(claim.status.phase, "Bound", JSON.stringify(claim.status));
      if (e2e.mode === "toolchain") {
        assert.equal(claim.spec.storageClassName, staticStorageClass);
        assert.equal(claim.spec.volumeName, "taskfleet-e2e-redis");
      }
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
      // Two masters, at least one worker, Redis.
      assert.ok(pods.length >= masterReplicas + 2, `${pods.length} pods`);
      for (const pod of pods) {
        assert.equal(pod.status.phase, "Running", pod.metadata.name);
      }
    },
  );

  step(
    "the masters: the configured replicas, rolled one at a time, under a budget that lets one go",
    () => {
      const master = deploymentOf("master");
      assert.equal(master.spec.replicas, masterReplicas);
      assert.equal(master.status.readyReplicas, masterReplicas);
      assert.equal(master.spec.strategy.type, "RollingUpdate");
      assert.deepEqual(master.spec.strategy.rollingUpdate, { maxSurge: 1, maxUnavailable: 0 });
      const env = master.spec.template.spec.containers[0].env as {
        name: string;
        value?: string;
      }[];
      assert.equal(env.find((e) => e.name === "STORE")?.value, "redis");
      assert.match(
        env.find((e) => e.name === "REDIS_URL")?.value ?? "",
        new RegExp(`^redis://redis-[a-z0-9]+\\.${e2e.namespace}\\.svc\\.cluster\\.local:6379/0$`),
      );
      // The disruption controller's own reckoning: with both masters Ready, one may go.
      e2e.kubectl([
        "-n",
        e2e.namespace,
        "wait",
        "pdb",
        "--all",
        "--for=jsonpath={.status.disruptionsAllowed}=1",
        "--timeout=60s",
      ]);
      const [pdb, ...others] = json(["-n", e2e.namespace, "get", "pdb"]).items;
      assert.deepEqual(others, []);
      assert.equal(pdb.spec.maxUnavailable, 1);
      assert.equal(pdb.status.expectedPods, masterReplicas);
    },
  );

  step("Redis gets its password only by secretKeyRef, and only the masters may reach it", () => {
    const [redis] = json(["-n", e2e.namespace, "get", "statefulsets"]).items;
    const container = redis.spec.template.spec.containers[0];
    for (const entry of container.env as { name: string; value?: string }[]) {
      assert.equal(entry.value, undefined, `${entry.name} is a plain value`);
    }
    assert.equal(redis.spec.template.spec.securityContext.runAsUser, 999);
    const policies = json(["-n", e2e.namespace, "get", "networkpolicies"]).items;
    const ingress = policies.filter(
      (p: { spec: { podSelector: { matchLabels?: Record<string, string> } } }) =>
        p.spec.podSelector.matchLabels?.["app.kubernetes.io/name"] === "taskfleet-redis",
    );
    assert.equal(ingress.length, 1);
    assert.deepEqual(
      ingress[0].spec.ingress[0].from[0].podSelector.matchLabels["app.kubernetes.io/name"],
      "taskfleet-master",
    );
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
      ["ClusterIP internal", "ClusterIP redis", "LoadBalancer http"],
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
    // The tokens' Secret and Redis's password's.
    const secrets = json([
      "-n",
      e2e.namespace,
      "get",
      "secrets",
      "-l",
      "app.kubernetes.io/part-of=taskfleet",
    ]).items as { data: Record<string, string> }[];
    assert.equal(secrets.length, 2);
    const values = secrets.flatMap((secret) =>
      Object.values(secret.data).map((v) => Buffer.from(v, "base64").toString("utf8")),
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

  step(
    "a new Redis password restarts Redis and rolls the masters onto it, and changes nothing else",
    () => {
      const secretName = (component: string) => {
        const items = json([
          "-n",
          e2e.namespace,
          "get",
          component === "redis" ? "statefulsets" : "deployments",
          "-l",
          `app.kubernetes.io/component=${component}`,
        ]).items;
        const env = items[0].spec.template.spec.containers[0].env as {
          name: string;
          valueFrom?: { secretKeyRef?: { name: string } };
        }[];
        return env.find((e) => e.name === "REDIS_PASSWORD")?.valueFrom?.secretKeyRef?.name;
      };
      const before = secretName("redis");
      assert.equal(secretName("master"), before);
      e2e.pulumi([
        "config",
        "set",
        "--secret",
        "taskfleet:redisPassword",
        configSecret(),
        "--stack",
        e2e.stack,
      ]);
      const changed = new Set(kubernetesChanges().map((s) => `${s.type}::${s.name}`));
      assert.deepEqual([...changed].sort(), [
        `${Deployment}::master`,
        `${StatefulSet}::redis`,
        `${Secret}::redis-password`,
      ]);
      e2e.pulumi(["up", "--yes", "--skip-preview", "--stack", e2e.stack]);
      for (const kind of ["statefulset", "deployment"]) {
        e2e.kubectl(["-n", e2e.namespace, "rollout", "status", kind, "--timeout=180s"]);
      }
      const after = secretName("redis");
      assert.notEqual(after, before, "the password's Secret has a new name");
      assert.equal(secretName("master"), after, "the masters read the new Secret");
      const gone = e2e.kubectl(["-n", e2e.namespace, "get", "secret", before as string], {
        allowFailure: true,
      });
      assert.notEqual(gone.status, 0, "the old Secret is deleted");
    },
  );

  step(
    "switching to the queue autoscaler: KEDA's CRDs accept the ScaledObject, which replaces the HPA, from zero pods",
    async () => {
      // KEDA itself is "present": its CRDs, from the release the program pins, are what the API
      // server checks the objects against (schema and CEL rules); no operator acts on them here.
      e2e.kubectl(["apply", "--server-side", "-f", kedaCrdDirectory()]);
      // Polled, not `kubectl wait --for=condition=Established`: that fails at once on a CRD whose
      // status has no conditions yet, which is how a CRD looks for a moment after it is applied.
      for (const crd of ["scaledobjects.keda.sh", "triggerauthentications.keda.sh"]) {
        const established = () =>
          json(["get", "crd", crd]).status?.conditions?.some(
            (c: { type: string; status: string }) =>
              c.type === "Established" && c.status === "True",
          ) === true;
        const deadline = Date.now() + 60_000;
        while (!established()) {
          assert.ok(Date.now() < deadline, `the CRD ${crd} was not Established within 60 s`);
          await new Promise((resolve) => setTimeout(resolve, 250));
        }
      }
      for (const [key, value] of [
        ["taskfleet:autoscaler", "queue"],
        ["taskfleet:keda", "present"],
        ["taskfleet:workerMinReplicas", "0"],
        ["taskfleet:workerPollingSeconds", "5"],
      ]) {
        e2e.pulumi(["config", "set", key as string, value as string, "--stack", e2e.stack]);
      }
      if (e2e.mode === "toolchain") {
        e2e.pulumi([
          "config",
          "set",
          "--secret",
          "taskfleet:scalerToken",
          configSecret(),
          "--stack",
          e2e.stack,
        ]);
      }
      const changes = new Set(kubernetesChanges().map((s) => `${s.op} ${s.type}::${s.name}`));
      for (const expected of [
        `create ${ScaledObject}::workers`,
        `create ${TriggerAuthentication}::workers-scaler`,
        `delete ${Hpa}::workers`,
        // The masters get SCALER_TOKEN, and KEDA's namespace their internal port.
        `update ${Deployment}::master`,
        `update ${NetworkPolicy}::network-master-ingress`,
      ]) {
        assert.ok(changes.has(expected), `${expected} in\n${[...changes].join("\n")}`);
      }
      e2e.pulumi(["up", "--yes", "--skip-preview", "--stack", e2e.stack]);
      e2e.kubectl(["-n", e2e.namespace, "rollout", "status", "deployment", "--timeout=180s"]);

      assert.deepEqual(json(["-n", e2e.namespace, "get", "hpa"]).items, [], "no HPA of ours");
      const [scaled, ...others] = json(["-n", e2e.namespace, "get", "scaledobjects"]).items;
      assert.deepEqual(others, []);
      assert.equal(scaled.spec.minReplicaCount, 0);
      assert.equal(scaled.spec.maxReplicaCount, workerMaxReplicas + 2);
      assert.equal(scaled.spec.pollingInterval, 5);
      const workers = deploymentOf("worker");
      assert.equal(scaled.spec.scaleTargetRef.name, workers.metadata.name);
      const [backlog] = scaled.spec.triggers;
      assert.match(
        backlog.metadata.url,
        new RegExp(
          `^http://master-internal-[a-z0-9]+\\.${e2e.namespace}\\.svc\\.cluster\\.local:80/scaler/v1/backlog$`,
        ),
      );
      const [auth] = json(["-n", e2e.namespace, "get", "triggerauthentications"]).items;
      assert.equal(backlog.authenticationRef.name, auth.metadata.name);
      const [ref] = auth.spec.secretTargetRef;
      const secret = json(["-n", e2e.namespace, "get", "secret", ref.name]);
      assert.ok(secret.data[ref.key], `the Secret ${ref.name} holds ${ref.key}`);
      const master = deploymentOf("master");
      const scalerToken = master.spec.template.spec.containers[0].env.find(
        (e: { name: string }) => e.name === "SCALER_TOKEN",
      );
      assert.deepEqual(scalerToken?.valueFrom?.secretKeyRef, { name: ref.name, key: ref.key });

      // The API server holds the ScaledObject to KEDA's rules: one that breaks them is refused.
      const broken = structuredClone(scaled);
      for (const field of ["uid", "resourceVersion", "creationTimestamp", "managedFields"]) {
        delete broken.metadata[field];
      }
      broken.metadata.name = "taskfleet-e2e-broken";
      broken.spec.minReplicaCount = 9;
      const refused = e2e.kubectl(["-n", e2e.namespace, "apply", "--dry-run=server", "-f", "-"], {
        allowFailure: true,
        input: JSON.stringify(broken),
      });
      assert.notEqual(refused.status, 0);
      assert.match(refused.stderr, /minReplicaCount must be less than or equal to maxReplicaCount/);
    },
  );

  step("pulumi destroy leaves nothing of the stack in the cluster", () => {
    e2e.pulumi(["destroy", "--yes", "--skip-preview", "--stack", e2e.stack]);
    const namespace = e2e.kubectl(["get", "namespace", e2e.namespace], { allowFailure: true });
    assert.notEqual(namespace.status, 0, "the namespace is gone");
    const left = json([
      "get",
      "all,secrets,configmaps,pvc,pdb,networkpolicies,hpa,scaledobjects,triggerauthentications",
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
