import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describe, test } from "node:test";
import { parse } from "yaml";
import { repoRoot } from "../../infra/service-builds.js";
import { actionlint } from "./actionlint.js";
import {
  concurrencyProblems,
  expression,
  type Job,
  jobRuns,
  parseWorkflow,
  permissionProblems,
  productionProblems,
  readWorkflows,
  stacksOfJob,
  unpinnedActions,
  type WorkflowFile,
  workflowsDir,
} from "./rules.js";

const workflows = readWorkflows();

function workflow(name: string): WorkflowFile {
  const found = workflows.find((wf) => path.basename(wf.file) === name);
  assert.ok(found, `.github/workflows/${name} is missing`);
  return found;
}

/** `text` with one change, which must apply. */
function replaced(text: string, from: string | RegExp, to: string): string {
  const result = text.replace(from, to);
  assert.notEqual(result, text, `the edit ${from} did not apply`);
  return result;
}

/** A copy of a workflow with one textual change, parsed like the real one. */
function edited(wf: WorkflowFile, from: string | RegExp, to: string): WorkflowFile {
  return parseWorkflow(wf.file, replaced(wf.text, from, to));
}

/** Stacks by their `taskfleet:cluster` setting, read from the Pulumi.<stack>.yaml files. */
function stacksByCluster(): Map<string, string> {
  const projectDefaults = parse(fs.readFileSync(path.join(repoRoot, "Pulumi.yaml"), "utf8"));
  const defaultCluster = String(projectDefaults.config["taskfleet:cluster"].default);
  const stacks = new Map<string, string>();
  for (const file of fs.readdirSync(repoRoot).sort()) {
    const match = /^Pulumi\.(.+)\.yaml$/.exec(file);
    if (!match) continue;
    const stackFile = parse(fs.readFileSync(path.join(repoRoot, file), "utf8")) ?? {};
    stacks.set(match[1], String(stackFile.config?.["taskfleet:cluster"] ?? defaultCluster));
  }
  return stacks;
}

function gkeStacks(): string[] {
  return [...stacksByCluster()]
    .filter(([, cluster]) => cluster === "gke")
    .map(([stack]) => stack)
    .sort();
}

