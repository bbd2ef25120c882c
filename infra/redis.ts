import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import { parseMemory, type Resources, redisMaxmemoryBytes } from "./config";
import {
  type AcceptedFinding,
  acceptedFindingAnnotations,
  appLabels,
  containerResources,
  containerSecurityContext,
  selectorLabels,
} from "./pod";

/** Redis's port, in the pod and on its Service. */
export const redisPort = 6379;

/** The key of the Secrets that hold Redis's password, in-cluster or Memorystore's. */
export const redisPasswordKey = "password";

/** The key of the ConfigMap that holds Memorystore's server CA certificate (PEM). */
export const redisCaKey = "ca.pem";

/**
 * The official Redis image's own user and group: the account its files and data directory were
 * made for.
 */
export const redisUser = 999;

/** Where the masters' traffic to Redis goes, for the network policies. */
export type RedisPeer =
  | {
      kind: "pods";
      /** Selector labels of the Redis pods. */
      selector: Record<string, string>;
      port: number;
    }
  | {
      kind: "address";
      /** The instance's IP address. */
      host: pulumi.Input<string>;
      port: pulumi.Input<number>;
    };

/** What the masters need to reach a Redis, whichever kind it is. */
export interface RedisConnection {
  /** REDIS_URL: `redis[s]://<host>:<port>/0`, never with a password. */
  url: pulumi.Output<string>;
  /** The Secret holding the password under {@link redisPasswordKey}. */
  passwordSecretName: pulumi.Output<string>;
  /** A TLS Redis: the ConfigMap holding its server CA under {@link redisCaKey}. */
  caConfigMapName: pulumi.Output<string> | undefined;
  peer: RedisPeer;
  /** What must be up before the masters start: they answer 503 until Redis answers. */
  ready: pulumi.Resource[];
  /** What Redis's data may take, in bytes (its `maxmemory`). */
  dataBytes: number;
}

export interface InClusterRedisArgs {
  /** Namespace of every object of the component. */
  namespace: pulumi.Input<string>;
  /** The Redis image, by tag or digest. */
  image: string;
  /** Manifest checker findings the StatefulSet accepts for this image. */
  imageFindings: AcceptedFinding[];
  /** Redis's password; a secret. */
  password: pulumi.Input<string>;
  /** The volume's size, a Kubernetes quantity. */
  storageSize: string;
  /** Undefined: the cluster's default StorageClass. */
  storageClass: string | undefined;
  /** CPU and memory of the Redis container; `maxmemory` is derived from the memory limit. */
  resources: Resources;
}

/** Where the start script writes the password's config line: memory only, never the volume. */
const runDir = "/run/redis";
const configDir = "/etc/redis";

/**
 * Redis's settings, all but the password: every write is logged to the append-only file and
 * flushed to disk once a second (a crash loses at most that second); no RDB snapshots besides
 * (each would fork the process a second time); writes are refused past `maxmemory` instead of
 * evicting keys, which would silently drop tasks.
 */
export function redisConf(maxmemoryBytes: number): string {
  return [
    "port 6379",
    // Every interface, IPv6 where the pod has it: the Service reaches the pod's address.
    "bind * -::*",
    "dir /data",
    "appendonly yes",
    "appendfsync everysec",
    'save ""',
    `maxmemory ${maxmemoryBytes}`,
    "maxmemory-policy noeviction",
    // Logs to stdout, for kubectl logs.
    'logfile ""',
    `include ${runDir}/auth.conf`,
    "",
  ].join("\n");
}

/**
 * Writes the password into a config file on a memory-backed volume and starts Redis on the
 * config. `printf` is the shell's own, so the password is on no process's command line; it is
 * unset before Redis starts, so it is not in Redis's environment either.
 */
export const redisStartScript = `set -eu
umask 077
printf 'requirepass %s\\n' "$REDIS_PASSWORD" > ${runDir}/auth.conf
unset REDIS_PASSWORD
exec redis-server ${configDir}/redis.conf`;

/** Ready only for a PONG: a Redis still loading its append-only file answers LOADING. */
export const redisReadinessScript = `test "$(redis-cli -h 127.0.0.1 -p ${redisPort} ping)" = PONG`;

/** Alive while it answers at all, loading included: a long load must not get it restarted. */
export const redisLivenessScript = `case "$(redis-cli -h 127.0.0.1 -p ${redisPort} ping 2>&1)" in PONG | LOADING*) exit 0 ;; *) exit 1 ;; esac`;

/** checkov findings a Redis StatefulSet accepts, whatever its image. */
const redisFindings: AcceptedFinding[] = [
  {
    check: "CKV_K8S_35",
    reason:
      "the start script reads the password from an env variable filled by secretKeyRef, writes it to a memory volume and unsets it; it is never a plain value",
  },
  {
    check: "CKV_K8S_40",
    reason:
      "runs as the official image's own non-root redis user (999), which owns the data the volume holds; the namespace enforces the restricted standard",
  },
];

/**
 * One Redis pod with a volume, in the stack's namespace, for the masters' tasks: a StatefulSet of
 * one replica (a second would be a second, empty Redis), its password from a Secret, a ClusterIP
 * Service. There is no PodDisruptionBudget: on one replica a budget that protects it can never be
 * met, and would block every node drain; a drain restarts Redis, which reloads its append-only
 * file while the masters answer 503.
 */
