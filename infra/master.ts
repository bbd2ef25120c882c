import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import { masterEnv } from "@taskfleet/protocol/master-env";
import { masterMemoryShares, parseMemory, redisTaskBudgetBytes } from "./config";
import {
  acceptedFindingAnnotations,
  appLabels,
  containerResources,
  containerSecurityContext,
  envVar,
  podSecurityContext,
  type ServicePodArgs,
  secretEnvVar,
  selectorLabels,
  terminationMarginSeconds,
  tmpMount,
  tmpVolume,
  tokenFromEnvFinding,
} from "./pod";
import { type RedisConnection, redisCaKey, redisPasswordKey } from "./redis";

/** The master's public container port, named `http`: the client API and health (docs/protocol.md). */
export const masterPort = 8080;
/**
 * The master's internal container port, named `internal`: the worker API, `/metrics` and the
 * kubelet's probes; only the in-cluster Service reaches it.
 */
export const masterInternalPort = 8081;
/** The port of both of the master's Services. */
export const masterServicePort = 80;

/** The key of SCALER_TOKEN in the master's token Secret, which KEDA's TriggerAuthentication reads. */
export const scalerTokenKey = "scalerToken";

/** Where a TLS Redis's CA certificate is mounted in the master's container. */
export const redisCaDir = "/etc/taskfleet/redis-ca";

export interface MasterArgs extends ServicePodArgs {
  /** Master pods; at 2 or more a PodDisruptionBudget keeps all but one through voluntary disruptions. */
  replicas: number;
  /** The Redis every master keeps the tasks in. */
  redis: RedisConnection;
  /** Bearer token for `/v1/*`; a secret. */
  apiToken: pulumi.Input<string>;
  /** Bearer token for `/worker/v1/*`; a secret. */
  workerToken: pulumi.Input<string>;
  /**
   * Bearer token for the autoscaler's backlog route (SCALER_TOKEN); a secret. Undefined: the
   * route is off (the CPU autoscaler needs none).
   */
  scalerToken: pulumi.Input<string> | undefined;
  /** LEASE_SECONDS. */
  leaseSeconds: number;
  /** MAX_ATTEMPTS. */
  maxAttempts: number;
  /** RESULT_TTL_SECONDS. */
  resultTtlSeconds: number;
  /** CIDR ranges allowed to reach the load balancer; empty: any source. */
  allowedSourceRanges: string[];
  /** GKE: an internal load balancer (an address in the VPC only) instead of an external one. */
  internalLoadBalancer: boolean;
  /**
   * True on clusters where a LoadBalancer address may never be assigned (kind, minikube without
   * a tunnel): `pulumi up` then does not wait for one.
   */
  skipAwaitAddress: boolean;
}

/** The URL of a LoadBalancer Service, from its status; empty while it has no address. */
export function loadBalancerUrl(
  status: k8s.types.output.core.v1.ServiceStatus | undefined,
): string {
  const ingress = status?.loadBalancer?.ingress?.[0];
  const host = ingress?.ip || ingress?.hostname;
  if (!host) return "";
  const bracketed = host.includes(":") ? `[${host}]` : host;
  return `http://${bracketed}${masterServicePort === 80 ? "" : `:${masterServicePort}`}`;
}

/** The master Service's annotations: what its load balancer is and whether `pulumi up` waits for it. */
export function masterServiceAnnotations(args: {
  internalLoadBalancer: boolean;
  skipAwaitAddress: boolean;
}): Record<string, string> {
  return {
    ...(args.internalLoadBalancer ? { "networking.gke.io/load-balancer-type": "Internal" } : {}),
    ...(args.skipAwaitAddress ? { "pulumi.com/skipAwait": "true" } : {}),
  };
}

/**
 * The masters: stateless pods that keep the tasks in Redis, behind two Services, holding the
 * tokens in a Secret they share with the workers. The LoadBalancer Service exposes the client API
 * and health only; the worker API and `/metrics` are on a second port, behind a ClusterIP Service
 * that the network policies open to the workers (and to metrics scrapers) only. With two or more
 * replicas a PodDisruptionBudget lets a drain take one master at a time; with one there is none,
 * because a budget that protects a single pod can never be met and would block every node drain,
 * cluster autoscaler scale-down and GKE upgrade (which then evicts anyway after an hour).
 */
