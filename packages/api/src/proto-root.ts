import { fileURLToPath } from 'node:url';

/**
 * Absolute path of the directory holding this package's `.proto` files (shipped with the package), for tools
 * and tests that load the contracts at run time, e.g. protobufjs or `@grpc/proto-loader` with
 * `includeDirs: [protoRoot]`.
 */
export const protoRoot: string = fileURLToPath(new URL('../proto/', import.meta.url));

/** The contract files, relative to {@link protoRoot}. */
export const protoFiles = Object.freeze({
  contentservice: 'contentservice/initializer.proto',
  wsman: 'wsman/core.proto',
  wsdaemon: 'wsdaemon/daemon.proto',
  iws: 'iws/workspace_daemon.proto',
} as const);