export class InClusterRedis extends pulumi.ComponentResource implements RedisConnection {
  public readonly url: pulumi.Output<string>;
  public readonly passwordSecretName: pulumi.Output<string>;
  public readonly caConfigMapName = undefined;
  public readonly peer: RedisPeer;
  public readonly ready: pulumi.Resource[];
  public readonly dataBytes: number;
  /** The labels that select the Redis pod. */
  public readonly podSelector: Record<string, string>;

  constructor(name: string, args: InClusterRedisArgs, opts?: pulumi.ComponentResourceOptions) {
    super("taskfleet:index:InClusterRedis", name, {}, opts);
    const labels = appLabels("redis", name);
    const selector = selectorLabels("redis", name);
    this.podSelector = selector;
    this.peer = { kind: "pods", selector, port: redisPort };
    this.dataBytes = redisMaxmemoryBytes(parseMemory(args.resources.memoryLimit));

    // Auto-named: a new password gives the Secret a new name, which restarts Redis and rolls the
    // masters, so both sides change together.
    const secret = new k8s.core.v1.Secret(
      `${name}-password`,
      {
        metadata: { namespace: args.namespace, labels },
        type: "Opaque",
        stringData: { [redisPasswordKey]: args.password },
      },
      { parent: this },
    );
    this.passwordSecretName = secret.metadata.name;

    // Auto-named as well: a settings change (the memory limit's maxmemory) restarts the pod.
    const config = new k8s.core.v1.ConfigMap(
      `${name}-config`,
      {
        metadata: { namespace: args.namespace, labels },
        data: {
          "redis.conf": redisConf(this.dataBytes),
        },
      },
      { parent: this },
    );

    // ClusterIP, not headless: the address stays the same when the pod is replaced, so the
    // masters reconnect at once instead of waiting out a DNS answer for the old pod.
    const service = new k8s.core.v1.Service(
      `${name}`,
      {
        metadata: { namespace: args.namespace, labels },
        spec: {
          type: "ClusterIP",
          selector,
          ports: [{ name: "redis", port: redisPort, targetPort: "redis", protocol: "TCP" }],
        },
      },
      { parent: this },
    );

    const passwordRef = {
      valueFrom: { secretKeyRef: { name: secret.metadata.name, key: redisPasswordKey } },
    };
    const statefulSet = new k8s.apps.v1.StatefulSet(
      `${name}`,
      {
        metadata: {
          // Named, unlike the other objects: the volume claim is named after the StatefulSet, so a
          // StatefulSet replaced (a change to its volume template) finds its data again.
          name,
          namespace: args.namespace,
          labels,
          annotations: acceptedFindingAnnotations([...redisFindings, ...args.imageFindings]),
        },
        spec: {
          serviceName: service.metadata.name,
          replicas: 1,
          selector: { matchLabels: selector },
          updateStrategy: { type: "RollingUpdate" },
          template: {
            metadata: { labels },
            spec: {
              securityContext: {
                runAsNonRoot: true,
                runAsUser: redisUser,
                runAsGroup: redisUser,
                fsGroup: redisUser,
                // Only a new volume is chowned, not every file at every start.
                fsGroupChangePolicy: "OnRootMismatch",
                seccompProfile: { type: "RuntimeDefault" },
              },
              automountServiceAccountToken: false,
              // Redis flushes the append-only file and exits on SIGTERM within a few seconds.
              terminationGracePeriodSeconds: 30,
              containers: [
                {
                  name: "redis",
                  image: args.image,
                  imagePullPolicy: "IfNotPresent",
                  command: ["sh", "-c", redisStartScript],
                  ports: [{ name: "redis", containerPort: redisPort, protocol: "TCP" }],
                  env: [
                    { name: "REDIS_PASSWORD", ...passwordRef },
                    // redis-cli's own variable: the probes authenticate without a -a argument.
                    { name: "REDISCLI_AUTH", ...passwordRef },
                  ],
                  readinessProbe: {
                    exec: { command: ["sh", "-c", redisReadinessScript] },
                    periodSeconds: 5,
                    timeoutSeconds: 3,
                    failureThreshold: 2,
                  },
                  livenessProbe: {
                    exec: { command: ["sh", "-c", redisLivenessScript] },
                    initialDelaySeconds: 10,
                    periodSeconds: 10,
                    timeoutSeconds: 5,
                    failureThreshold: 6,
                  },
                  resources: containerResources(args.resources),
                  securityContext: containerSecurityContext,
                  volumeMounts: [
                    { name: "data", mountPath: "/data" },
                    { name: "config", mountPath: configDir, readOnly: true },
                    { name: "run", mountPath: runDir },
                  ],
                },
              ],
              volumes: [
                { name: "config", configMap: { name: config.metadata.name } },
                // Memory-backed: the password's file never reaches a disk.
                { name: "run", emptyDir: { medium: "Memory", sizeLimit: "1Mi" } },
              ],
            },
          },
          volumeClaimTemplates: [
            {
              metadata: { name: "data", labels },
              spec: {
                accessModes: ["ReadWriteOnce"],
                storageClassName: args.storageClass,
                resources: { requests: { storage: args.storageSize } },
              },
            },
          ],
        },
      },
      // Named: a replacement must delete the old StatefulSet before it creates the new one.
      { parent: this, deleteBeforeReplace: true },
    );

    this.url = pulumi.interpolate`redis://${service.metadata.name}.${service.metadata.namespace}.svc.cluster.local:${redisPort}/0`;
    this.ready = [statefulSet];

    this.registerOutputs({ url: this.url, passwordSecretName: this.passwordSecretName });
  }
}