export class Master extends pulumi.ComponentResource {
  /** The Secret holding `apiToken`, `workerToken` and, for the queue autoscaler, `scalerToken`. */
  public readonly tokenSecretName: pulumi.Output<string>;
  /** `http://<internal service>.<namespace>.svc.cluster.local`, for the workers. */
  public readonly internalUrl: pulumi.Output<string>;
  /** The autoscaler's backlog route on the internal Service (docs/api.md). */
  public readonly backlogUrl: pulumi.Output<string>;
  /** `http://<address>` of the LoadBalancer; empty until it has an address. */
  public readonly url: pulumi.Output<string>;
  public readonly serviceName: pulumi.Output<string>;
  /** The labels that select the master's pods. */
  public readonly podSelector: Record<string, string>;

  constructor(name: string, args: MasterArgs, opts?: pulumi.ComponentResourceOptions) {
    super("taskfleet:index:Master", name, {}, opts);
    const labels = appLabels("master", name);
    const selector = selectorLabels("master", name);
    const memory = masterMemoryShares(parseMemory(args.resources.memoryLimit));
    this.podSelector = selector;

    // Auto-named: a token change gives the Secret a new name, which rolls the pods that read it.
    const tokens = new k8s.core.v1.Secret(
      `${name}-tokens`,
      {
        metadata: { namespace: args.namespace, labels },
        type: "Opaque",
        stringData: {
          apiToken: args.apiToken,
          workerToken: args.workerToken,
          ...(args.scalerToken === undefined ? {} : { [scalerTokenKey]: args.scalerToken }),
        },
      },
      { parent: this },
    );
    this.tokenSecretName = tokens.metadata.name;

    const shutdownGraceSeconds = masterEnv.SHUTDOWN_GRACE_SECONDS.default;
    const caConfigMapName = args.redis.caConfigMapName;

    const deployment = new k8s.apps.v1.Deployment(
      `${name}`,
      {
        metadata: {
          namespace: args.namespace,
          labels,
          annotations: acceptedFindingAnnotations([
            tokenFromEnvFinding,
            ...args.image.acceptedFindings,
          ]),
        },
        spec: {
          // The tasks are in Redis, so masters can overlap: a new pod is Ready before an old one
          // stops, and an update never leaves the API without a master.
          replicas: args.replicas,
          strategy: { type: "RollingUpdate", rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } },
          selector: { matchLabels: selector },
          template: {
            metadata: { labels },
            spec: {
              securityContext: podSecurityContext,
              automountServiceAccountToken: false,
              terminationGracePeriodSeconds: shutdownGraceSeconds + terminationMarginSeconds,
              containers: [
                {
                  name: "master",
                  image: args.image.ref,
                  imagePullPolicy: args.image.pullPolicy,
                  ports: [
                    { name: "http", containerPort: masterPort, protocol: "TCP" },
                    { name: "internal", containerPort: masterInternalPort, protocol: "TCP" },
                  ],
                  env: [
                    envVar(masterEnv, "PORT", String(masterPort)),
                    envVar(masterEnv, "INTERNAL_PORT", String(masterInternalPort)),
                    // Every interface: the kubelet's probes and the Services reach the pod's IP.
                    envVar(masterEnv, "HOST", "0.0.0.0"),
                    secretEnvVar(masterEnv, "API_TOKEN", tokens.metadata.name, "apiToken"),
                    secretEnvVar(masterEnv, "WORKER_TOKEN", tokens.metadata.name, "workerToken"),
                    ...(args.scalerToken === undefined
                      ? []
                      : [
                          secretEnvVar(
                            masterEnv,
                            "SCALER_TOKEN",
                            tokens.metadata.name,
                            scalerTokenKey,
                          ),
                        ]),
                    envVar(masterEnv, "LEASE_SECONDS", String(args.leaseSeconds)),
                    envVar(masterEnv, "MAX_ATTEMPTS", String(args.maxAttempts)),
                    envVar(masterEnv, "RESULT_TTL_SECONDS", String(args.resultTtlSeconds)),
                    envVar(masterEnv, "SHUTDOWN_GRACE_SECONDS", String(shutdownGraceSeconds)),
                    // The tasks are in Redis: the budget is a share of Redis's memory, so that
                    // submissions get 503 while Redis still takes leases and completions.
                    envVar(
                      masterEnv,
                      "MEMORY_BUDGET_BYTES",
                      String(redisTaskBudgetBytes(args.redis.dataBytes)),
                    ),
                    // Node's own variable, not the master's.
                    {
                      name: "NODE_OPTIONS",
                      value: `--max-old-space-size=${Math.floor(memory.heapBytes / 2 ** 20)}`,
                    },
                    envVar(masterEnv, "LOG_LEVEL", args.logLevel),
                    envVar(masterEnv, "STORE", "redis"),
                    envVar(masterEnv, "REDIS_URL", args.redis.url),
                    secretEnvVar(
                      masterEnv,
                      "REDIS_PASSWORD",
                      args.redis.passwordSecretName,
                      redisPasswordKey,
                    ),
                    ...(caConfigMapName
                      ? [envVar(masterEnv, "REDIS_CA_FILE", `${redisCaDir}/${redisCaKey}`)]
                      : []),
                  ],
                  // On the internal port, which has its own connection cap: a client holding every
                  // connection of the public port cannot make the kubelet restart the master.
                  readinessProbe: {
                    httpGet: { path: "/readyz", port: "internal" },
                    periodSeconds: 5,
                    timeoutSeconds: 2,
                    failureThreshold: 2,
                  },
                  livenessProbe: {
                    httpGet: { path: "/healthz", port: "internal" },
                    initialDelaySeconds: 5,
                    periodSeconds: 10,
                    timeoutSeconds: 3,
                    failureThreshold: 3,
                  },
                  resources: containerResources(args.resources),
                  securityContext: containerSecurityContext,
                  volumeMounts: [
                    tmpMount,
                    ...(caConfigMapName
                      ? [{ name: "redis-ca", mountPath: redisCaDir, readOnly: true }]
                      : []),
                  ],
                },
              ],
              volumes: [
                tmpVolume,
                ...(caConfigMapName
                  ? [{ name: "redis-ca", configMap: { name: caConfigMapName } }]
                  : []),
              ],
            },
          },
        },
      },
      { parent: this, dependsOn: args.redis.ready },
    );