describe("workflow files", () => {
  test("there is a pull-request workflow and a deploy workflow", () => {
    assert.deepEqual(
      workflows.map((wf) => path.basename(wf.file)),
      ["deploy.yml", "pull-request.yml"],
    );
  });

  test("actionlint reports nothing on any workflow file", async () => {
    assert.deepEqual(await actionlint(workflowsDir), []);
  });

  test("actionlint reports every fault of broken copies in a temporary directory", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "taskfleet-workflows-"));
    try {
      let pr = workflow("pull-request.yml").text;
      pr = replaced(pr, "    timeout-minutes: 45", "    timeout: 45");
      pr = replaced(
        pr,
        expression("vars.PULUMI_BACKEND_URL"),
        expression("var.PULUMI_BACKEND_URL"),
      );
      pr = replaced(pr, "needs: test", "needs: tests");
      pr = replaced(pr, "permissions: {}", "permissions: {}\npermissions: {}");
      fs.writeFileSync(path.join(dir, "pull-request.yml"), pr);
      let deploy = workflow("deploy.yml").text;
      deploy = replaced(deploy, "taskfleet-dev]", "taskfleet-stage]");
      deploy = replaced(deploy, "inputs.stack == 'prod'", "inputs.stack == 'prod");
      fs.writeFileSync(path.join(dir, "deploy.yml"), deploy);
      fs.writeFileSync(path.join(dir, "not-yaml.yaml"), "on: push\njobs: [\n");

      const findings = await actionlint(dir);
      const of = (name: string) =>
        findings.filter((f) => f.startsWith(`${path.join(dir, name)}:`)).join("\n");
      assert.match(of("pull-request.yml"), /unexpected key "timeout"/);
      assert.match(of("pull-request.yml"), /undefined variable "var"/);
      assert.match(of("pull-request.yml"), /job "preview" needs job "tests" which does not exist/);
      assert.match(of("pull-request.yml"), /key "permissions" is duplicated/);
      assert.match(of("deploy.yml"), /label "taskfleet-stage" is unknown/);
      assert.match(of("deploy.yml"), /unexpected EOF while lexing end of string literal/);
      assert.match(of("not-yaml.yaml"), /could not parse as YAML/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("workflow rules", () => {
  test("every action is pinned to a full commit with its release as a comment", () => {
    for (const wf of workflows) assert.deepEqual(unpinnedActions(wf), []);
  });

  test("a tag or a bare commit without its release comment is reported", () => {
    const wf = workflow("deploy.yml");
    const byTag = edited(wf, /actions\/checkout@[0-9a-f]{40} # v[\d.]+/, "actions/checkout@v7");
    assert.match(unpinnedActions(byTag).join("\n"), /actions\/checkout@v7 is not pinned/);
    const noComment = edited(wf, /(actions\/checkout@[0-9a-f]{40}) # v[\d.]+/, "$1");
    assert.match(unpinnedActions(noComment).join("\n"), /has no "# vX.Y.Z" comment/);
  });

  test("every job states least permissions", () => {
    for (const wf of workflows) assert.deepEqual(permissionProblems(wf), []);
  });

  test("a write permission a job does not use is reported", () => {
    const wf = edited(
      workflow("pull-request.yml"),
      "      contents: read\n    # A newer",
      "      contents: write\n    # A newer",
    );
    assert.deepEqual(permissionProblems(wf), [
      ".github/workflows/pull-request.yml: job test does not need contents: write",
    ]);
  });

  test("a workflow without default-deny permissions is reported", () => {
    const wf = edited(workflow("deploy.yml"), "permissions: {}\n", "");
    assert.match(permissionProblems(wf).join("\n"), /must set "permissions: \{\}"/);
  });

  test("every Pulumi job runs one at a time per stack, and updates are never cancelled", () => {
    for (const wf of workflows) assert.deepEqual(concurrencyProblems(wf), []);
  });

  test("a cancellable update or a group without its stack is reported", () => {
    const wf = workflow("deploy.yml");
    const cancellable = edited(wf, /(group: pulumi-prod\n\s+cancel-in-progress: )false/, "$1true");
    assert.deepEqual(concurrencyProblems(cancellable), [
      ".github/workflows/deploy.yml: job prod runs pulumi up with cancel-in-progress not false",
    ]);
    const shared = edited(wf, "group: pulumi-prod", "group: pulumi");
    assert.deepEqual(concurrencyProblems(shared), [
      ".github/workflows/deploy.yml: job prod's concurrency group does not name its stack",
    ]);
  });

  test("prod is updated only by a manual dispatch inside the production environment", () => {
    for (const wf of workflows) assert.deepEqual(productionProblems(wf, gkeStacks()), []);
    const prodJobs = workflows.flatMap((wf) =>
      Object.entries(wf.workflow.jobs).filter(([, job]) => stacksOfJob(job).includes("prod")),
    );
    assert.ok(prodJobs.length > 0, "no job acts on prod");
  });

  test("a prod update on push, or outside the environment, is reported", () => {
    const wf = workflow("deploy.yml");
    const onPush = edited(
      wf,
      "if: github.event_name == 'workflow_dispatch' && inputs.stack == 'prod'",
      "if: github.ref == 'refs/heads/main'",
    );
    assert.match(
      productionProblems(onPush, ["prod"]).join("\n"),
      /without requiring workflow_dispatch/,
    );
    const noEnvironment = edited(wf, "    environment: production\n", "");
    assert.match(
      productionProblems(noEnvironment, ["prod"]).join("\n"),
      /outside the production environment/,
    );
  });
});

describe("what the workflows run", () => {
  const pr = workflow("pull-request.yml").workflow;
  const deploy = workflow("deploy.yml").workflow;

  function runs(job: Job): string[] {
    return (job.steps ?? []).flatMap((step) => (step.run ? [step.run.trim()] : []));
  }

  test("the PR's test job runs the same checks as CI, each an existing npm script", () => {
    const commands = runs(pr.jobs.test);
    assert.deepEqual(commands, [
      "npm ci --no-audit --no-fund",
      "npm run typecheck",
      "npm run lint",
      // As .ci/run installs it: the Redis store's tests start their own server.
      "sudo apt-get update -qq && sudo apt-get install -y -qq redis-server",
      "npm test",
      "npm run test:containers",
    ]);
    const scripts = JSON.parse(
      fs.readFileSync(path.join(repoRoot, "package.json"), "utf8"),
    ).scripts;
    for (const command of commands) {
      const script = /^npm run (\S+)/.exec(command)?.[1];
      if (script) assert.ok(scripts[script], `package.json has no script ${script}`);
    }
  });

  test("the PR previews every GKE stack, with a diff, as one edited comment per stack", () => {
    const job = pr.jobs.preview;
    assert.deepEqual(stacksOfJob(job), gkeStacks());
    assert.ok(gkeStacks().length > 0, "no stack sets taskfleet:cluster: gke");
    const step = (job.steps ?? []).find((s) => s.uses?.startsWith("pulumi/actions@"));
    assert.ok(step?.with);
    assert.equal(step.with.command, "preview");
    assert.equal(step.with.diff, true);
    assert.equal(step.with["comment-on-pr"], true);
    assert.equal(step.with["edit-pr-comment"], true);
  });

  test("previews people's branches of this repository, never forks' or Dependabot's, which get no secrets", () => {
    const pullRequest = (headRepo: string, actor: string) => ({
      "github.event.pull_request.head.repo.full_name": headRepo,
      "github.repository": "acme/taskfleet",
      "github.actor": actor,
    });
    const job = pr.jobs.preview;
    assert.equal(jobRuns(job, pullRequest("acme/taskfleet", "octocat")), true);
    assert.equal(jobRuns(job, pullRequest("someone/taskfleet", "someone")), false);
    assert.equal(jobRuns(job, pullRequest("acme/taskfleet", "dependabot[bot]")), false);
    assert.equal(jobRuns(pr.jobs.test, pullRequest("acme/taskfleet", "dependabot[bot]")), true);
  });

  test("every job that talks to GKE federates to Google Cloud and installs the auth plugin", () => {
    for (const job of [pr.jobs.preview, deploy.jobs.prod]) {
      const steps = job.steps ?? [];
      const auth = steps.find((s) => s.uses?.startsWith("google-github-actions/auth@"));
      assert.equal(
        auth?.with?.workload_identity_provider,
        expression("vars.GCP_WORKLOAD_IDENTITY_PROVIDER"),
      );
      assert.equal(auth?.with?.service_account, expression("vars.GCP_SERVICE_ACCOUNT"));
      assert.equal(auth?.with?.credentials_json, undefined);
      const gcloud = steps.find((s) => s.uses?.startsWith("google-github-actions/setup-gcloud@"));
      assert.match(String(gcloud?.with?.install_components), /gke-gcloud-auth-plugin/);
      const pulumiIndex = steps.findIndex((s) => s.uses?.startsWith("pulumi/actions@"));
      assert.ok(steps.indexOf(gcloud as never) < pulumiIndex, "gcloud must be ready before Pulumi");
    }
  });

  test("every Pulumi step takes its backend from the PULUMI_BACKEND_URL variable", () => {
    for (const wf of [pr, deploy]) {
      for (const job of Object.values(wf.jobs)) {
        for (const step of job.steps ?? []) {
          if (!step.uses?.startsWith("pulumi/actions@")) continue;
          assert.equal(step.with?.["cloud-url"], expression("vars.PULUMI_BACKEND_URL"));
        }
      }
    }
  });

  test("main's pushes update dev; the dispatch offers dev and every GKE stack", () => {
    assert.deepEqual(Object.keys(deploy.on).sort(), ["push", "workflow_dispatch"]);
    assert.deepEqual(stacksOfJob(deploy.jobs.dev), ["dev"]);
    assert.match(deploy.jobs.dev.if ?? "", /github\.event_name == 'push'/);
    const dispatch = deploy.on.workflow_dispatch as { inputs: { stack: { options: string[] } } };
    // Stacks on a developer's own cluster (minikube) have no runner that could reach them.
    assert.deepEqual([...dispatch.inputs.stack.options].sort(), ["dev", ...gkeStacks()].sort());
    assert.equal(stacksByCluster().get("dev"), "kind");
  });
});
