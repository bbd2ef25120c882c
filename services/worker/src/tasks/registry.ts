import { readdir } from "node:fs/promises";
import * as path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { TaskHandler } from "../task.js";

/** Task types by name. */
export type TaskRegistry = ReadonlyMap<string, TaskHandler>;

/** The folder of the built-in task files: this file's own. */
export const builtInTasksDirectory = path.dirname(fileURLToPath(import.meta.url));

/** What the worker's main thread needs of the task files: where they are and the types they define. */
export interface TaskCatalog {
  /** The folder each task thread loads the handlers from. */
  directory: string;
  /** The task types, one per file. */
  types: readonly string[];
}

/**
 * Loads the task files once in the calling thread, so a broken file stops the worker at start with
 * its name, and returns the types they define. The handlers themselves run in task threads, which
 * load the same folder (task-thread.ts).
 */
export async function loadTaskCatalog(directory = builtInTasksDirectory): Promise<TaskCatalog> {
  const registry = await loadTaskRegistry(directory);
  return { directory, types: [...registry.keys()] };
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
    registry.set(type, handler as TaskHandler);
  }
  return registry;
}
