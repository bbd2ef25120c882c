/**
 * Parses a JSON request body. Payloads are stored and handed on to workers, so keys that poison
 * prototypes when some later code merges objects (`__proto__`, `constructor.prototype`) are
 * refused here, as Fastify's own parser would. The walk runs only when the raw text holds such a
 * key, so ordinary bodies cost one `JSON.parse` and two substring searches.
 */
export function parseJsonBody(text: string): { value: unknown } | { problem: string } {
  if (text.length === 0) return { problem: "body is empty but content-type is application/json" };
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return { problem: `body is not valid JSON: ${error instanceof Error ? error.message : error}` };
  }
  if (text.includes('"__proto__"') || text.includes('"constructor"')) {
    const at = findPoisonedKey(value, "body");
    if (at !== undefined) return { problem: `${at} is not an allowed key` };
  }
  return { value };
}

function findPoisonedKey(value: unknown, path: string): string | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = findPoisonedKey(value[i], `${path}/${i}`);
      if (found !== undefined) return found;
    }
    return undefined;
  }
  if (Object.hasOwn(value, "__proto__")) return `${path}/__proto__`;
  const record = value as Record<string, unknown>;
  const ctor = Object.hasOwn(value, "constructor") ? record.constructor : undefined;
  if (typeof ctor === "object" && ctor !== null && Object.hasOwn(ctor, "prototype")) {
    return `${path}/constructor/prototype`;
  }
  for (const key of Object.keys(record)) {
    const found = findPoisonedKey(record[key], `${path}/${key}`);
    if (found !== undefined) return found;
  }
  return undefined;
}
