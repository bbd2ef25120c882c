import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { before, describe, it } from "node:test";
import { masterEnv } from "@taskfleet/protocol/master-env";
import { workerEnv } from "@taskfleet/protocol/worker-env";
import { loadConfig as loadMasterConfig } from "../../services/master/src/config";
import { loadConfig as loadWorkerConfig } from "../../services/worker/src/config";
import { kindCreateScript } from "../cluster/kind";
import {
  clusterDefaults,
  parseMemory,
  redisMaxmemoryBytes,
  type TaskfleetConfig,
  validateConfig,
} from "../config";
import { kedaVersion } from "../keda";
import {
  evaluateStack,
  isSecretOutput,
  listStacks,
  type StackEvaluation,
  stackConfig,
} from "../testing/harness";
import {
  envOf,
  findResource,
  inputs,
  type Json,
  kubernetesModels,
  kubernetesObjects,
  onlyContainer,
  plainEnv,
  podSpec,
  resourcesOfType,
} from "../testing/resources";

const Deployment = "kubernetes:apps/v1:Deployment";
const StatefulSet = "kubernetes:apps/v1:StatefulSet";
const ConfigMap = "kubernetes:core/v1:ConfigMap";
const NetworkPolicy = "kubernetes:networking.k8s.io/v1:NetworkPolicy";
const Instance = "gcp:redis/instance:Instance";
const Service = "kubernetes:core/v1:Service";
const Secret = "kubernetes:core/v1:Secret";
const Hpa = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler";
const ScaledObject = "kubernetes:keda.sh/v1alpha1:ScaledObject";
const TriggerAuthentication = "kubernetes:keda.sh/v1alpha1:TriggerAuthentication";
const HelmRelease = "kubernetes:helm.sh/v3:Release";
const Pdb = "kubernetes:policy/v1:PodDisruptionBudget";
const Image = "docker:index/image:Image";

/** What the stack file asks for, through the same validation the program uses. */
function expectedConfig(stack: string): TaskfleetConfig {
  return validateConfig({ stack, values: stackConfig(stack) });
}

function plainOutput(evaluation: StackEvaluation, key: string): unknown {
  const value = evaluation.outputs[key];
  assert.ok(!isSecretOutput(value), `output ${key} should not be secret`);
  return value;
}

const stacks = listStacks();

it("finds a stack file for each of the shipped stacks", () => {
  for (const stack of ["dev", "prod"]) assert.ok(stacks.includes(stack), `Pulumi.${stack}.yaml`);
});