    if (args.replicas >= 2) {
      // A drain, an autoscaler scale-down or a GKE upgrade takes one master at a time; the others
      // keep serving.
      new k8s.policy.v1.PodDisruptionBudget(
        `${name}`,
        {
          metadata: { namespace: args.namespace, labels },
          spec: { maxUnavailable: 1, selector: { matchLabels: selector } },
        },
        { parent: this },
      );
    }

    const service = new k8s.core.v1.Service(
      `${name}`,
      {
        metadata: {
          namespace: args.namespace,
          labels,
          annotations: masterServiceAnnotations(args),
        },
        spec: {
          type: "LoadBalancer",
          // Enforced by the cloud's firewall for the load balancer; unset lets every source in.
          loadBalancerSourceRanges:
            args.allowedSourceRanges.length > 0 ? args.allowedSourceRanges : undefined,
          selector,
          ports: [{ name: "http", port: masterServicePort, targetPort: "http", protocol: "TCP" }],
        },
      },
      { parent: this, dependsOn: [deployment] },
    );

    // The worker API and /metrics, inside the cluster only.
    const internalService = new k8s.core.v1.Service(
      `${name}-internal`,
      {
        metadata: { namespace: args.namespace, labels },
        spec: {
          type: "ClusterIP",
          selector,
          ports: [
            {
              name: "internal",
              port: masterServicePort,
              targetPort: "internal",
              protocol: "TCP",
            },
          ],
        },
      },
      { parent: this, dependsOn: [deployment] },
    );

    this.serviceName = service.metadata.name;
    this.internalUrl = pulumi.interpolate`http://${internalService.metadata.name}.${internalService.metadata.namespace}.svc.cluster.local:${masterServicePort}`;
    this.backlogUrl = pulumi.interpolate`${this.internalUrl}/scaler/v1/backlog`;
    this.url = service.status.apply(loadBalancerUrl);

    this.registerOutputs({
      tokenSecretName: this.tokenSecretName,
      internalUrl: this.internalUrl,
      url: this.url,
      serviceName: this.serviceName,
    });
  }
}
