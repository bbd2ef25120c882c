import { limits } from "@taskfleet/protocol/limits";
import { workerEnv } from "@taskfleet/protocol/worker-env";

/**
 * How bodies are checked against the schemas below, by Fastify's routes and by the worker stream:
 * wrong types are errors, not something to coerce; unknown properties are errors, not something
 * to drop silently.
 */
export const ajvOptions = {
  coerceTypes: false,
  removeAdditional: false,
  useDefaults: false,
} as const;

export const taskTypePattern = "^[a-z0-9][a-z0-9_.:-]*$";

export const taskSpecSchema = {
  type: "object",
  required: ["type", "payload"],
  additionalProperties: false,
  properties: {
    type: {
      type: "string",
      minLength: 1,
      maxLength: limits.typeMaxLength,
      pattern: taskTypePattern,
    },
    payload: {},
    idempotencyKey: { type: "string", minLength: 1, maxLength: limits.idempotencyKeyMaxLength },
    maxAttempts: { type: "integer", minimum: 1, maximum: limits.maxAttempts },
    timeoutSeconds: { type: "integer", minimum: 1, maximum: limits.timeoutSeconds },
  },
} as const;

export const batchSchema = {
  type: "object",
  required: ["tasks"],
  additionalProperties: false,
  properties: {
    tasks: { type: "array", minItems: 1, maxItems: limits.batchMaxTasks, items: taskSpecSchema },
  },
} as const;

export const taskIdParamsSchema = {
  type: "object",
  required: ["id"],
  properties: { id: { type: "string", minLength: 1, maxLength: limits.refMaxLength } },
} as const;

const workerId = { type: "string", minLength: 1, maxLength: limits.workerIdMaxLength } as const;
const ref = { type: "string", minLength: 1, maxLength: limits.refMaxLength } as const;

const leaseRefs = {
  type: "array",
  maxItems: limits.workerBatchMax,
  items: {
    type: "object",
    required: ["id", "leaseId"],
    additionalProperties: false,
    properties: { id: ref, leaseId: ref },
  },
} as const;

const leaseMax = { type: "integer", minimum: 1, maximum: limits.leaseMax } as const;
// The worker's CONCURRENCY; optional, so that workers older than the field keep working.
const slots = {
  type: "integer",
  minimum: workerEnv.CONCURRENCY.min,
  maximum: workerEnv.CONCURRENCY.max,
} as const;

export const leaseRequestSchema = {
  type: "object",
  required: ["workerId"],
  additionalProperties: false,
  properties: {
    workerId,
    max: leaseMax,
    waitMs: { type: "integer", minimum: 0, maximum: limits.leaseWaitMsMax },
    slots,
  },
} as const;

export const leaseRefsRequestSchema = {
  type: "object",
  required: ["workerId", "leases"],
  additionalProperties: false,
  properties: { workerId, leases: leaseRefs },
} as const;

export const completeRequestSchema = {
  type: "object",
  required: ["workerId", "results"],
  additionalProperties: false,
  properties: {
    workerId,
    results: {
      type: "array",
      maxItems: limits.workerBatchMax,
      items: {
        type: "object",
        required: ["id", "leaseId", "ok"],
        additionalProperties: false,
        properties: {
          id: ref,
          leaseId: ref,
          ok: { type: "boolean" },
          result: {},
          error: { type: "string" },
          retryable: { type: "boolean" },
        },
        // A failure must say what went wrong.
        if: { properties: { ok: { const: false } } },
        // biome-ignore lint/suspicious/noThenProperty: JSON Schema's if/then keyword, not a promise.
        then: { required: ["error"] },
      },
    },
    // The worker's next lease, carried by its completion (docs/protocol.md): never waits.
    lease: {
      type: "object",
      required: ["max"],
      additionalProperties: false,
      properties: { max: leaseMax, slots },
    },
  },
} as const;
