import { readdir } from "node:fs/promises";
import * as path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { type TaskHandler, taskIsolations } from "../task.js";

/** Task types by name. */
export type TaskRegistry = ReadonlyMap<string, TaskHandler>;

/** The folder of the built-in task files: this file's own. */
export const builtInTasksDirectory = path.dirname(fileURLToPath(import.meta.url));

/** What the worker's main thread needs of the task files. */
export interface TaskCatalog {
  /** The folder each task thread loads the handlers from. */
  directory: string;
  /** The task types, one per file. */
  types: readonly string[];
  /** The handlers of the types declared `isolation: "inline"`, which the main thread runs. */
  inline: TaskRegistry;
}

/**
 * Loads the task files once in the calling thread, so a broken file stops the worker at start with
 * its name, and returns the types they define. Handlers run in task threads, which load the same
 * folder (task-thread.ts), except those declared `inline`: the catalog keeps these.
 */
export async function loadTaskCatalog(directory = builtInTasksDirectory): Promise<TaskCatalog> {
  const registry = await loadTaskRegistry(directory);
  const inline = new Map([...registry].filter(([, handler]) => handler.isolation === "inline"));
  return { directory, types: [...registry.keys()], inline };
}

const typePattern = /^[a-z0-9][a-z0-9_.-]*$/;

/**
 * Loads every task handler in `directory` (by default, this file's own folder): each file
 * default-exports one handler, and the file's name is the task type, so adding a task type is
 * adding a file. Files whose name starts with `_`, this registry, tests and type declarations are
 * skipped. Only files with this module's own extension count (`.js` when built, `.ts` under tsx),
 * so a stale build output next to the sources is never loaded twice.
 */
export async function loadTaskRegistry(directory = builtInTasksDirectory): Promise<TaskRegistry> {
  const ownFile = path.basename(fileURLToPath(import.meta.url));
  const extension = path.extname(ownFile);
  const registry = new Map<string, TaskHandler>();
  const files = (await readdir(directory)).sort();
  for (const file of files) {
    if (path.extname(file) !== extension || file === ownFile) continue;
    if (file.startsWith("_") || file.endsWith(`.d${extension}`) || file.includes(".test.")) {
      continue;
    }
    const type = path.basename(file, extension);
    if (!typePattern.test(type)) {
      throw new Error(
        `task file ${file}: its name is the task type and must match ${typePattern} (lower case)`,
      );
    }
    const module = (await import(pathToFileURL(path.join(directory, file)).href)) as {
      default?: Partial<TaskHandler>;
    };
    const handler = module.default;
    if (
      !handler ||
      typeof handler.run !== "function" ||
      typeof handler.payload?.safeParse !== "function"
    ) {
      throw new Error(
        `task file ${file} must default-export defineTask({ payload: <zod schema>, run(payload, context) })`,
      );
    }
    if (
      handler.isolation !== undefined &&
      !(taskIsolations as readonly unknown[]).includes(handler.isolation)
    ) {
      throw new Error(
        `task file ${file}: isolation must be ${taskIsolations.map((name) => `"${name}"`).join(" or ")} (got ${JSON.stringify(handler.isolation)})`,
      );
    }
    registry.set(type, handler as TaskHandler);
  }
  return registry;
}
