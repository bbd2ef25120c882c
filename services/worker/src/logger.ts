import type { LogLevel } from "@taskfleet/protocol/log-levels";
import { type DestinationStream, type Logger, pino } from "pino";

export type { Logger };

/** The worker's JSON logger; `destination` defaults to stdout (tests pass their own stream). */
export function createLogger(
  level: LogLevel,
  bindings: Record<string, unknown> = {},
  destination?: DestinationStream,
): Logger {
  const options = {
    level,
    base: { service: "taskfleet-worker", ...bindings },
    // Level names, as the master writes them: one log pipeline reads both services alike.
    formatters: { level: (label: string) => ({ level: label }) },
  };
  return destination ? pino(options, destination) : pino(options);
}
