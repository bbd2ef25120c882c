import { loadConfig } from "./config";
import { createTaskfleet } from "./taskfleet";

const taskfleet = createTaskfleet(loadConfig());

export const masterUrl = taskfleet.masterUrl;
export const masterInternalUrl = taskfleet.masterInternalUrl;
export const masterService = taskfleet.masterService;
export const namespace = taskfleet.namespace;
export const masterImageDigest = taskfleet.masterImageDigest;
export const workerImageDigest = taskfleet.workerImageDigest;
export const masterImage = taskfleet.masterImage;
export const workerImage = taskfleet.workerImage;
export const clusterName = taskfleet.clusterName;
export const kubeconfig = taskfleet.kubeconfig;
export const apiToken = taskfleet.apiToken;
