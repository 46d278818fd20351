/**
 * The logging surface a plugin receives. It is the subset of pino's API we rely on, so the host can pass
 * a pino child logger and a plugin never needs to depend on pino itself.
 */
export interface PluginLogger {
  debug(obj: object | string, msg?: string): void;
  info(obj: object | string, msg?: string): void;
  warn(obj: object | string, msg?: string): void;
  error(obj: object | string, msg?: string): void;
  child(bindings: Record<string, unknown>): PluginLogger;
}

/** A logger that drops everything; the default when a host passes none. */
export const silentLogger: PluginLogger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  child: () => silentLogger,
};
