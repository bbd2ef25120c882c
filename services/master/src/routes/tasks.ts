import { limits } from "@taskfleet/protocol/limits";
import type { FastifyInstance, FastifyReply } from "fastify";
import { requireBearer } from "../auth.js";
import { errorBody, unavailable } from "../http-errors.js";
import {
  StoreFullError,
  type TaskSpec,
  type TaskStore,
  type TaskView,
} from "../store/task-store.js";
import { abortWhenClientLeaves } from "./abort.js";
import { measureValue } from "./payload-limits.js";
import { batchSchema, taskIdParamsSchema, taskSpecSchema } from "./schemas.js";

export interface TaskRoutesOptions {
  store: TaskStore;
  apiToken: string | undefined;
  /** Applied to tasks that do not set `maxAttempts`. */
  defaultMaxAttempts: number;
  /** Applied to tasks that do not set `timeoutSeconds`. */
  defaultTimeoutSeconds: number;
  /** The largest payload as JSON bytes (see `maxPayloadBytes`). */
  maxPayloadBytes: number;
}

interface TaskSpecBody {
  type: string;
  payload: unknown;
  idempotencyKey?: string;
  maxAttempts?: number;
  timeoutSeconds?: number;
}

/** The public API, mounted under `/v1`. */
export async function taskRoutes(app: FastifyInstance, options: TaskRoutesOptions): Promise<void> {
  const { store } = options;
  if (options.apiToken !== undefined) app.addHook("onRequest", requireBearer(options.apiToken));

  /** The spec to store, or a message naming the first limit the payload breaks. */
  const toSpec = (body: TaskSpecBody, field: string): TaskSpec | string => {
    const measured = measureValue(body.payload, field, options.maxPayloadBytes);
    if ("problem" in measured) return measured.problem;
    return {
      type: body.type,
      payload: body.payload,
      payloadBytes: measured.bytes,
      payloadMemoryBytes: measured.memoryBytes,
      idempotencyKey: body.idempotencyKey,
      maxAttempts: body.maxAttempts ?? options.defaultMaxAttempts,
      timeoutSeconds: body.timeoutSeconds ?? options.defaultTimeoutSeconds,
    };
  };

  /** Runs `submit`, or answers 503 when the store is shutting down or full: `undefined` then. */
  const submitOrRefuse = async <T>(
    reply: FastifyReply,
    submit: () => Promise<T>,
  ): Promise<T | undefined> => {
    // A task in a shared store is safe whatever happens to this master, so a draining master
    // still takes it (closing the connection, so the client's next request goes elsewhere): a
    // rolling update then costs clients nothing.
    if (store.draining && !store.shared) {
      unavailable(reply, "the master is shutting down and accepts no new tasks");
      return undefined;
    }
    try {
      return await submit();
    } catch (error) {
      if (!(error instanceof StoreFullError)) throw error;
      unavailable(reply, `${error.message}; try again later`);
      return undefined;
    }
  };

  app.post<{ Body: TaskSpecBody; Querystring: { waitSeconds?: string } }>(
    "/tasks",
    { schema: { body: taskSpecSchema } },
    async (request, reply) => {
      // Checked before anything is stored: a bad query must not leave a task behind.
      const waitSeconds = parseWaitSeconds(request.query.waitSeconds);
      if (typeof waitSeconds === "string") {
        return reply.code(400).send(errorBody(400, waitSeconds));
      }
      const spec = toSpec(request.body, "body/payload");
      if (typeof spec === "string") return reply.code(400).send(errorBody(400, spec));
      // With waitSeconds, submit and wait in one request: the task as
      // `GET /v1/tasks/:id?waitSeconds=` answers it, which saves the client a round trip per task
      // (docs/api.md). Without, the task is not read back.
      const submitted = await submitOrRefuse(reply, () =>
        waitSeconds === 0
          ? store.submit([spec]).then(([outcome]) => ({ outcome, task: undefined }))
          : store.submitAndWait(spec, waitSeconds * 1000, abortWhenClientLeaves(reply)),
      );
      if (submitted === undefined) return reply;
      const { outcome, task } = submitted;
      if (outcome === undefined) throw new Error("store returned no outcome for a submitted task");
      reply.code(outcome.created ? 202 : 200);
      return task === undefined ? { id: outcome.id, status: outcome.status } : present(task);
    },
  );

  app.post<{ Body: { tasks: TaskSpecBody[] } }>(
    "/tasks/batch",
    { schema: { body: batchSchema } },
    async (request, reply) => {
      const specs: TaskSpec[] = [];
      for (const [i, body] of request.body.tasks.entries()) {
        const spec = toSpec(body, `body/tasks/${i}/payload`);
        if (typeof spec === "string") return reply.code(400).send(errorBody(400, spec));
        specs.push(spec);
      }
      const outcomes = await submitOrRefuse(reply, () => store.submit(specs));
      if (outcomes === undefined) return reply;
      reply.code(202);
      return { ids: outcomes.map((outcome) => outcome.id) };
    },
  );

  app.get<{ Params: { id: string }; Querystring: { waitSeconds?: string } }>(
    "/tasks/:id",
    { schema: { params: taskIdParamsSchema } },
    async (request, reply) => {
      const waitSeconds = parseWaitSeconds(request.query.waitSeconds);
      if (typeof waitSeconds === "string") {
        return reply.code(400).send(errorBody(400, waitSeconds));
      }
      const { id } = request.params;
      const task =
        waitSeconds > 0
          ? await store.waitForFinish(id, waitSeconds * 1000, abortWhenClientLeaves(reply))
          : await store.get(id);
      if (task === undefined) {
        return reply.code(404).send(errorBody(404, `task ${JSON.stringify(id)} does not exist`));
      }
      return present(task);
    },
  );

  app.get("/stats", async () => store.stats());
}

/** The number of seconds to wait, or a message saying why the value is not allowed. */
function parseWaitSeconds(raw: string | string[] | undefined): number | string {
  if (raw === undefined) return 0;
  const value = typeof raw === "string" && /^[0-9]{1,5}$/.test(raw) ? Number(raw) : Number.NaN;
  if (!(value <= limits.waitSecondsMax)) {
    return `querystring/waitSeconds must be an integer from 0 to ${limits.waitSecondsMax} (got ${JSON.stringify(raw)})`;
  }
  return value;
}

/** A task as `GET /v1/tasks/:id` answers it (docs/api.md): the store's view with ISO-8601 times. */
export interface TaskResponse extends Omit<TaskView, "createdAt" | "startedAt" | "finishedAt"> {
  createdAt: string;
  startedAt?: string;
  finishedAt?: string;
}

/** The API shows times as ISO-8601 strings; the store keeps milliseconds. */
function present(task: TaskView): TaskResponse {
  return {
    id: task.id,
    type: task.type,
    status: task.status,
    attempts: task.attempts,
    ...(task.status === "succeeded" ? { result: task.result } : {}),
    ...(task.error !== undefined ? { error: task.error } : {}),
    createdAt: new Date(task.createdAt).toISOString(),
    ...(task.startedAt !== undefined ? { startedAt: new Date(task.startedAt).toISOString() } : {}),
    ...(task.finishedAt !== undefined
      ? { finishedAt: new Date(task.finishedAt).toISOString() }
      : {}),
  };
}
