import { isIP } from "node:net";

/**
 * How the services read their environment: each variable is declared once, here or in
 * `master-env.ts` / `worker-env.ts`, with what it allows and its default; the services parse it
 * with {@link readEnv}, and the Pulumi program names it and takes its range from the same
 * declaration. The rules are the same for every variable of both services:
 *
 * - unset: the default (or an error naming the variable, for a required one);
 * - set, even to an empty string: parsed as given, never trimmed; an integer is plain digits;
 * - a bad value: one line naming the variable, what is allowed and what was given (never the
 *   value of a secret); every bad variable is reported at once.
 */
export interface EnvVar<T> {
  /** What a set value must be, as a message finishes "NAME must be …". */
  readonly allowed: string;
  /** The value when unset; `undefined` for a variable that is required or off unless set. */
  readonly default: T | undefined;
  readonly required: boolean;
  /** A secret is never quoted in a message. */
  readonly secret: boolean;
  /** The value of a set variable, or `undefined` when it is not allowed. */
  parse(raw: string): T | undefined;
}

/** An integer variable; `min` and `max` are what the Pulumi program validates its settings by. */
export interface IntegerVar extends EnvVar<number> {
  readonly min: number;
  readonly max: number;
}

/** A service's variables by name. */
export type EnvSpec = Record<string, EnvVar<unknown>>;

/** What {@link readEnv} returns: each variable's value, `undefined` where it may be unset. */
export type EnvValues<S extends EnvSpec> = {
  [K in keyof S]: S[K] extends EnvVar<infer T>
    ? S[K]["required"] extends true
      ? T
      : S[K]["default"] extends T
        ? T
        : T | undefined
    : never;
};

/** Thrown for a bad environment; `problems` holds one line per bad variable. */
export class ConfigError extends Error {
  override name = "ConfigError";
  constructor(readonly problems: string[]) {
    super(`invalid configuration: ${problems.join("; ")}`);
  }
}

export function integer(options: {
  min: number;
  max?: number;
  default: number;
}): IntegerVar & { readonly default: number };
export function integer(options: { min: number; max?: number }): IntegerVar;
export function integer(options: { min: number; max?: number; default?: number }): IntegerVar {
  const { min, max = Number.MAX_SAFE_INTEGER } = options;
  return {
    min,
    max,
    allowed: `an integer ${max === Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `from ${min} to ${max}`}`,
    default: options.default,
    required: false,
    secret: false,
    parse(raw) {
      const value = /^[0-9]+$/.test(raw) ? Number(raw) : Number.NaN;
      return Number.isSafeInteger(value) && value >= min && value <= max ? value : undefined;
    },
  };
}

export function token<R extends boolean>(options: {
  required: R;
}): EnvVar<string> & { required: R } {
  return {
    allowed: "a non-empty string",
    default: undefined,
    required: options.required,
    secret: true,
    parse: (raw) => (raw.trim() === "" ? undefined : raw),
  };
}

export function oneOf<T extends string>(
  values: readonly T[],
  fallback: T,
): EnvVar<T> & { readonly default: T } {
  return {
    allowed: `one of ${values.join(", ")}`,
    default: fallback,
    required: false,
    secret: false,
    parse: (raw) => ((values as readonly string[]).includes(raw) ? (raw as T) : undefined),
  };
}

/** A string of at most `maxLength` characters, not blank. */
export function text(options: { maxLength: number }): EnvVar<string> {
  return {
    allowed: `a non-blank string of at most ${options.maxLength} characters`,
    default: undefined,
    required: false,
    secret: false,
    parse: (raw) => (raw.trim() === "" || raw.length > options.maxLength ? undefined : raw),
  };
}

const hostname =
  /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/;

/** An address or host name to listen on. */
export function host(): EnvVar<string> {
  return {
    allowed: "an IP address or a host name to listen on",
    default: undefined,
    required: false,
    secret: false,
    parse: (raw) => (isIP(raw) !== 0 || hostname.test(raw) ? raw : undefined),
  };
}

/** An `http://` or `https://` URL, required; read without its trailing slashes. */
export function httpUrl(): EnvVar<string> & { required: true } {
  return {
    allowed: "an http:// or https:// URL",
    default: undefined,
    required: true,
    secret: false,
    parse(raw) {
      const url = parseUrl(raw);
      if (url === undefined) return undefined;
      if (url.protocol !== "http:" && url.protocol !== "https:") return undefined;
      return url.href.replace(/\/+$/, "");
    },
  };
}

/**
 * A Redis URL: `redis://` or `rediss://` (TLS), a host, optionally a port, an ACL user name and a
 * database number (`/0` to `/15`); normalized to `protocol//[user@]host:port/db`. A password is
 * refused (it belongs in a secret variable of its own), and since a URL may carry one by mistake,
 * a bad value is never quoted.
 */
export function redisUrl(): EnvVar<string> {
  return {
    allowed:
      "a redis:// or rediss:// URL with a host and no password (redis[s]://[user@]host[:port][/db], db 0-15)",
    default: undefined,
    required: false,
    secret: true,
    parse(raw) {
      const url = parseUrl(raw);
      if (url === undefined) return undefined;
      if (url.protocol !== "redis:" && url.protocol !== "rediss:") return undefined;
      if (url.hostname === "" || url.password !== "" || url.search !== "" || url.hash !== "") {
        return undefined;
      }
      const db = url.pathname === "" || url.pathname === "/" ? "0" : url.pathname.slice(1);
      if (!/^(?:[0-9]|1[0-5])$/.test(db)) return undefined;
      const user = url.username === "" ? "" : `${url.username}@`;
      return `${url.protocol}//${user}${url.hostname}:${url.port || "6379"}/${db}`;
    },
  };
}

/** `raw` as a URL, or undefined when it is not one. */
function parseUrl(raw: string): URL | undefined {
  try {
    return new URL(raw);
  } catch {
    return undefined;
  }
}

/**
 * Reads every variable of `spec` from `env`. Throws a {@link ConfigError} listing every bad
 * variable at once, so a misconfigured pod says everything wrong in its first log lines.
 */
export function readEnv<S extends EnvSpec>(
  spec: S,
  env: Readonly<Record<string, string | undefined>>,
): EnvValues<S> {
  const values: Record<string, unknown> = {};
  const problems: string[] = [];
  for (const [name, variable] of Object.entries(spec)) {
    const raw = env[name];
    if (raw === undefined) {
      if (variable.required) problems.push(`${name} must be set to ${variable.allowed}`);
      values[name] = variable.default;
      continue;
    }
    const value = variable.parse(raw);
    if (value === undefined) {
      const given = variable.secret ? "" : ` (got ${JSON.stringify(raw)})`;
      problems.push(`${name} must be ${variable.allowed}${given}`);
    }
    values[name] = value;
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return values as EnvValues<S>;
}

/**
 * Writes a {@link ConfigError}'s problems to stderr as JSON lines of the shape the services' logs
 * have (the logger is not built yet when the environment is read).
 */
export function writeConfigProblems(service: string, error: ConfigError): void {
  for (const problem of error.problems) {
    process.stderr.write(
      `${JSON.stringify({ level: "fatal", time: Date.now(), service, msg: `invalid configuration: ${problem}` })}\n`,
    );
  }
}
