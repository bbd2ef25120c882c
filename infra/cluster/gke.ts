import * as gcp from "@pulumi/gcp";
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import type { GkeConfig } from "../config";
import type { ClusterTarget, RegistryDestination } from "./target";

export interface GkeClusterArgs {
  /** Validated GKE settings of the stack. */
  gke: GkeConfig;
  /** Base of the cloud resource ids (cluster, repository, service account): `taskfleet-<stack>`. */
  baseName: string;
}

/**
 * A lower-case id of at most `max` characters that starts with a letter and does not end with
 * '-', as GKE cluster names, repository ids and service account ids all require.
 */
export function cloudId(base: string, max: number): string {
  const cleaned = base
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, "-")
    .replace(/^[^a-z]+/, "");
  return cleaned.slice(0, max).replace(/-+$/, "");
}

/** A kubeconfig that gets its credentials from `gke-gcloud-auth-plugin`, so it holds no token. */
export function gkeKubeconfig(name: string, endpoint: string, caCertificate: string): string {
  return `apiVersion: v1
kind: Config
clusters:
- name: ${name}
  cluster:
    certificate-authority-data: ${caCertificate}
    server: https://${endpoint}
contexts:
- name: ${name}
  context:
    cluster: ${name}
    user: ${name}
current-context: ${name}
preferences: {}
users:
- name: ${name}
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: gke-gcloud-auth-plugin
      installHint: Install gke-gcloud-auth-plugin (gcloud components install gke-gcloud-auth-plugin).
      provideClusterInfo: true
`;
}

/**
 * A regional GKE cluster with its own autoscaled node pool, a least-privilege node service
 * account and an Artifact Registry repository for the images.
 */
export class GkeCluster extends pulumi.ComponentResource implements ClusterTarget {
  public readonly provider: k8s.Provider;
  public readonly clusterName: pulumi.Output<string>;
  public readonly kubeconfig: pulumi.Output<string>;
  public readonly images: RegistryDestination;
  public readonly externalAddressMayNeverCome = false;

