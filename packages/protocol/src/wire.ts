import { z } from "zod";
import { limits } from "./limits";

/**
 * The worker API on the wire (docs/protocol.md, "Worker routes"): the types both sides use, and
 * what the worker expects of the master's answers (docs/protocol.md, "Worker routes"), checked
 * before any of it is acted on: a master that answers something else (a bug, a version skew, a
 * proxy's error page with status 200) must not make the worker run garbage, hold more tasks than
 * it asked for, or spin. Unknown extra fields are ignored, so a newer master stays compatible.
 */

/** Thrown when an answer breaks the protocol; the worker backs off as it would from a 5xx. */
export class MasterProtocolError extends Error {
  override name = "MasterProtocolError";
}

const ref = z.string().min(1).max(limits.refMaxLength);
const leaseSeconds = z.number().min(limits.leaseSecondsMin).max(limits.leaseSecondsMax);

const leaseRefSchema = z.object({ id: ref, leaseId: ref });

const leasedTaskSchema = z.object({
  id: ref,
  leaseId: ref,
  type: z.string().min(1).max(limits.typeMaxLength),
  payload: z.unknown(),
  attempt: z.int().min(1),
  timeoutSeconds: z.int().min(1).max(limits.timeoutSeconds),
});

/** A task as the master hands it out under a lease. */
export type LeasedTask = z.infer<typeof leasedTaskSchema>;
/** A task and the lease it is held under: what renew and release name. */
export type LeaseRef = z.infer<typeof leaseRefSchema>;

/** One element of `complete`'s `results`: a task's outcome under its lease. */
export type Completion =
  | { id: string; leaseId: string; ok: true; result?: unknown }
  | { id: string; leaseId: string; ok: false; error: string; retryable: boolean };

/** Why `complete` rejected a result. */
export type RejectReason = "not_found" | "lease_lost";

const renewAnswerSchema = z.object({
  renewed: z.array(z.string()),
  lost: z.array(z.string()),
  leaseSeconds,
});
export type RenewResponse = z.infer<typeof renewAnswerSchema>;

const completeAnswerSchema = z.object({
  accepted: z.array(z.string()),
  // Reasons are read as strings: one a newer master adds must not fail the whole answer.
  rejected: z.array(z.object({ id: z.string(), reason: z.string() })),
  // The lease the request carried, read apart (readCompleteAnswer) so a broken one fails alone.
  lease: z.unknown().optional(),
});
/**
 * A `complete` answer; `lease` when the request carried one and the master leased for it (a
 * master older than the field, or a draining one, answers without it).
 */
export interface CompleteResponse {
  accepted: string[];
  rejected: { id: string; reason: string }[];
  lease?: LeaseAnswer;
}

const releaseAnswerSchema = z.object({ released: z.array(z.string()) });
export type ReleaseResponse = z.infer<typeof releaseAnswerSchema>;

function problemsOf(error: z.ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((issue) => `${issue.path.join(".") || "(answer)"}: ${issue.message}`)
    .join("; ");
}

function read<T>(route: string, schema: z.ZodType<T>, body: unknown): T {
  const parsed = schema.safeParse(body);
  if (!parsed.success) {
    throw new MasterProtocolError(
      `POST /worker/v1/${route}: unexpected answer (${problemsOf(parsed.error)})`,
    );
  }
  return parsed.data;
}

export const readRenewAnswer = (body: unknown) => read("renew", renewAnswerSchema, body);

/**
 * Checks a `complete` answer. With `leaseMax` (the request carried a lease of that many tasks) its
 * `lease` is checked as a lease answer is: the results' part stands even when the lease part is
 * broken, which then has nothing to run and names its problem.
 */
export function readCompleteAnswer(body: unknown, leaseMax?: number): CompleteResponse {
  const { lease, ...outcome } = read("complete", completeAnswerSchema, body);
  if (leaseMax === undefined || lease === undefined) return outcome;
  try {
    return { ...outcome, lease: readLeaseAnswer(lease, leaseMax) };
  } catch (error) {
    const problem = error instanceof Error ? error.message : String(error);
    return {
      ...outcome,
      lease: { tasks: [], leaseSeconds: 0, giveBack: [], problems: [problem], problemCount: 1 },
    };
  }
}
export const readReleaseAnswer = (body: unknown) => read("release", releaseAnswerSchema, body);

/** A lease answer sorted into what the worker runs and what it gives straight back. */
export interface LeaseAnswer {
  /** Well-formed tasks, at most as many as were asked for, each id once. */
  tasks: LeasedTask[];
  leaseSeconds: number;
  /**
   * Leases the worker holds now but will not run: tasks beyond what it asked for, or ones it
   * cannot read (as long as their id and lease id can be read). They go back with `release`.
   */
  giveBack: LeaseRef[];
  /** What was wrong with the answer, for one log line (the first few problems); empty if nothing. */
  problems: string[];
  /** How many problems there were in all. */
  problemCount: number;
}

const leaseEnvelopeSchema = z.object({
  tasks: z.array(z.unknown()),
  leaseSeconds: z.unknown().optional(),
});

/**
 * Checks a lease answer for a request of `max` tasks. Throws {@link MasterProtocolError} when the
 * answer is not a task list at all (nothing in it can be run or given back); otherwise keeps the
 * good tasks up to `max` and lists the rest to give back, so a broken answer costs the queue no
 * attempt and the worker holds no more than it asked for.
 */
export function readLeaseAnswer(body: unknown, max: number): LeaseAnswer {
  const envelope = read("lease", leaseEnvelopeSchema, body);
  const answer: LeaseAnswer = {
    tasks: [],
    leaseSeconds: 0,
    giveBack: [],
    problems: [],
    problemCount: 0,
  };
  const problem = (text: string) => {
    if (answer.problems.length < 3) answer.problems.push(text);
    answer.problemCount++;
  };
  const seconds = leaseSeconds.safeParse(envelope.leaseSeconds);
  if (seconds.success) answer.leaseSeconds = seconds.data;
  // Without a lease period the worker cannot know when to renew: it runs nothing of this answer.
  else problem(`leaseSeconds: ${problemsOf(seconds.error)}`);
  const seen = new Set<string>();
  let beyondMax = 0;
  envelope.tasks.forEach((item, index) => {
    const task = leasedTaskSchema.safeParse(item);
    if (!task.success) {
      const lease = leaseRefSchema.safeParse(item);
      if (lease.success) answer.giveBack.push({ id: lease.data.id, leaseId: lease.data.leaseId });
      problem(`tasks.${index}: ${problemsOf(task.error)}`);
      return;
    }
    const { id, leaseId } = task.data;
    // A second copy is not given back: releasing it would release the copy being run.
    if (seen.has(id)) {
      problem(`tasks.${index}: task ${id} appears twice`);
      return;
    }
    seen.add(id);
    if (!seconds.success || answer.tasks.length >= max) {
      if (seconds.success) beyondMax++;
      answer.giveBack.push({ id, leaseId });
      return;
    }
    answer.tasks.push(task.data);
  });
  if (beyondMax > 0) problem(`${beyondMax} tasks beyond the ${max} asked for`);
  return answer;
}
