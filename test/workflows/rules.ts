import * as fs from "node:fs";
import * as path from "node:path";
import { parse } from "yaml";
import { repoRoot } from "../../infra/service-builds";

/**
 * The repository's own rules for its GitHub Actions workflows, as plain functions over the parsed
 * files: the tests run them on the real workflows (no violations) and on broken copies (the
 * violation named), so every rule is shown to be able to fail. Whether a workflow is valid at all
 * (syntax, keys, expressions, `needs:`) is not checked here but by actionlint (./actionlint.ts).
 */

export const workflowsDir = path.join(repoRoot, ".github", "workflows");

/** A step or job as the rules need it; everything else stays `unknown`. */
export interface Step {
  name?: string;
  uses?: string;
  run?: string;
  with?: Record<string, unknown>;
}

export interface Job {
  if?: string;
  "runs-on"?: unknown;
  environment?: string | { name: string };
  permissions?: string | Record<string, string>;
  concurrency?: string | { group: string; "cancel-in-progress"?: boolean | string };
  strategy?: { matrix?: Record<string, unknown> };
  uses?: string;
  steps?: Step[];
}

export interface Workflow {
  name?: string;
  on: Record<string, unknown>;
  permissions?: string | Record<string, string>;
  jobs: Record<string, Job>;
}

export interface WorkflowFile {
  /** The path from the repository root, for messages. */
  file: string;
  text: string;
  workflow: Workflow;
}

/** Parses one workflow for the rules; a file that is not valid YAML throws, naming the file. */
export function parseWorkflow(file: string, text: string): WorkflowFile {
  try {
    return { file, text, workflow: parse(text) as Workflow };
  } catch (error) {
    throw new Error(`${file}: ${error instanceof Error ? error.message : String(error)}`);
  }
}

export function readWorkflows(): WorkflowFile[] {
  return fs
    .readdirSync(workflowsDir)
    .filter((name) => /\.ya?ml$/.test(name))
    .sort()
    .map((name) =>
      parseWorkflow(
        path.join(".github", "workflows", name),
        fs.readFileSync(path.join(workflowsDir, name), "utf8"),
      ),
    );
}

/**
 * A GitHub Actions expression as it appears in a workflow, e.g. `expression("matrix.stack")`;
 * built rather than written out so that no string literal looks like a mistyped template.
 */
export function expression(inner: string): string {
  return ["$", "{{ ", inner, " }}"].join("");
}

const pinnedUses = /^[\w.-]+\/[\w./-]+@[0-9a-f]{40}$/;
const versionComment = /#\s*v\d+\.\d+\.\d+\s*$/;

/** Every `uses:` names a full commit, with the release it is in as a `# vX.Y.Z` comment. */
export function unpinnedActions(wf: WorkflowFile): string[] {
  const problems: string[] = [];
  const lines = wf.text.split("\n");
  lines.forEach((line, index) => {
    const match = /^\s*(?:-\s+)?uses:\s*(\S+)(.*)$/.exec(line);
    if (!match) return;
    const [, ref, rest] = match;
    if (ref.startsWith("./")) return;
    if (!pinnedUses.test(ref)) {
      problems.push(`${wf.file}:${index + 1}: ${ref} is not pinned to a 40-hex commit`);
    } else if (!versionComment.test(rest)) {
      problems.push(`${wf.file}:${index + 1}: ${ref} has no "# vX.Y.Z" comment`);
    }
  });
  return problems;
}

function stepsOf(job: Job): Step[] {
  return job.steps ?? [];
}

function usesAction(job: Job, action: string): Step[] {
  return stepsOf(job).filter((step) => step.uses?.split("@")[0] === action);
}

function pulumiSteps(job: Job): Step[] {
  return usesAction(job, "pulumi/actions");
}

/**
 * Least privilege: the workflow grants nothing by default, every job states its permissions,
 * `id-token: write` only where a step federates to Google Cloud, `pull-requests: write` only where
 * Pulumi comments on the PR, and nothing else is writable.
 */
export function permissionProblems(wf: WorkflowFile): string[] {
  const problems: string[] = [];
  const top = wf.workflow.permissions;
  if (top === undefined || (typeof top === "object" && Object.keys(top).length > 0)) {
    problems.push(`${wf.file}: the workflow must set "permissions: {}" so jobs start from none`);
  }
  for (const [id, job] of Object.entries(wf.workflow.jobs)) {
    if (job.permissions === undefined) {
      problems.push(`${wf.file}: job ${id} has no permissions`);
      continue;
    }
    if (typeof job.permissions === "string") {
      problems.push(`${wf.file}: job ${id} uses "${job.permissions}": list each scope instead`);
      continue;
    }
    const federates = usesAction(job, "google-github-actions/auth").length > 0;
    const comments = pulumiSteps(job).some(
      (step) => String(step.with?.["comment-on-pr"]) === "true",
    );
    for (const [scope, level] of Object.entries(job.permissions)) {
      if (level !== "write") continue;
      const allowed =
        (scope === "id-token" && federates) || (scope === "pull-requests" && comments);
      if (!allowed) problems.push(`${wf.file}: job ${id} does not need ${scope}: write`);
    }
    if (federates && job.permissions["id-token"] !== "write") {
      problems.push(`${wf.file}: job ${id} federates to Google Cloud without id-token: write`);
    }
    if (comments && job.permissions["pull-requests"] !== "write") {
      problems.push(`${wf.file}: job ${id} comments on the PR without pull-requests: write`);
    }
  }
  return problems;
}

