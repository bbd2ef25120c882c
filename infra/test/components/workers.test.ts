/**
 * The Workers component on its own, under mocks, with the args written out here: what its
 * Deployment and autoscaler get from each arg.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import * as pulumi from "@pulumi/pulumi";
import type { DeployableImage } from "../../images";
import { type ComponentEvaluation, evaluateComponent, promiseOf } from "../../testing/harness";
import {
  envOf,
  findResource,
  inputs,
  kubernetesModels,
  onlyContainer,
  plainEnv,
  resourcesOfType,
} from "../../testing/resources";
import { Workers, type WorkersArgs, workerScalingBehavior } from "../../workers";

const Deployment = "kubernetes:apps/v1:Deployment";
const Hpa = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler";
const ScaledObject = "kubernetes:keda.sh/v1alpha1:ScaledObject";
const TriggerAuthentication = "kubernetes:keda.sh/v1alpha1:TriggerAuthentication";
const backlogUrl = "http://master-internal-1a2b3c4d.fleet.svc.cluster.local:80/scaler/v1/backlog";

/** The queue autoscaler's args, as the program passes them. */
function queue(
  overrides: Partial<Extract<WorkersArgs["autoscaler"], { kind: "queue" }>> = {},
): WorkersArgs["autoscaler"] {
  return {
    kind: "queue",
    tasksPerSlot: 2,
    activationTasks: 3,
    pollingSeconds: 7,
    cooldownSeconds: 120,
    keda: { source: "present", namespace: "keda" },
    backlogUrl,
    scalerTokenKey: "scalerToken",
    dependsOn: [],
    ...overrides,
  };
}

const imageRef = "taskfleet-test/worker:0123456789abcdef";
const masterUrl = "http://master-internal-1a2b3c4d.fleet.svc.cluster.local:80";

function image(): DeployableImage {
  return {
    ref: pulumi.output(imageRef),
    pullPolicy: "Never",
    digest: pulumi.output(`sha256:${"01".repeat(32)}`),
    acceptedFindings: [],
  };
}

function args(overrides: Partial<WorkersArgs> = {}): WorkersArgs {
  return {
    namespace: pulumi.output("fleet"),
    image: image(),
    masterUrl: pulumi.output(masterUrl),
    tokenSecretName: pulumi.output("master-tokens-5e6f7a8b"),
    concurrency: 6,
    shutdownGraceSeconds: 40,
    logLevel: "warn",
    resources: { cpuRequest: "250m", cpuLimit: "1", memoryRequest: "384Mi", memoryLimit: "512Mi" },
    minReplicas: 2,
    maxReplicas: 9,
    targetCpuUtilization: 65,
    autoscaler: { kind: "cpu" },
    ...overrides,
  };
}

function workers(overrides: Partial<WorkersArgs> = {}): Promise<ComponentEvaluation<Workers>> {
  return evaluateComponent(() => new Workers("workers", args(overrides)));
}

describe("Workers", () => {
  it("passes its settings to the container by the worker's variable names", async () => {
    const evaluation = await workers();
    const deployment = inputs(findResource(evaluation, Deployment, "workers"));
    const container = onlyContainer(deployment);
    const plain = plainEnv(container);
    assert.deepEqual(plain, {
      MASTER_URL: masterUrl,
      CONCURRENCY: "6",
      // The 16 MiB the worker's memory floor sets aside for results waiting to be sent.
      RESULT_BUFFER_BYTES: String(16 * 2 ** 20),
      SHUTDOWN_GRACE_SECONDS: "40",
      LOG_LEVEL: "warn",
    });
    assert.equal(container.image, imageRef);
    assert.equal(container.imagePullPolicy, "Never");
    assert.deepEqual(container.resources, {
      requests: { cpu: "250m", memory: "384Mi" },
      limits: { cpu: "1", memory: "512Mi" },
    });
    assert.equal(deployment.metadata.namespace, "fleet");
  });

  it("reads the worker token only by secretKeyRef to the Secret it is given", async () => {
    const evaluation = await workers();
    const container = onlyContainer(inputs(findResource(evaluation, Deployment, "workers")));
    const token = envOf(container, "WORKER_TOKEN");
    assert.equal(token.value, undefined);
    assert.deepEqual(token.valueFrom, {
      secretKeyRef: { name: "master-tokens-5e6f7a8b", key: "workerToken" },
    });
  });

  it("gives the pod 15 seconds of grace beyond the worker's own", async () => {
    for (const grace of [40, 0]) {
      const evaluation = await workers({ shutdownGraceSeconds: grace });
      const deployment = inputs(findResource(evaluation, Deployment, "workers"));
      assert.equal(deployment.spec.template.spec.terminationGracePeriodSeconds, grace + 15);
      assert.equal(envOf(onlyContainer(deployment), "SHUTDOWN_GRACE_SECONDS").value, String(grace));
    }
  });

  it("leaves the pod count to the autoscaler and never takes a pod away before its replacement is up", async () => {
    const evaluation = await workers();
    const deployment = inputs(findResource(evaluation, Deployment, "workers"));
    assert.equal(deployment.spec.replicas, undefined);
    assert.equal(deployment.spec.strategy.rollingUpdate.maxUnavailable, 0);
  });

  it("scales the Deployment between the given bounds on the given CPU target", async () => {
    const evaluation = await workers();
    assert.equal(resourcesOfType(evaluation, Hpa).length, 1);
    const deployment = inputs(findResource(evaluation, Deployment, "workers"));
    const hpa = inputs(findResource(evaluation, Hpa, "workers"));
    assert.equal(hpa.metadata.namespace, "fleet");
    assert.deepEqual(hpa.spec.scaleTargetRef, {
      apiVersion: "apps/v1",
      kind: "Deployment",
      name: deployment.metadata.name,
    });
    assert.equal(await promiseOf(evaluation.component.deploymentName), deployment.metadata.name);
    assert.equal(hpa.spec.minReplicas, 2);
    assert.equal(hpa.spec.maxReplicas, 9);
    assert.deepEqual(hpa.spec.metrics, [
      {
        type: "Resource",
        resource: { name: "cpu", target: { type: "Utilization", averageUtilization: 65 } },
      },
    ]);
  });

  it("selects its pods by the labels it exports, which the pod template carries", async () => {
    const evaluation = await workers();
    const deployment = inputs(findResource(evaluation, Deployment, "workers"));
    const selector = evaluation.component.podSelector;
    assert.deepEqual(deployment.spec.selector.matchLabels, selector);
    for (const [key, value] of Object.entries(selector)) {
      assert.equal(deployment.spec.template.metadata.labels[key], value, key);
    }
    assert.equal(selector["app.kubernetes.io/instance"], "workers");
  });
});

