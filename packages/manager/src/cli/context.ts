import { readFileSync } from 'node:fs';
import { createWorkspaceManagerClient, parseGoDuration } from '@workbay/api';
import type { CallOptions, ClientOptions, WorkspaceManagerClient } from '@workbay/api';
import { CliError, ExitCode } from './exit-codes.js';
import { printable, terminalSafeJson } from './printable.js';

/** Where the CLI reads and writes; `process` in real life, buffers in tests. */
export interface CliIo {
  readonly stdout: { write(text: string): unknown; readonly isTTY?: boolean };
  readonly stderr: { write(text: string): unknown; readonly isTTY?: boolean };
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Aborted on SIGINT/SIGTERM. */
  readonly signal?: AbortSignal;
}

/** The options every command shares (see `workbay --help`). */
export interface GlobalOptions {
  readonly address: string;
  readonly json: boolean;
  readonly timeout?: string;
  readonly tlsCa?: string;
  readonly tlsCert?: string;
  readonly tlsKey?: string;
  readonly tlsServerName?: string;
  /** Bearer token for a manager with `auth.tokens` (env WORKBAY_TOKEN; never a flag, which `ps` would show). */
  readonly token?: string;
}

export const defaultAddress = '127.0.0.1:7720';
/** Deadline of one call when --timeout is not given. */
const defaultCallTimeoutMs = 30_000;
/** How long --wait waits when --timeout is not given. */
const defaultWaitTimeoutMs = 10 * 60_000;

/** Per-invocation state: the options, the output, and the (lazily connected) manager client. */
export class CliContext {
  private clientInstance?: WorkspaceManagerClient;
  private readonly explicitTimeoutMs?: number;

  constructor(
    readonly io: CliIo,
    readonly options: GlobalOptions,
  ) {
    if (options.timeout !== undefined) {
      this.explicitTimeoutMs = parseGoDuration(options.timeout, '--timeout');
      if (!(this.explicitTimeoutMs > 0)) throw new CliError('--timeout must be positive', ExitCode.usage);
    }
  }

  get json(): boolean {
    return this.options.json;
  }

  get client(): WorkspaceManagerClient {
    this.clientInstance ??= createWorkspaceManagerClient(this.options.address, this.clientOptions());
    return this.clientInstance;
  }

  /** Options for one unary call: the --timeout deadline and the interrupt signal. */
  call(): CallOptions {
    return { timeoutMs: this.explicitTimeoutMs ?? defaultCallTimeoutMs, signal: this.io.signal };
  }

  /** How long a --wait may take. */
  get waitTimeoutMs(): number {
    return this.explicitTimeoutMs ?? defaultWaitTimeoutMs;
  }

  /** Text for the terminal: control characters a server's strings may carry are replaced (see printable.ts). */
  out(text: string): void {
    this.io.stdout.write(printable(text));
  }

  err(text: string): void {
    this.io.stderr.write(printable(text));
  }

  /** One JSON document (or, for streams, one line) on stdout. */
  printJson(value: unknown, pretty = true): void {
    this.io.stdout.write(`${terminalSafeJson(pretty ? JSON.stringify(value, null, 2) : JSON.stringify(value))}\n`);
  }

  close(): void {
    this.clientInstance?.close();
  }

  private clientOptions(): ClientOptions {
    const o = this.options;
    const metadata = o.token ? { metadata: { authorization: `Bearer ${o.token}` } } : {};
    if (!o.tlsCa && !o.tlsCert && !o.tlsKey) return metadata;
    const read = (file: string | undefined, flag: string): Buffer | undefined => {
      if (!file) return undefined;
      try {
        return readFileSync(file);
      } catch (error) {
        throw new CliError(`${flag}: cannot read '${file}': ${(error as Error).message}`, ExitCode.usage);
      }
    };
    return {
      ...metadata,
      tls: {
        rootCerts: read(o.tlsCa, '--tls-ca'),
        certChain: read(o.tlsCert, '--tls-cert'),
        privateKey: read(o.tlsKey, '--tls-key'),
        serverName: o.tlsServerName,
      },
    };
  }
}
