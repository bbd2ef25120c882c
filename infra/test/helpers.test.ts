import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { cloudId, gkeKubeconfig } from "../cluster/gke";
import { contentTag } from "../images";
import { loadBalancerUrl } from "../master";

describe("loadBalancerUrl", () => {
  it("is empty while the Service has no address", () => {
    assert.equal(loadBalancerUrl(undefined), "");
    assert.equal(loadBalancerUrl({ loadBalancer: {} } as never), "");
    assert.equal(loadBalancerUrl({ loadBalancer: { ingress: [] } } as never), "");
  });

  it("uses the ingress IP, or the host name Docker Desktop gives", () => {
    assert.equal(
      loadBalancerUrl({ loadBalancer: { ingress: [{ ip: "203.0.113.7" }] } } as never),
      "http://203.0.113.7",
    );
    assert.equal(
      loadBalancerUrl({ loadBalancer: { ingress: [{ hostname: "localhost" }] } } as never),
      "http://localhost",
    );
  });

  it("brackets an IPv6 address", () => {
    assert.equal(
      loadBalancerUrl({ loadBalancer: { ingress: [{ ip: "2001:db8::1" }] } } as never),
      "http://[2001:db8::1]",
    );
  });
});

describe("contentTag", () => {
  it("tags a local image with the first 16 hex digits of its id", () => {
    const id = `sha256:${"0123456789abcdef".repeat(4)}`;
    assert.equal(contentTag("taskfleet-dev/master", id), "taskfleet-dev/master:0123456789abcdef");
  });

  it("refuses something that is not an image id", () => {
    assert.throws(() => contentTag("taskfleet-dev/master", "taskfleet-dev/master:latest"), {
      message: 'expected a sha256 image id, got "taskfleet-dev/master:latest"',
    });
  });
});

describe("cloudId", () => {
  it("lower-cases, replaces what GCP ids do not allow, and trims to the limit without a trailing '-'", () => {
    assert.equal(cloudId("taskfleet-Prod_EU", 40), "taskfleet-prod-eu");
    assert.equal(cloudId("9taskfleet", 40), "taskfleet");
    assert.equal(
      cloudId("taskfleet-a-very-long-stack-name-nodes", 30),
      "taskfleet-a-very-long-stack-na",
    );
    assert.equal(
      cloudId("taskfleet-abcdefghijklmnopqrs-nodes", 30),
      "taskfleet-abcdefghijklmnopqrs",
    );
  });
});

describe("gkeKubeconfig", () => {
  it("gets credentials from gke-gcloud-auth-plugin and holds no token", () => {
    const kubeconfig = gkeKubeconfig("ctx", "198.51.100.1", "Q0E=");
    assert.match(kubeconfig, /server: https:\/\/198\.51\.100\.1\n/);
    assert.match(kubeconfig, /certificate-authority-data: Q0E=\n/);
    assert.match(kubeconfig, /command: gke-gcloud-auth-plugin\n/);
    assert.doesNotMatch(kubeconfig, /token/);
  });
});
