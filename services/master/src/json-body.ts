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
    const at = findPoisonedKey(value);
    if (at !== undefined) return { problem: `${at} is not an allowed key` };
  }
  return { value };
}

/** One object or array on the walk, with the way back to the root for naming a path. */
interface Frame {
  value: object;
  parent: Frame | undefined;
  key: string;
}

/**
 * The path of the first poisoned key in document order, or `undefined`. `JSON.parse` builds
 * values thousands of levels deep without complaint, so this walk keeps its own stack rather
 * than recursing: a deep body must not overflow the call stack (it used to, answering 500).
 */
function findPoisonedKey(root: unknown): string | undefined {
  if (typeof root !== "object" || root === null) return undefined;
  const stack: Frame[] = [{ value: root, parent: undefined, key: "body" }];
  for (let frame = stack.pop(); frame !== undefined; frame = stack.pop()) {
    const value = frame.value;
    if (Array.isArray(value)) {
      // Pushed last to first, so that they are popped (and reported) in document order.
      for (let i = value.length - 1; i >= 0; i--) {
        const item: unknown = value[i];
        if (typeof item === "object" && item !== null) {
          stack.push({ value: item, parent: frame, key: String(i) });
        }
      }
      continue;
    }
    if (Object.hasOwn(value, "__proto__")) return pathOf(frame, "__proto__");
    const record = value as Record<string, unknown>;
    const ctor = Object.hasOwn(value, "constructor") ? record.constructor : undefined;
    if (typeof ctor === "object" && ctor !== null && Object.hasOwn(ctor, "prototype")) {
      return pathOf(frame, "constructor/prototype");
    }
    const keys = Object.keys(record);
    for (let i = keys.length - 1; i >= 0; i--) {
      const key = keys[i] as string;
      const item = record[key];
      if (typeof item === "object" && item !== null) {
        stack.push({ value: item, parent: frame, key });
      }
    }
  }
  return undefined;
}

function pathOf(frame: Frame, last: string): string {
  const keys = [last];
  for (let at: Frame | undefined = frame; at !== undefined; at = at.parent) keys.push(at.key);
  keys.reverse();
  // A key thousands of levels down would make a message of tens of kilobytes; the start says
  // which field it is in, the end which key it is.
  if (keys.length <= PATH_KEYS_SHOWN) return keys.join("/");
  const head = keys.slice(0, PATH_KEYS_SHOWN - 3).join("/");
  return `${head}/…${keys.length - PATH_KEYS_SHOWN + 1} more…/${keys.slice(-2).join("/")}`;
}

const PATH_KEYS_SHOWN = 12;

/**
 * What the parts of a parsed JSON value take on the V8 heap, measured on Node 22 (64-bit, no
 * pointer compression) and rounded up where V8 sometimes shares: every array element and object
 * property takes a slot; an object its header, and 32 bytes more when empty (`JSON.parse` leaves
 * room for properties); an array its header and its backing store's; a string its header and a
 * byte per character (two past U+00FF); a number a box unless it is a small integer or in an
 * array of numbers only; each distinct set of keys a hidden class and the keys themselves; and an
 * object of more than a thousand keys, which V8 keeps as a hash table, more per key. JSON's own
 * size undercounts by up to 20 times for shapes like `[{},{},…]`, which would let a payload of
 * 1 MB take 20 MB. services/master/test/memory.test.ts holds these to measurements.
 */
export const HEAP_BYTES = {
  slot: 8,
  object: 24,
  emptyObject: 32,
  array: 32,
  elements: 16,
  string: 24,
  number: 16,
  shape: 96,
  key: 56,
  dictionaryKey: 80,
} as const;

/** Past this many keys V8 keeps an object as a hash table (its descriptor limit is 1,020). */
const DICTIONARY_KEYS = 1000;

/**
 * An estimate of the heap `value` takes (see {@link HEAP_BYTES}), or `undefined` when arrays
 * and objects nest in it more than `maxDepth` levels (a scalar is level 0, `[]` level 1, `[[]]`
 * level 2). Iterative for the same reason as the walk above, and it stops at the first
 * container past the limit.
 */
export function measureHeap(value: unknown, maxDepth: number): number | undefined {
  let bytes = HEAP_BYTES.slot + scalarHeapBytes(value);
  if (typeof value !== "object" || value === null) return bytes;
  const shapes = new Set<string>();
  const containers: object[] = [value];
  const depths: number[] = [1];
  for (let item = containers.pop(); item !== undefined; item = containers.pop()) {
    const depth = depths.pop() as number;
    if (depth > maxDepth) return undefined;
    let children: unknown[];
    if (Array.isArray(item)) {
      bytes += HEAP_BYTES.array + (item.length > 0 ? HEAP_BYTES.elements : 0);
      // An array of numbers only keeps them unboxed, a slot each.
      if (item.every((element) => typeof element === "number")) {
        bytes += HEAP_BYTES.slot * item.length;
        continue;
      }
      children = item;
    } else {
      const keys = Object.keys(item);
      bytes += HEAP_BYTES.object + (keys.length === 0 ? HEAP_BYTES.emptyObject : 0);
      if (keys.length > DICTIONARY_KEYS) {
        for (const key of keys) bytes += HEAP_BYTES.dictionaryKey + stringBytes(key);
      } else {
        // Objects with the same keys share a hidden class; a set of keys seen first costs one.
        const shape = keys.join(",");
        if (!shapes.has(shape)) {
          shapes.add(shape);
          bytes += HEAP_BYTES.shape;
          for (const key of keys) bytes += HEAP_BYTES.key + stringBytes(key);
        }
      }
      children = keys.map((key) => (item as Record<string, unknown>)[key]);
    }
    for (const child of children) {
      bytes += HEAP_BYTES.slot;
      if (typeof child === "object" && child !== null) {
        containers.push(child);
        depths.push(depth + 1);
      } else {
        bytes += scalarHeapBytes(child);
      }
    }
  }
  return bytes;
}

function scalarHeapBytes(value: unknown): number {
  if (typeof value === "string") {
    return value.length === 0 ? 0 : HEAP_BYTES.string + stringBytes(value);
  }
  if (typeof value === "number") return isSmallInteger(value) ? 0 : HEAP_BYTES.number;
  return 0;
}

/** Integers V8 keeps in the slot itself rather than in a box. */
function isSmallInteger(value: number): boolean {
  return Number.isInteger(value) && value >= -(2 ** 30) && value < 2 ** 30;
}

const pastLatin1 = /[\u0100-\uffff]/;

function stringBytes(text: string): number {
  return pastLatin1.test(text) ? 2 * text.length : text.length;
}

/**
 * The size of a value as the master sends it on (lease answers, task reads): UTF-8 bytes of its
 * JSON. Call it only on a value already known not to nest too deep, since `JSON.stringify`
 * recurses.
 */
export function jsonBytes(value: unknown): number {
  return Buffer.byteLength(JSON.stringify(value === undefined ? null : value));
}
