#!/usr/bin/env node
/**
 * The `workbay` command. See `workbay --help`, and {@link ExitCode} for what its exit status means.
 * SIGINT/SIGTERM abort the running command (a wait stops, `up` shuts down cleanly); a second one exits at once.
 */
import { ExitCode } from './exit-codes.js';
import { runCli } from './program.js';

// A reader that went away (`workbay --help | head`) is no failure of ours: what is left to print is dropped, and the
// command runs to its end. Any other write error still ends the process, as it did.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE') throw error;
  });
}

const controller = new AbortController();
const onSignal = (signal: NodeJS.Signals): void => {
  if (controller.signal.aborted) process.exit(ExitCode.interrupted);
  controller.abort(new Error(`received ${signal}`));
};
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);

const code = await runCli(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  signal: controller.signal,
});
process.exitCode = code;
// Long-lived handles (gRPC channels, servers) are closed by now; make sure nothing keeps us alive.
setTimeout(() => process.exit(code), 1000).unref();
