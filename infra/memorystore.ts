import * as gcp from "@pulumi/gcp";
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import { cloudId } from "./cluster/gke";
import type { GkeConfig } from "./config";
import { appLabels } from "./pod";
import { type RedisConnection, type RedisPeer, redisCaKey, redisPasswordKey } from "./redis";

/** The newest Redis version Memorystore for Redis offers. */
export const memorystoreRedisVersion = "REDIS_7_2";

export interface MemorystoreArgs {
  /** Validated GKE settings of the stack: project, region, the cluster's VPC network. */
  gke: GkeConfig;
  /** Base of the instance's id: `taskfleet-<stack>`. */
  baseName: string;
  /** The instance's memory in GB. */
  sizeGb: number;
  /** The namespace that gets the password's Secret and the CA's ConfigMap. */
  namespace: pulumi.Input<string>;
}

/** `projects/<project>/global/networks/<name>` for a network given by name or by that path. */
export function networkPath(project: string, network: string): string {
  return network.includes("/") ? network : `projects/${project}/global/networks/${network}`;
}

/**
 * Memorystore for Redis in the cluster's VPC: a primary and a replica in another zone
 * (STANDARD_HA: replication is asynchronous, so a failover can lose the last writes not yet
 * replicated), hourly RDB snapshots (Memorystore for Redis has no append-only file), AUTH, and TLS
 * that the masters verify against the instance's own CA. Its AUTH string reaches the namespace in
 * a Secret, its CA certificate (public) in a ConfigMap.
 */
export class Memorystore extends pulumi.ComponentResource implements RedisConnection {
  public readonly url: pulumi.Output<string>;
  public readonly passwordSecretName: pulumi.Output<string>;
  public readonly caConfigMapName: pulumi.Output<string>;
  public readonly peer: RedisPeer;
  public readonly ready: pulumi.Resource[];
  /** The instance's size: Memorystore's `maxmemory` defaults to all of it. */
  public readonly dataBytes: number;

  constructor(name: string, args: MemorystoreArgs, opts?: pulumi.ComponentResourceOptions) {
    super("taskfleet:index:Memorystore", name, {}, opts);
    const { gke } = args;
    const labels = appLabels("redis", name);
    this.dataBytes = args.sizeGb * 2 ** 30;

    // Kept when the stack goes: other stacks of the project may use the API too.
    const api = new gcp.projects.Service(
      `${name}-api`,
      { project: gke.project, service: "redis.googleapis.com", disableOnDestroy: false },
      { parent: this },
    );

    const instance = new gcp.redis.Instance(
      `${name}`,
      {
        project: gke.project,
        region: gke.region,
        name: cloudId(args.baseName, 40),
        displayName: `taskfleet tasks (${args.baseName})`,
        tier: "STANDARD_HA",
        replicaCount: 1,
        memorySizeGb: args.sizeGb,
        redisVersion: memorystoreRedisVersion,
        authorizedNetwork: networkPath(gke.project, gke.network),
        authEnabled: true,
        transitEncryptionMode: "SERVER_AUTHENTICATION",
        persistenceConfig: { persistenceMode: "RDB", rdbSnapshotPeriod: "ONE_HOUR" },
        // Memorystore's default policy evicts keys when memory is full: tasks would vanish.
        // noeviction refuses the write instead, and the master answers 503.
        redisConfigs: { "maxmemory-policy": "noeviction" },
      },
      { parent: this, dependsOn: [api] },
    );

    // Auto-named: a new AUTH string gives the Secret a new name, which rolls the masters.
    const secret = new k8s.core.v1.Secret(
      `${name}-password`,
      {
        metadata: { namespace: args.namespace, labels },
        type: "Opaque",
        stringData: { [redisPasswordKey]: instance.authString },
      },
      { parent: this },
    );
    // A public certificate: a ConfigMap is enough. A new CA rolls the masters in the same way.
    const ca = new k8s.core.v1.ConfigMap(
      `${name}-ca`,
      {
        metadata: { namespace: args.namespace, labels },
        data: {
          [redisCaKey]: instance.serverCaCerts.apply((certs) => {
            const cert = certs[0]?.cert;
            if (!cert) throw new Error(`Memorystore instance ${name} reports no server CA`);
            return cert;
          }),
        },
      },
      { parent: this },
    );

    this.url = pulumi.interpolate`rediss://${instance.host}:${instance.port}/0`;
    this.passwordSecretName = secret.metadata.name;
    this.caConfigMapName = ca.metadata.name;
    this.peer = { kind: "address", host: instance.host, port: instance.port };
    this.ready = [instance];

    this.registerOutputs({
      url: this.url,
      passwordSecretName: this.passwordSecretName,
      caConfigMapName: this.caConfigMapName,
    });
  }
}