/** The stacks a job's Pulumi steps act on, with matrix values expanded. */
export function stacksOfJob(job: Job): string[] {
  const stacks = new Set<string>();
  for (const step of pulumiSteps(job)) {
    const name = String(step.with?.["stack-name"] ?? "");
    const matrixRef = /^\$\{\{\s*matrix\.(\w+)\s*\}\}$/.exec(name);
    if (matrixRef) {
      const values = job.strategy?.matrix?.[matrixRef[1]];
      for (const value of Array.isArray(values) ? values : []) stacks.add(String(value));
    } else if (name !== "") {
      stacks.add(name);
    }
  }
  return [...stacks].sort();
}

function commandsOfJob(job: Job): string[] {
  return pulumiSteps(job).map((step) => String(step.with?.command ?? ""));
}

/**
 * One update of a stack at a time: every job that runs `pulumi up` sits in a concurrency group
 * that names its stack and never cancels a running update (that would leave the stack locked
 * halfway through).
 */
export function concurrencyProblems(wf: WorkflowFile): string[] {
  const problems: string[] = [];
  for (const [id, job] of Object.entries(wf.workflow.jobs)) {
    const commands = commandsOfJob(job);
    if (commands.length === 0) continue;
    const stacks = stacksOfJob(job);
    const concurrency = job.concurrency;
    if (typeof concurrency !== "object") {
      problems.push(`${wf.file}: job ${id} runs Pulumi without a concurrency group`);
      continue;
    }
    const mentionsStack =
      concurrency.group.includes(expression("matrix.stack")) ||
      stacks.every((stack) => concurrency.group.includes(stack));
    if (!mentionsStack) {
      problems.push(`${wf.file}: job ${id}'s concurrency group does not name its stack`);
    }
    if (commands.includes("up") && String(concurrency["cancel-in-progress"]) !== "false") {
      problems.push(`${wf.file}: job ${id} runs pulumi up with cancel-in-progress not false`);
    }
  }
  return problems;
}

function environmentName(job: Job): string | undefined {
  return typeof job.environment === "object" ? job.environment.name : job.environment;
}

/**
 * prod is changed only by hand: the one job that runs `pulumi up` on it runs only on
 * `workflow_dispatch` and only inside the `production` environment (whose reviewers approve it).
 */
export function productionProblems(wf: WorkflowFile, prodStacks: readonly string[]): string[] {
  const problems: string[] = [];
  for (const [id, job] of Object.entries(wf.workflow.jobs)) {
    const mutates = commandsOfJob(job).some((c) => c !== "preview");
    const touchesProd = stacksOfJob(job).some((stack) => prodStacks.includes(stack));
    if (!mutates || !touchesProd) continue;
    if (environmentName(job) !== "production") {
      problems.push(
        `${wf.file}: job ${id} changes a prod stack outside the production environment`,
      );
    }
    if (!/github\.event_name\s*==\s*'workflow_dispatch'/.test(job.if ?? "")) {
      problems.push(
        `${wf.file}: job ${id} changes a prod stack without requiring workflow_dispatch`,
      );
    }
  }
  return problems;
}

/**
 * Whether a job's `if:` lets it run in `context` (dotted names to values). Understands what these
 * workflows write: comparisons with `==` and `!=` between context names and quoted strings, joined
 * by `&&`; anything else throws, so a condition this cannot read is never silently taken as true.
 */
export function jobRuns(job: Job, context: Record<string, string>): boolean {
  const condition = (job.if ?? "").replace(/^\$\{\{\s*|\s*\}\}$/g, "").trim();
  if (condition === "") return true;
  return condition.split("&&").every((clause) => {
    const match = /^\s*([\w.]+|'[^']*')\s*(==|!=)\s*([\w.]+|'[^']*')\s*$/.exec(clause);
    if (!match) throw new Error(`jobRuns: cannot read the condition clause "${clause.trim()}"`);
    const value = (operand: string) => {
      if (operand.startsWith("'")) return operand.slice(1, -1);
      const found = context[operand];
      if (found === undefined) throw new Error(`jobRuns: no value for ${operand} in the context`);
      return found;
    };
    // GitHub compares strings case-insensitively.
    const equal =
      value(match[1] as string).toLowerCase() === value(match[3] as string).toLowerCase();
    return match[2] === "==" ? equal : !equal;
  });
}
