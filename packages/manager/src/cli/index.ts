/**
 * The `workbay` CLI as a library: {@link runCli} runs it with given arguments and I/O, for embedding and tests.
 *
 * @module
 */
export { runCli, buildProgram, defaultOwner } from './program.js';
export type { Action, ActionWrapper } from './program.js';
export { CliContext, defaultAddress } from './context.js';
export type { CliIo, GlobalOptions } from './context.js';
export { ExitCode, CliError, exitCodeFor } from './exit-codes.js';
export { buildStartRequest, parsePortFlag, parseEnvFlag } from './start-request.js';
export type { StartFlags } from './start-request.js';
