/** The levels both services log at (pino's), and `LOG_LEVEL` and the `logLevel` setting take. */
export const logLevels = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof logLevels)[number];