for (const stack of stacks) {
  describe(`stack ${stack}`, () => {
    const config = expectedConfig(stack);
    const isGke = config.cluster === "gke";
    let evaluation: StackEvaluation;
    let master: Json;
    let workers: Json;
    /** The in-cluster Redis's StatefulSet; undefined with Memorystore. */
    let redis: Json;
    /** Every workload's pod template owner: the Deployments, and Redis's StatefulSet. */
    let workloads: Json[];

    before(async () => {
      evaluation = await evaluateStack(stack);
      master = inputs(findResource(evaluation, Deployment, "master"));
      workers = inputs(findResource(evaluation, Deployment, "workers"));
      redis =
        config.redis.kind === "inCluster"
          ? inputs(findResource(evaluation, StatefulSet, "redis"))
          : undefined;
      workloads = [master, workers, ...(redis ? [redis] : [])];
    });

    it("validates every Kubernetes object against the Kubernetes OpenAPI schema", () => {
      const objects = kubernetesObjects(evaluation);
      assert.ok(objects.length >= 6, `only ${objects.length} Kubernetes objects`);
      for (const object of objects) {
        const validate = kubernetesModels[object.type];
        assert.ok(
          validate,
          `no OpenAPI model for ${object.type} (${object.name}): add it to resources.ts`,
        );
        assert.doesNotThrow(() => validate(object.inputs), `${object.type} ${object.name}`);
      }
    });

    it("puts every namespaced object in the stack's namespace, which enforces the restricted pod standard", () => {
      const namespace = inputs(
        findResource(evaluation, "kubernetes:core/v1:Namespace", "namespace"),
      );
      assert.equal(namespace.metadata.name, config.namespace);
      assert.equal(namespace.metadata.labels["pod-security.kubernetes.io/enforce"], "restricted");
      for (const object of kubernetesObjects(evaluation)) {
        if (object.type === "kubernetes:core/v1:Namespace") continue;
        assert.equal(
          inputs(object).metadata.namespace,
          config.namespace,
          `${object.type} ${object.name}`,
        );
      }
      assert.equal(plainOutput(evaluation, "namespace"), config.namespace);
    });

    it("labels every object and pod with the app.kubernetes.io labels", () => {
      const required = ["name", "instance", "component", "part-of", "managed-by"];
      for (const object of kubernetesObjects(evaluation)) {
        if (object.type === "kubernetes:core/v1:Namespace") continue;
        const labels = inputs(object).metadata.labels ?? {};
        for (const label of required) {
          assert.ok(
            labels[`app.kubernetes.io/${label}`],
            `${object.type} ${object.name} lacks ${label}`,
          );
        }
      }
      for (const deployment of workloads) {
        const podLabels = deployment.spec.template.metadata.labels;
        for (const [key, value] of Object.entries(deployment.spec.selector.matchLabels)) {
          assert.equal(podLabels[key], value, `selector ${key} must match the pod template`);
        }
      }
      assert.notEqual(
        master.spec.selector.matchLabels["app.kubernetes.io/name"],
        workers.spec.selector.matchLabels["app.kubernetes.io/name"],
        "master and worker selectors must not overlap",
      );
    });

    it("runs every pod non-root with a read-only root, no escalation, no capabilities and RuntimeDefault seccomp", () => {
      assert.equal(workloads.length, config.redis.kind === "inCluster" ? 3 : 2);
      for (const deployment of workloads) {
        const pod = podSpec(deployment);
        assert.equal(pod.securityContext.runAsNonRoot, true);
        assert.ok(pod.securityContext.runAsUser > 0);
        assert.equal(pod.securityContext.seccompProfile.type, "RuntimeDefault");
        assert.equal(pod.automountServiceAccountToken, false);
        for (const container of pod.containers) {
          const security = container.securityContext;
          assert.equal(security.readOnlyRootFilesystem, true, container.name);
          assert.equal(security.allowPrivilegeEscalation, false, container.name);
          assert.equal(security.runAsNonRoot, true, container.name);
          assert.deepEqual(security.capabilities.drop, ["ALL"], container.name);
          assert.equal(security.capabilities.add, undefined, container.name);
          assert.equal(security.seccompProfile.type, "RuntimeDefault", container.name);
        }
      }
    });

    it("gives every container the configured requests and limits", () => {
      for (const [deployment, expected] of [
        [master, config.master.resources],
        [workers, config.worker.resources],
        ...(config.redis.kind === "inCluster" ? [[redis, config.redis.resources] as const] : []),
      ] as const) {
        assert.deepEqual(onlyContainer(deployment).resources, {
          requests: { cpu: expected.cpuRequest, memory: expected.memoryRequest },
          limits: { cpu: expected.cpuLimit, memory: expected.memoryLimit },
        });
      }
    });

    it("runs the configured masters, by default two on GKE and one locally, each new pod Ready before an old one stops", () => {
      assert.equal(master.spec.replicas, config.master.replicas);
      assert.ok(master.spec.replicas >= clusterDefaults[config.cluster].masterReplicas);
      if (isGke) assert.ok(master.spec.replicas >= 2, "GKE runs a master to spare");
      assert.deepEqual(master.spec.strategy, {
        type: "RollingUpdate",
        rollingUpdate: { maxSurge: 1, maxUnavailable: 0 },
      });
      // Several masters share the tasks only through Redis.
      assert.equal(envOf(onlyContainer(master), "STORE").value, "redis");
    });

    if (config.redis.kind === "inCluster") {
      const redisConfig = config.redis;
      it("deploys Redis in the namespace: one pod with a volume, an append-only file and no eviction", () => {
        assert.deepEqual(resourcesOfType(evaluation, Instance), []);
        assert.equal(redis.spec.replicas, 1);
        const container = onlyContainer(redis);
        assert.equal(container.image, redisConfig.image);
        const [claim] = redis.spec.volumeClaimTemplates;
        assert.equal(claim.spec.resources.requests.storage, redisConfig.storageSize);
        assert.equal(claim.spec.storageClassName, redisConfig.storageClass);
        const conf = String(
          inputs(findResource(evaluation, ConfigMap, "redis-config")).data["redis.conf"],
        );
        assert.match(conf, /^appendonly yes$/m);
        assert.match(conf, /^appendfsync everysec$/m);
        assert.match(conf, /^maxmemory-policy noeviction$/m);
        const maxmemory = Number(/^maxmemory (\d+)$/m.exec(conf)?.[1]);
        const limit = parseMemory(redisConfig.resources.memoryLimit);
        assert.equal(maxmemory, redisMaxmemoryBytes(limit));
        assert.ok(maxmemory < limit, "maxmemory is below the container's limit");
      });

      it("points the masters at the Redis Service by its cluster DNS name, with its password from the Secret Redis reads", () => {
        const service = inputs(findResource(evaluation, Service, "redis"));
        assert.deepEqual(service.spec.selector, redis.spec.selector.matchLabels);
        const container = onlyContainer(master);
        assert.equal(
          envOf(container, "REDIS_URL").value,
          `redis://${service.metadata.name}.${config.namespace}.svc.cluster.local:6379/0`,
        );
        const password = envOf(onlyContainer(redis), "REDIS_PASSWORD").valueFrom.secretKeyRef;
        assert.deepEqual(envOf(container, "REDIS_PASSWORD").valueFrom.secretKeyRef, password);
        assert.equal(plainEnv(container).REDIS_CA_FILE, undefined);
      });
    } else {
      it("deploys Memorystore: STANDARD_HA with a replica, RDB snapshots, AUTH, TLS, no eviction, in the cluster's network", () => {
        assert.equal(config.cluster, "gke");
        assert.deepEqual(resourcesOfType(evaluation, StatefulSet), []);
        const instance = inputs(findResource(evaluation, Instance, "memorystore"));
        assert.equal(instance.tier, "STANDARD_HA");
        assert.equal(instance.replicaCount, 1);
        assert.equal(instance.persistenceConfig.persistenceMode, "RDB");
        assert.equal(instance.authEnabled, true);
        assert.equal(instance.transitEncryptionMode, "SERVER_AUTHENTICATION");
        assert.deepEqual(instance.redisConfigs, { "maxmemory-policy": "noeviction" });
        assert.equal(
          instance.authorizedNetwork,
          `projects/${config.gke?.project}/global/networks/${config.gke?.network}`,
        );
        assert.equal(instance.region, config.gke?.region);
        assert.equal(
          instance.memorySizeGb,
          config.redis.kind === "memorystore" && config.redis.sizeGb,
        );
      });

      it("points the masters at Memorystore over TLS, with its AUTH string from a Secret and its CA from a ConfigMap", () => {
        const container = onlyContainer(master);
        assert.match(envOf(container, "REDIS_URL").value, /^rediss:\/\/[\d.]+:6378\/0$/);
        const secret = inputs(findResource(evaluation, Secret, "memorystore-password"));
        assert.deepEqual(envOf(container, "REDIS_PASSWORD").valueFrom.secretKeyRef, {
          name: secret.metadata.name,
          key: "password",
        });
        const ca = inputs(findResource(evaluation, ConfigMap, "memorystore-ca"));
        const volume = podSpec(master).volumes.find(
          (v: Json) => v.configMap?.name === ca.metadata.name,
        );
        const mount = container.volumeMounts.find((m: Json) => m.name === volume?.name);
        assert.equal(envOf(container, "REDIS_CA_FILE").value, `${mount.mountPath}/ca.pem`);
      });
    }

    it("serves the master on a public port named http and an internal one, probed on the internal one", () => {
      const container = onlyContainer(master);
      assert.deepEqual(container.ports, [
        { name: "http", containerPort: 8080, protocol: "TCP" },
        { name: "internal", containerPort: 8081, protocol: "TCP" },
      ]);
      assert.equal(envOf(container, "PORT").value, "8080");
      assert.equal(envOf(container, "INTERNAL_PORT").value, "8081");
      assert.deepEqual(container.livenessProbe.httpGet, { path: "/healthz", port: "internal" });
      assert.deepEqual(container.readinessProbe.httpGet, { path: "/readyz", port: "internal" });
    });

    it("exposes only the public port through the load balancer, the internal one in the cluster", () => {
      const services = resourcesOfType(evaluation, Service)
        .map(inputs)
        .filter(
          (service: Json) => service.metadata.labels["app.kubernetes.io/component"] === "master",
        );
      assert.deepEqual(
        services.map((service: Json) => [service.spec.type, service.spec.ports]).sort(),
        [
          ["ClusterIP", [{ name: "internal", port: 80, targetPort: "internal", protocol: "TCP" }]],
          ["LoadBalancer", [{ name: "http", port: 80, targetPort: "http", protocol: "TCP" }]],
        ],
      );
      for (const service of services) {
        assert.deepEqual(service.spec.selector, master.spec.selector.matchLabels);
      }
    });

    it("gives each pod only variables its service declares, with values the service accepts", () => {
      const pods = [
        ["master", master, masterEnv, loadMasterConfig],
        ["worker", workers, workerEnv, loadWorkerConfig],
      ] as const;
      // Files the pod mounts from ConfigMaps (Memorystore's CA), written out where the env points.
      const mounted = mkdtempSync(path.join(tmpdir(), "taskfleet-mounts-"));
      try {
        for (const [service, deployment, declared, load] of pods) {
          const env: Record<string, string> = {};
          const container = onlyContainer(deployment);
          for (const entry of container.env) {
            // Node's own variable: the heap cap.
            if (entry.name === "NODE_OPTIONS") continue;
            assert.ok(
              entry.name in declared,
              `${service}: ${entry.name} is not a variable it reads`,
            );
            env[entry.name] = entry.value ?? "a-token-from-the-secret";
          }
          for (const mount of container.volumeMounts ?? []) {
            const volume = podSpec(deployment).volumes.find((v: Json) => v.name === mount.name);
            if (!volume?.configMap) continue;
            const configMap = resourcesOfType(evaluation, ConfigMap)
              .map(inputs)
              .find((c: Json) => c.metadata.name === volume.configMap.name);
            assert.ok(configMap, `${service}: mounts a ConfigMap the stack does not declare`);
            for (const [name, value] of Object.entries(configMap.data)) {
              mkdirSync(path.join(mounted, mount.name), { recursive: true });
              const file = path.join(mounted, mount.name, name);
              writeFileSync(file, String(value));
              for (const [key, pointed] of Object.entries(env)) {
                if (pointed === `${mount.mountPath}/${name}`) env[key] = file;
              }
            }
          }
          assert.doesNotThrow(() => load(env), `${service} refuses the program's environment`);
        }
      } finally {
        rmSync(mounted, { recursive: true, force: true });
      }
    });

    it("gives the master the grace its own shutdown takes, and a margin", () => {
      const grace = Number(envOf(onlyContainer(master), "SHUTDOWN_GRACE_SECONDS").value);
      assert.equal(grace, loadMasterConfig({ WORKER_TOKEN: "w" }).shutdownGraceSeconds);
      assert.equal(podSpec(master).terminationGracePeriodSeconds, grace + 15);
    });

    it("passes the configured settings to the master", () => {
      const container = onlyContainer(master);
      assert.equal(envOf(container, "LEASE_SECONDS").value, String(config.leaseSeconds));
      assert.equal(envOf(container, "MAX_ATTEMPTS").value, String(config.maxAttempts));
      assert.equal(envOf(container, "RESULT_TTL_SECONDS").value, String(config.resultTtlSeconds));
      assert.equal(envOf(container, "LOG_LEVEL").value, config.logLevel);
      // The heap is capped below the pod's limit; the task budget is a share of what Redis may
      // hold, so submissions are refused before Redis refuses writes.
      const limit = parseMemory(config.master.resources.memoryLimit);
      const heapMiB = Number(
        /^--max-old-space-size=(\d+)$/.exec(envOf(container, "NODE_OPTIONS").value)?.[1],
      );
      const budget = Number(envOf(container, "MEMORY_BUDGET_BYTES").value);
      assert.ok(heapMiB * 2 ** 20 < limit, "the heap is capped below the pod's limit");
      const redisData =
        config.redis.kind === "memorystore"
          ? config.redis.sizeGb * 2 ** 30
          : redisMaxmemoryBytes(parseMemory(config.redis.resources.memoryLimit));
      assert.ok(budget > 0 && budget < redisData, "the task budget fits in Redis's memory");
      // The service listens on loopback only when it has no API token; a pod must be reachable.
      assert.equal(envOf(container, "HOST").value, "0.0.0.0");
    });

    it("keeps the tokens in a Secret and hands them to the pods only by secretKeyRef, the scaler's only to a queue-sized stack", () => {
      const secret = inputs(findResource(evaluation, Secret, "master-tokens"));
      const byQueue = config.worker.autoscaler.kind === "queue";
      assert.deepEqual(Object.keys(secret.stringData).sort(), [
        "apiToken",
        ...(byQueue ? ["scalerToken"] : []),
        "workerToken",
      ]);
      const apiToken = evaluation.outputs.apiToken;
      assert.ok(isSecretOutput(apiToken), "apiToken must be a secret output");
      assert.equal(secret.stringData.apiToken, apiToken.value);
      assert.ok(String(secret.stringData.workerToken).length >= 32);
      const refs: [Json, string, string][] = [
        [onlyContainer(master), "API_TOKEN", "apiToken"],
        [onlyContainer(master), "WORKER_TOKEN", "workerToken"],
        [onlyContainer(workers), "WORKER_TOKEN", "workerToken"],
        ...(byQueue
          ? [[onlyContainer(master), "SCALER_TOKEN", "scalerToken"] as [Json, string, string]]
          : []),
      ];
      if (byQueue) {
        assert.ok(String(secret.stringData.scalerToken).length >= 32);
        const auth = inputs(findResource(evaluation, TriggerAuthentication, "workers-scaler"));
        assert.deepEqual(auth.spec.secretTargetRef, [
          { parameter: "token", name: secret.metadata.name, key: "scalerToken" },
        ]);
      } else {
        assert.throws(() => envOf(onlyContainer(master), "SCALER_TOKEN"), /no env SCALER_TOKEN/);
      }
      for (const [container, env, key] of refs) {
        const entry = envOf(container, env);
        assert.equal(entry.value, undefined, `${env} must not be a plain value`);
        assert.deepEqual(entry.valueFrom.secretKeyRef, { name: secret.metadata.name, key });
      }
    });

    it("exposes the master through a LoadBalancer Service on port 80 to the named port", () => {
      const service = inputs(findResource(evaluation, Service, "master"));
      assert.equal(service.spec.type, "LoadBalancer");
      assert.deepEqual(service.spec.ports, [
        { name: "http", port: 80, targetPort: "http", protocol: "TCP" },
      ]);
      assert.deepEqual(service.spec.selector, master.spec.selector.matchLabels);
    });

    it("has no PodDisruptionBudget that could never be met (it would block every node drain), nor one that protects nothing", () => {
      const owners = [
        ...resourcesOfType(evaluation, Deployment),
        ...resourcesOfType(evaluation, StatefulSet),
      ].map(inputs);
      for (const pdb of resourcesOfType(evaluation, Pdb).map(inputs)) {
        const selected = owners.filter((d: Json) =>
          Object.entries(pdb.spec.selector.matchLabels).every(
            ([key, value]) => d.spec.template.metadata.labels[key] === value,
          ),
        );
        const replicas = selected.reduce((sum: number, d: Json) => sum + (d.spec.replicas ?? 1), 0);
        const allowed =
          pdb.spec.minAvailable !== undefined
            ? replicas - Number(pdb.spec.minAvailable)
            : Math.min(Number(pdb.spec.maxUnavailable), replicas);
        assert.ok(allowed >= 1, `PodDisruptionBudget ${pdb.metadata.name} allows no disruption`);
        assert.ok(
          allowed < replicas,
          `PodDisruptionBudget ${pdb.metadata.name} lets all ${replicas} of its pods go at once`,
        );
      }
    });

    it("keeps all masters but one through a drain when it runs two or more, and has no budget for one", () => {
      const budgets = resourcesOfType(evaluation, Pdb);
      if (config.master.replicas >= 2) {
        const pdb = inputs(findResource(evaluation, Pdb, "master"));
        assert.deepEqual(pdb.spec.selector.matchLabels, master.spec.selector.matchLabels);
        assert.equal(pdb.spec.maxUnavailable, 1);
        assert.equal(budgets.length, 1, "Redis's single pod has no budget");
      } else {
        assert.deepEqual(budgets, []);
      }
    });

    it("lets clients into the master's public port, only workers and scrapers into its internal one, and workers out only to it and DNS", () => {
      const policies = resourcesOfType(evaluation, NetworkPolicy).map(inputs);
      const denyAll = policies.find((p: Json) => Object.keys(p.spec.podSelector).length === 0);
      assert.deepEqual(denyAll?.spec.policyTypes, ["Ingress", "Egress"]);
      const masterPods = master.spec.template.metadata.labels;
      const workerPods = workers.spec.template.metadata.labels;
      const selects = (p: Json, pod: Record<string, string>) =>
        Object.entries(p.spec.podSelector.matchLabels ?? {}).every(([k, v]) => pod[k] === v);
      const rules = (pod: Record<string, string>, kind: "ingress" | "egress") =>
        policies.filter((p: Json) => selects(p, pod)).flatMap((p: Json) => p.spec[kind] ?? []);
      const [publicPort, internalPort] = onlyContainer(master).ports.map(
        (p: Json) => p.containerPort,
      );
      const workerPeer = { podSelector: { matchLabels: workers.spec.selector.matchLabels } };
      assert.deepEqual(rules(masterPods, "ingress"), [
        { ports: [{ protocol: "TCP", port: publicPort }] },
        {
          from: [
            workerPeer,
            ...[
              ...config.metricsNamespaces,
              // KEDA's scaler reads the backlog there.
              ...(config.worker.autoscaler.kind === "queue"
                ? [config.worker.autoscaler.keda.namespace]
                : []),
            ].map((name) => ({
              namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": name } },
            })),
          ],
          ports: [{ protocol: "TCP", port: internalPort }],
        },
      ]);
      assert.deepEqual(
        rules(masterPods, "egress").map((rule: Json) => rule.ports.map((p: Json) => p.port)),
        [[config.redis.kind === "inCluster" ? 6379 : 6378], [53, 53]],
        "masters reach Redis and the DNS only",
      );
      assert.deepEqual(rules(workerPods, "ingress"), []);
      const egress = rules(workerPods, "egress");
      assert.equal(egress.length, 2);
      assert.deepEqual(egress[0].to, [
        { podSelector: { matchLabels: master.spec.selector.matchLabels } },
      ]);
      assert.deepEqual(egress[0].ports, [{ protocol: "TCP", port: internalPort }]);
      assert.deepEqual(
        egress[1].ports.map((p: Json) => p.port),
        [53, 53],
      );
    });

    it("lets only the masters reach Redis, and the masters nothing else but DNS", () => {
      const policies = resourcesOfType(evaluation, NetworkPolicy).map(inputs);
      const masterPeer = { podSelector: { matchLabels: master.spec.selector.matchLabels } };
      const egress = policies.find(
        (p: Json) =>
          JSON.stringify(p.spec.podSelector.matchLabels) ===
            JSON.stringify(master.spec.selector.matchLabels) && p.spec.policyTypes[0] === "Egress",
      );
      if (redis) {
        const redisPods = redis.spec.template.metadata.labels;
        const ingress = policies.filter((p: Json) =>
          Object.entries(p.spec.podSelector.matchLabels ?? {}).every(
            ([k, v]) => redisPods[k] === v,
          ),
        );
        // The default deny, and the one policy that opens Redis's port to the masters.
        assert.deepEqual(
          ingress.flatMap((p: Json) => p.spec.ingress ?? []),
          [{ from: [masterPeer], ports: [{ protocol: "TCP", port: 6379 }] }],
        );
        assert.deepEqual(egress.spec.egress[0].to, [
          { podSelector: { matchLabels: redis.spec.selector.matchLabels } },
        ]);
      } else {
        const host = /^rediss:\/\/([\d.]+):/.exec(
          envOf(onlyContainer(master), "REDIS_URL").value,
        )?.[1];
        assert.deepEqual(egress.spec.egress[0].to, [{ ipBlock: { cidr: `${host}/32` } }]);
      }
    });

    it("opens the master's load balancer to the configured sources only", () => {
      const service = inputs(findResource(evaluation, Service, "master"));
      const ranges = config.allowedSourceRanges;
      assert.deepEqual(service.spec.loadBalancerSourceRanges, ranges.length ? ranges : undefined);
      const internal = service.metadata.annotations?.["networking.gke.io/load-balancer-type"];
      assert.equal(internal, config.internalLoadBalancer ? "Internal" : undefined);
    });

    it("leaves the worker count to the autoscaler", () => {
      assert.equal(workers.spec.replicas, undefined);
    });

    it("points workers at the master's internal Service by its cluster DNS name", () => {
      const service = inputs(findResource(evaluation, Service, "master-internal"));
      const expected = `http://${service.metadata.name}.${config.namespace}.svc.cluster.local:80`;
      assert.equal(envOf(onlyContainer(workers), "MASTER_URL").value, expected);
      assert.equal(plainOutput(evaluation, "masterInternalUrl"), expected);
    });

    it("gives a stopping worker its configured grace and the pod a longer one", () => {
      const container = onlyContainer(workers);
      const grace = config.worker.shutdownGraceSeconds;
      assert.equal(envOf(container, "SHUTDOWN_GRACE_SECONDS").value, String(grace));
      assert.equal(podSpec(workers).terminationGracePeriodSeconds, grace + 15);
      assert.equal(envOf(container, "CONCURRENCY").value, String(config.worker.concurrency));
      assert.equal(envOf(container, "LOG_LEVEL").value, config.logLevel);
      assert.equal(container.ports, undefined, "workers open no port");
    });

    /** Up at once and steeply, down slowly and a few at a time: the same for both autoscalers. */
    function assertScalingBehavior(behavior: Json): void {
      const { scaleUp, scaleDown } = behavior;
      assert.equal(scaleUp.stabilizationWindowSeconds, 0);
      assert.equal(scaleUp.selectPolicy, "Max");
      assert.ok(
        scaleUp.policies.some(
          (p: Json) => p.type === "Percent" && p.value >= 100 && p.periodSeconds <= 15,
        ),
      );
      assert.ok(scaleDown.stabilizationWindowSeconds >= 300);
      assert.equal(scaleDown.selectPolicy, "Min");
      for (const policy of scaleDown.policies) {
        assert.ok(policy.periodSeconds >= 60, "scale-down policies act at most once a minute");
      }
    }

    it("gives the workers exactly one autoscaler, the one the stack names", () => {
      const hpas = resourcesOfType(evaluation, Hpa);
      const scaled = resourcesOfType(evaluation, ScaledObject);
      if (config.worker.autoscaler.kind === "cpu") {
        assert.equal(hpas.length, 1);
        assert.equal(scaled.length, 0);
        assert.equal(resourcesOfType(evaluation, TriggerAuthentication).length, 0);
      } else {
        assert.equal(hpas.length, 0, "KEDA makes the HPA it drives; one of ours would fight it");
        assert.equal(scaled.length, 1);
      }
    });

    if (config.worker.autoscaler.kind === "queue") {
      const queue = config.worker.autoscaler;

      it("scales workers with KEDA on the master's backlog per slot, CPU second, up fast and down slowly", () => {
        const scaled = inputs(findResource(evaluation, ScaledObject, "workers"));
        const internal = inputs(findResource(evaluation, Service, "master-internal"));
        assert.deepEqual(scaled.spec.scaleTargetRef, {
          apiVersion: "apps/v1",
          kind: "Deployment",
          name: workers.metadata.name,
        });
        assert.equal(scaled.spec.minReplicaCount, config.worker.minReplicas);
        assert.equal(scaled.spec.maxReplicaCount, config.worker.maxReplicas);
        assert.equal(scaled.spec.pollingInterval, queue.pollingSeconds);
        assert.equal(scaled.spec.cooldownPeriod, queue.cooldownSeconds);
        const [backlog, cpu] = scaled.spec.triggers;
        assert.equal(
          backlog.metadata.url,
          `http://${internal.metadata.name}.${config.namespace}.svc.cluster.local:80/scaler/v1/backlog`,
        );
        assert.equal(
          backlog.metadata.targetValue,
          String(config.worker.concurrency * queue.tasksPerSlot),
        );
        assert.equal(backlog.metadata.activationTargetValue, String(queue.activationTasks));
        assert.equal(cpu.metadata.value, String(config.worker.targetCpuUtilization));
        assertScalingBehavior(scaled.spec.advanced.horizontalPodAutoscalerConfig.behavior);
      });

      it(
        queue.keda.source === "install"
          ? "installs KEDA from its Helm chart at the pinned release, before the ScaledObject"
          : "installs no KEDA: the cluster has it",
        () => {
          const releases = resourcesOfType(evaluation, HelmRelease).filter(
            (r) => inputs(r).chart === "keda",
          );
          if (queue.keda.source === "present") {
            assert.equal(releases.length, 0);
            return;
          }
          const release = inputs(findResource(evaluation, HelmRelease, "keda"));
          assert.equal(release.version, kedaVersion);
          assert.equal(release.repositoryOpts.repo, "https://kedacore.github.io/charts");
          assert.equal(release.namespace, queue.keda.namespace);
          assert.equal(release.createNamespace, true);
          const scaled = findResource(evaluation, ScaledObject, "workers");
          assert.ok(
            scaled.dependsOn.includes(`${HelmRelease}::keda`),
            `the ScaledObject waits for KEDA's release: ${scaled.dependsOn.join(", ")}`,
          );
        },
      );
    }

    if (config.worker.autoscaler.kind === "cpu")
      it("scales workers on CPU within the configured bounds, up fast and down slowly", () => {
        const hpa = inputs(findResource(evaluation, Hpa, "workers"));
        assert.deepEqual(hpa.spec.scaleTargetRef, {
          apiVersion: "apps/v1",
          kind: "Deployment",
          name: workers.metadata.name,
        });
        assert.equal(hpa.spec.minReplicas, config.worker.minReplicas);
        assert.equal(hpa.spec.maxReplicas, config.worker.maxReplicas);
        assert.deepEqual(hpa.spec.metrics, [
          {
            type: "Resource",
            resource: {
              name: "cpu",
              target: {
                type: "Utilization",
                averageUtilization: config.worker.targetCpuUtilization,
              },
            },
          },
        ]);
        assertScalingBehavior(hpa.spec.behavior);
      });

    it("builds both images from the repository root with the services' Dockerfile, for GKE's amd64 nodes or the local engine's own platform", () => {
      for (const service of ["master", "worker"]) {
        const image = inputs(findResource(evaluation, Image, `images-${service}`));
        assert.equal(image.build.context, ".");
        assert.equal(image.build.dockerfile, "services/Dockerfile");
        assert.deepEqual(image.build.args, { SERVICE: service });
        // Unset: the engine builds for itself, as an arm64 laptop's kind nodes need.
        assert.equal(image.build.platform, isGke ? "linux/amd64" : undefined);
      }
    });

    it("gives the Kubernetes provider an identity known at preview, so a new kubeconfig never replaces every object", () => {
      const [provider, ...others] = resourcesOfType(evaluation, "pulumi:providers:kubernetes");
      assert.deepEqual(others, []);
      assert.ok(provider);
      const expected = {
        gke: `projects/${config.gke?.project}/locations/${config.gke?.region}/clusters/${plainOutput(evaluation, "clusterName")}`,
        kind: `kind-${plainOutput(evaluation, "clusterName")}`,
        existing: `context:${config.kubeContext ?? "(current)"}`,
      }[config.cluster];
      assert.equal(inputs(provider).clusterIdentifier, expected);
      // A cluster the stack owns may be gone before destroy; a borrowed one may only be down.
      // (Provider inputs reach the engine as strings.)
      assert.equal(
        inputs(provider).deleteUnreachable,
        config.cluster === "existing" ? undefined : "true",
      );
    });

    it("deploys each image by a reference that changes exactly when the build changes", () => {
      for (const [deployment, service] of [
        [master, "master"],
        [workers, "worker"],
      ] as const) {
        const container = onlyContainer(deployment);
        const digest = String(plainOutput(evaluation, `${service}ImageDigest`));
        assert.equal(container.image, plainOutput(evaluation, `${service}Image`));
        assert.doesNotMatch(container.image, /:latest$/);
        const hex = /sha256:([0-9a-f]{64})$/.exec(digest)?.[1];
        assert.ok(hex, `${service}ImageDigest ${digest} is not a sha256 digest`);
        if (isGke) {
          assert.match(container.image, /^[a-z0-9-]+-docker\.pkg\.dev\/.+@sha256:[0-9a-f]{64}$/);
          assert.equal(container.image, digest);
          assert.equal(container.imagePullPolicy, "IfNotPresent");
        } else {
          assert.ok(container.image.endsWith(`:${hex.slice(0, 16)}`), container.image);
          assert.equal(container.imagePullPolicy, "Never");
        }
      }
    });

    it("exports the cluster name, a master URL, and secrets only as secrets", () => {
      assert.equal(typeof plainOutput(evaluation, "clusterName"), "string");
      const url = plainOutput(evaluation, "masterUrl");
      if (isGke) assert.match(String(url), /^http:\/\/\S+$/);
      const kubeconfig = evaluation.outputs.kubeconfig;
      if (config.cluster === "existing") assert.equal(kubeconfig, undefined);
      else assert.ok(isSecretOutput(kubeconfig), "kubeconfig must be a secret output");
    });

    if (isGke) {
      it("creates a GKE cluster without the default pool, with release channel, workload identity, VPC-native networking and shielded nodes", () => {
        const gke = config.gke as NonNullable<TaskfleetConfig["gke"]>;
        const cluster = inputs(
          findResource(evaluation, "gcp:container/cluster:Cluster", "gke-cluster"),
        );
        assert.equal(cluster.removeDefaultNodePool, true);
        assert.equal(cluster.location, gke.region);
        assert.equal(cluster.project, gke.project);
        assert.deepEqual(cluster.releaseChannel, { channel: gke.releaseChannel });
        assert.deepEqual(cluster.workloadIdentityConfig, {
          workloadPool: `${gke.project}.svc.id.goog`,
        });
        assert.equal(cluster.networkingMode, "VPC_NATIVE");
        // The stack's NetworkPolicies are enforced, not just accepted.
        assert.equal(cluster.datapathProvider, "ADVANCED_DATAPATH");
        assert.ok(cluster.ipAllocationPolicy);
        assert.equal(cluster.enableShieldedNodes, true);
        assert.equal(cluster.deletionProtection, gke.deletionProtection);
        assert.equal(cluster.network, gke.network);
        assert.equal(cluster.subnetwork, gke.subnetwork);
        assert.equal(plainOutput(evaluation, "clusterName"), cluster.name);
      });

      it("makes pulumi destroy refuse up front while deletion protection is on", () => {
        const cluster = findResource(evaluation, "gcp:container/cluster:Cluster", "gke-cluster");
        assert.equal(cluster.options.protect, config.gke?.deletionProtection);
      });

      it("runs even the temporary default pool under the dedicated account, never the Compute Engine default", () => {
        const cluster = findResource(evaluation, "gcp:container/cluster:Cluster", "gke-cluster");
        const pool = inputs(
          findResource(evaluation, "gcp:container/nodePool:NodePool", "gke-pool"),
        );
        assert.deepEqual(inputs(cluster).nodeConfig, pool.nodeConfig);
        assert.ok(
          cluster.dependsOn.includes("gcp:projects/iAMMember:IAMMember::gke-nodes-role"),
          "the account has its role before nodes start under it",
        );
        assert.equal(pool.nodeConfig.diskSizeGb, config.gke?.nodeDiskSizeGb);
      });

      it("runs nodes in an autoscaled pool under a dedicated least-privilege service account", () => {
        const gke = config.gke as NonNullable<TaskfleetConfig["gke"]>;
        const pool = inputs(
          findResource(evaluation, "gcp:container/nodePool:NodePool", "gke-pool"),
        );
        const account = inputs(
          findResource(evaluation, "gcp:serviceaccount/account:Account", "gke-nodes"),
        );
        const email = `${account.accountId}@${gke.project}.iam.gserviceaccount.com`;
        assert.deepEqual(pool.autoscaling, {
          minNodeCount: gke.nodeMinCount,
          maxNodeCount: gke.nodeMaxCount,
        });
        assert.equal(pool.nodeConfig.machineType, gke.nodeMachineType);
        assert.equal(pool.initialNodeCount, Math.max(1, gke.nodeMinCount));
        assert.equal(pool.nodeConfig.serviceAccount, email);
        assert.deepEqual(pool.nodeConfig.workloadMetadataConfig, { mode: "GKE_METADATA" });
        const roles = [
          ...resourcesOfType(evaluation, "gcp:projects/iAMMember:IAMMember"),
          ...resourcesOfType(
            evaluation,
            "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember",
          ),
        ]
          .map(inputs)
          .filter((binding: Json) => binding.member === `serviceAccount:${email}`)
          .map((binding: Json) => binding.role)
          .sort();
        assert.deepEqual(roles, [
          "roles/artifactregistry.reader",
          "roles/container.defaultNodeServiceAccount",
        ]);
      });

      it("pushes images to an Artifact Registry Docker repository with the gcp provider's token", () => {
        const gke = config.gke as NonNullable<TaskfleetConfig["gke"]>;
        const repository = inputs(
          findResource(evaluation, "gcp:artifactregistry/repository:Repository", "gke-images"),
        );
        assert.equal(repository.format, "DOCKER");
        assert.equal(repository.location, gke.region);
        for (const service of ["master", "worker"]) {
          const image = inputs(findResource(evaluation, Image, `images-${service}`));
          assert.ok(!image.skipPush, `${service} image must be pushed`);
          assert.equal(
            image.imageName,
            `${gke.region}-docker.pkg.dev/${gke.project}/${repository.repositoryId}/${service}:latest`,
          );
          assert.deepEqual(image.registry, {
            server: `${gke.region}-docker.pkg.dev`,
            username: "oauth2accesstoken",
            password: "test-access-token",
          });
        }
        assert.ok(evaluation.invokes.includes("gcp:organizations/getClientConfig:getClientConfig"));
      });

      it("exports a kubeconfig that authenticates with gke-gcloud-auth-plugin", () => {
        const kubeconfig = evaluation.outputs.kubeconfig;
        assert.ok(isSecretOutput(kubeconfig));
        assert.match(String(kubeconfig.value), /command: gke-gcloud-auth-plugin/);
        assert.match(
          String(kubeconfig.value),
          /apiVersion: client\.authentication\.k8s\.io\/v1beta1/,
        );
      });

      it("waits for the cloud load balancer's address", () => {
        const service = inputs(findResource(evaluation, Service, "master"));
        assert.equal(service.metadata.annotations?.["pulumi.com/skipAwait"], undefined);
        assert.equal(plainOutput(evaluation, "masterUrl"), "http://203.0.113.10");
      });
    } else {
      it("creates no Google Cloud resource and calls no Google Cloud function", () => {
        const gcp = evaluation.resources.filter((r) => r.type.startsWith("gcp:"));
        assert.deepEqual(
          gcp.map((r) => r.type),
          [],
        );
        assert.deepEqual(evaluation.invokes, []);
      });

      it("builds images without pushing them or naming a registry", () => {
        for (const service of ["master", "worker"]) {
          const image = inputs(findResource(evaluation, Image, `images-${service}`));
          assert.equal(image.skipPush, true);
          assert.equal(image.registry, undefined);
          assert.doesNotMatch(image.imageName, /\./, "a local image name has no registry host");
        }
      });

      it("never waits for a load balancer address that may not come", () => {
        const service = inputs(findResource(evaluation, Service, "master"));
        assert.equal(service.metadata.annotations["pulumi.com/skipAwait"], "true");
        assert.equal(plainOutput(evaluation, "masterUrl"), "", "no address is known yet");
      });

      it("makes each image available to the cluster before its pods start", () => {
        const loads = resourcesOfType(evaluation, "command:local:Command").filter((r) =>
          r.name.endsWith("-load"),
        );
        const loader =
          config.cluster === "kind"
            ? `kind load docker-image --name ${plainOutput(evaluation, "clusterName")}`
            : config.imageLoadCommand;
        if (loader === undefined) {
          assert.deepEqual(loads, []);
          return;
        }
        for (const service of ["master", "worker"]) {
          const load = inputs(
            findResource(evaluation, "command:local:Command", `images-${service}-load`),
          );
          assert.equal(load.create, `${loader} "$IMAGE"`);
          assert.equal(load.environment.IMAGE, plainOutput(evaluation, `${service}Image`));
          assert.deepEqual(load.triggers, [plainOutput(evaluation, `${service}ImageDigest`)]);
        }
        // Registration order says nothing about creation order: the engine follows dependencies.
        for (const [service, deployment] of [
          ["master", "master"],
          ["worker", "workers"],
        ]) {
          const load = `command:local:Command::images-${service}-load`;
          assert.ok(
            findResource(evaluation, Deployment, deployment as string).dependsOn.includes(load),
            `the ${deployment} Deployment waits for the ${service} image to be loaded`,
          );
          if (config.cluster === "kind") {
            assert.ok(
              findResource(
                evaluation,
                "command:local:Command",
                `images-${service}-load`,
              ).dependsOn.includes("command:local:Command::kind-cluster"),
              `the ${service} image is loaded only once the kind cluster exists`,
            );
          }
        }
      });
    }

    if (config.cluster === "kind") {
      it("creates and deletes a kind cluster with the stack, its kubeconfig kept secret", () => {
        const cluster = inputs(findResource(evaluation, "command:local:Command", "kind-cluster"));
        const name = plainOutput(evaluation, "clusterName");
        assert.equal(cluster.environment.KIND_CLUSTER_NAME, name);
        assert.equal(cluster.create, kindCreateScript);
        assert.equal(cluster.delete, 'kind delete cluster --name "$KIND_CLUSTER_NAME"');
        // stdout is the kubeconfig with the admin client key: kept out of the console and the state.
        assert.equal(cluster.logging, "stderr");
        const options = findResource(evaluation, "command:local:Command", "kind-cluster").options;
        assert.deepEqual(options.additionalSecretOutputs, ["stdout"]);
        const provider = inputs(
          findResource(evaluation, "pulumi:providers:kubernetes", "kind-k8s"),
        );
        assert.equal(provider.kubeconfig, "stdout of kind-cluster");
      });

      it("installs metrics-server, without which the worker autoscaler cannot read CPU use", () => {
        const release = inputs(
          findResource(evaluation, "kubernetes:helm.sh/v3:Release", "kind-metrics-server"),
        );
        assert.equal(release.chart, "metrics-server");
        assert.match(release.version, /^\d+\.\d+\.\d+$/);
        assert.equal(
          release.repositoryOpts.repo,
          "https://kubernetes-sigs.github.io/metrics-server/",
        );
        assert.equal(release.namespace, "kube-system");
        assert.deepEqual(release.values.args, ["--kubelet-insecure-tls"]);
      });
    }

    if (config.cluster === "existing") {
      it("installs nothing into a cluster it does not own, but KEDA when the stack asks for it", () => {
        const asked =
          config.worker.autoscaler.kind === "queue" &&
          config.worker.autoscaler.keda.source === "install";
        assert.deepEqual(
          resourcesOfType(evaluation, HelmRelease).map((r) => r.name),
          asked ? ["keda"] : [],
        );
      });

      it("deploys to the configured kubeconfig context and creates no cluster", () => {
        const provider = inputs(
          findResource(evaluation, "pulumi:providers:kubernetes", "existing-k8s"),
        );
        assert.equal(provider.context, config.kubeContext);
        assert.equal(provider.kubeconfig, undefined);
        assert.deepEqual(
          resourcesOfType(evaluation, "command:local:Command").filter(
            (r) => !r.name.endsWith("-load"),
          ),
          [],
        );
      });
    }
  });
}