describe("Workers sized by the queue (KEDA)", () => {
  it("declares a ScaledObject and its TriggerAuthentication, and no HorizontalPodAutoscaler of its own", async () => {
    const evaluation = await workers({ minReplicas: 0, autoscaler: queue() });
    assert.equal(resourcesOfType(evaluation, Hpa).length, 0, "KEDA makes the HPA it drives");
    assert.equal(resourcesOfType(evaluation, ScaledObject).length, 1);
    assert.equal(resourcesOfType(evaluation, TriggerAuthentication).length, 1);
  });

  it("scales the Deployment on the backlog per slot, from zero, with CPU as a second trigger and today's behaviour", async () => {
    const evaluation = await workers({ minReplicas: 0, autoscaler: queue() });
    const deployment = inputs(findResource(evaluation, Deployment, "workers"));
    const scaled = inputs(findResource(evaluation, ScaledObject, "workers"));
    const auth = inputs(findResource(evaluation, TriggerAuthentication, "workers-scaler"));
    assert.deepEqual(scaled.spec.scaleTargetRef, {
      apiVersion: "apps/v1",
      kind: "Deployment",
      name: deployment.metadata.name,
    });
    assert.equal(scaled.spec.minReplicaCount, 0);
    assert.equal(scaled.spec.maxReplicaCount, 9);
    assert.equal(scaled.spec.pollingInterval, 7);
    assert.equal(scaled.spec.cooldownPeriod, 120);
    assert.deepEqual(
      scaled.spec.advanced.horizontalPodAutoscalerConfig.behavior,
      workerScalingBehavior,
    );
    const [backlog, cpu, ...others] = scaled.spec.triggers;
    assert.equal(others.length, 0);
    assert.deepEqual(backlog, {
      type: "metrics-api",
      name: "backlog",
      metadata: {
        url: backlogUrl,
        format: "json",
        valueLocation: "demand",
        // concurrency 6 × 2 tasks per slot: the backlog one pod is sized for.
        targetValue: "12",
        activationTargetValue: "3",
        authMode: "bearer",
      },
      authenticationRef: { name: auth.metadata.name },
    });
    assert.deepEqual(cpu, {
      type: "cpu",
      name: "cpu",
      metricType: "Utilization",
      metadata: { value: "65" },
    });
  });

  it("authenticates the scaler with the token from the Secret, never a plain value", async () => {
    const evaluation = await workers({ autoscaler: queue() });
    const auth = inputs(findResource(evaluation, TriggerAuthentication, "workers-scaler"));
    assert.deepEqual(auth.spec, {
      secretTargetRef: [{ parameter: "token", name: "master-tokens-5e6f7a8b", key: "scalerToken" }],
    });
    const scaled = inputs(findResource(evaluation, ScaledObject, "workers"));
    assert.doesNotMatch(JSON.stringify(scaled), /token"\s*:/i, "no token in the trigger itself");
  });

  it("matches KEDA's CRDs (the release the program installs)", async () => {
    for (const minReplicas of [0, 2]) {
      const evaluation = await workers({ minReplicas, autoscaler: queue() });
      for (const type of [ScaledObject, TriggerAuthentication]) {
        for (const object of resourcesOfType(evaluation, type)) {
          const validate = kubernetesModels[type];
          assert.ok(validate, type);
          assert.doesNotThrow(() => validate(inputs(object)), `${type} ${object.name}`);
        }
      }
    }
  });

  it("the CRD check refuses a misspelt or mistyped field", async () => {
    const evaluation = await workers({ autoscaler: queue() });
    const scaled = inputs(findResource(evaluation, ScaledObject, "workers"));
    const validate = kubernetesModels[ScaledObject];
    assert.ok(validate);
    const misspelt = structuredClone(scaled);
    misspelt.spec.pollingIntervall = misspelt.spec.pollingInterval;
    assert.throws(() => validate(misspelt), /pollingIntervall|additional/);
    const mistyped = structuredClone(scaled);
    mistyped.spec.minReplicaCount = "0";
    assert.throws(() => validate(mistyped), /minReplicaCount/);
  });

  it("with the CPU autoscaler declares no KEDA object, and marks its HPA for KEDA's webhook to pass over", async () => {
    const evaluation = await workers();
    assert.equal(resourcesOfType(evaluation, ScaledObject).length, 0);
    assert.equal(resourcesOfType(evaluation, TriggerAuthentication).length, 0);
    const hpa = inputs(findResource(evaluation, Hpa, "workers"));
    assert.equal(hpa.metadata.annotations["validations.keda.sh/hpa-ownership"], "false");
  });
});