  constructor(name: string, args: GkeClusterArgs, opts?: pulumi.ComponentResourceOptions) {
    super("taskfleet:index:GkeCluster", name, {}, opts);
    const { gke } = args;

    // Nodes run as their own account instead of the Compute Engine default, which is Editor on the project.
    const nodeAccount = new gcp.serviceaccount.Account(
      `${name}-nodes`,
      {
        project: gke.project,
        accountId: cloudId(`${args.baseName}-nodes`, 30),
        displayName: `taskfleet nodes (${args.baseName})`,
      },
      { parent: this },
    );
    // The one role Google documents for node accounts: logs, metrics and metadata, nothing else.
    const nodeRole = new gcp.projects.IAMMember(
      `${name}-nodes-role`,
      {
        project: gke.project,
        role: "roles/container.defaultNodeServiceAccount",
        member: pulumi.interpolate`serviceAccount:${nodeAccount.email}`,
      },
      { parent: this },
    );

    const repository = new gcp.artifactregistry.Repository(
      `${name}-images`,
      {
        project: gke.project,
        location: gke.region,
        repositoryId: cloudId(args.baseName, 63),
        format: "DOCKER",
        description: "taskfleet master and worker images",
      },
      { parent: this },
    );
    // Nodes may pull from this repository only, not from every repository in the project.
    const pullAccess = new gcp.artifactregistry.RepositoryIamMember(
      `${name}-nodes-pull`,
      {
        project: gke.project,
        location: gke.region,
        repository: repository.repositoryId,
        role: "roles/artifactregistry.reader",
        member: pulumi.interpolate`serviceAccount:${nodeAccount.email}`,
      },
      { parent: this },
    );

    const clusterName = cloudId(args.baseName, 40);
    // What every node of the cluster runs as and on, the temporary default pool's included.
    const nodeConfig = {
      machineType: gke.nodeMachineType,
      diskSizeGb: gke.nodeDiskSizeGb,
      serviceAccount: nodeAccount.email,
      // Access is limited by the account's IAM roles; the broad scope is what Google advises with them.
      oauthScopes: ["https://www.googleapis.com/auth/cloud-platform"],
      workloadMetadataConfig: { mode: "GKE_METADATA" },
      shieldedInstanceConfig: { enableSecureBoot: true, enableIntegrityMonitoring: true },
    };

    const cluster = new gcp.container.Cluster(
      `${name}-cluster`,
      {
        project: gke.project,
        name: clusterName,
        location: gke.region,
        network: gke.network,
        subnetwork: gke.subnetwork,
        // The default pool cannot be autoscaled; GKE requires one at creation, so it is created
        // with one node per zone and removed at once. Its nodes run as our account too: the
        // Compute Engine default account is disabled in many organisations, and creation fails there.
        removeDefaultNodePool: true,
        initialNodeCount: 1,
        nodeConfig,
        releaseChannel: { channel: gke.releaseChannel },
        workloadIdentityConfig: { workloadPool: `${gke.project}.svc.id.goog` },
        networkingMode: "VPC_NATIVE",
        // Dataplane V2 enforces the stack's NetworkPolicies (without it GKE accepts and ignores them).
        datapathProvider: "ADVANCED_DATAPATH",
        // Empty: GKE picks the secondary ranges for pods and services.
        ipAllocationPolicy: {},
        enableShieldedNodes: true,
        deletionProtection: gke.deletionProtection,
      },
      {
        parent: this,
        dependsOn: [nodeRole],
        // GKE checks its deletion protection only when the cluster itself is deleted, which
        // `pulumi destroy` does last, after every workload, the node pool and the IAM bindings.
        // Pulumi's own protection refuses the destroy before anything is touched.
        protect: gke.deletionProtection,
        // The temporary pool's settings cannot be changed after creation and do not matter once
        // it is gone; a change here must not replace the cluster.
        ignoreChanges: ["nodeConfig", "initialNodeCount"],
      },
    );

    const nodePool = new gcp.container.NodePool(
      `${name}-pool`,
      {
        project: gke.project,
        cluster: cluster.name,
        location: gke.region,
        // Only read at creation, and changing it replaces the pool and every node: it starts at
        // the lower bound (at least one node per zone, so the first deploy is scheduled at once)
        // and is ignored afterwards, when the autoscaler owns the size.
        initialNodeCount: Math.max(1, gke.nodeMinCount),
        // Counts are per zone: a regional cluster runs the pool in each of the region's zones.
        autoscaling: { minNodeCount: gke.nodeMinCount, maxNodeCount: gke.nodeMaxCount },
        management: { autoRepair: true, autoUpgrade: true },
        nodeConfig,
      },
      { parent: this, dependsOn: [nodeRole, pullAccess], ignoreChanges: ["initialNodeCount"] },
    );

    this.clusterName = cluster.name;
    this.kubeconfig = pulumi.secret(
      pulumi
        .all([cluster.name, cluster.endpoint, cluster.masterAuth])
        .apply(([clusterName, endpoint, auth]) =>
          gkeKubeconfig(
            `gke_${gke.project}_${gke.region}_${clusterName}`,
            endpoint,
            auth.clusterCaCertificate ?? "",
          ),
        ),
    );
    // Workloads wait for the node pool: without nodes their pods would never be scheduled.
    this.provider = new k8s.Provider(
      `${name}-k8s`,
      {
        kubeconfig: this.kubeconfig,
        // Known at preview, unlike the kubeconfig: a new endpoint or certificate updates the
        // provider instead of replacing it and, with it, every Kubernetes object of the stack.
        clusterIdentifier: `projects/${gke.project}/locations/${gke.region}/clusters/${clusterName}`,
        // The cluster is the stack's: once it is gone, its objects are gone with it.
        deleteUnreachable: true,
      },
      { parent: this, dependsOn: [nodePool] },
    );

    const client = gcp.organizations.getClientConfigOutput({ parent: this });
    this.images = {
      kind: "registry",
      repositoryUrl: pulumi.interpolate`${gke.region}-docker.pkg.dev/${gke.project}/${repository.repositoryId}`,
      server: pulumi.output(`${gke.region}-docker.pkg.dev`),
      // Artifact Registry takes a caller's OAuth access token under this fixed user name.
      username: "oauth2accesstoken",
      password: pulumi.secret(client.accessToken),
    };

    this.registerOutputs({
      provider: this.provider,
      clusterName: this.clusterName,
      kubeconfig: this.kubeconfig,
    });
  }
}
