/**
 * Typed, promise-based gRPC clients for the Workbay services.
 *
 * Every RPC of a service becomes a method of the client:
 * - unary calls return a `Promise` of the response;
 * - server-streaming calls return a {@link ServerStream} (an async iterable), and additionally have an RxJS
 *   variant with a `$` suffix (`subscribe$`) that returns an `Observable`.
 *
 * Requests are partial messages: unset fields take their proto defaults. Failures reject (or throw, or error)
 * with the matching {@link WorkbayError} subclass (see `fromGrpcError`), never with a raw grpc-js error.
 * Every call accepts a deadline (`deadline` or `timeoutMs`) and an `AbortSignal`.
 *
 * @module
 */
import { Client, Metadata, credentials as grpcCredentials } from '@grpc/grpc-js';
import type {
  CallOptions as GrpcCallOptions,
  ChannelCredentials,
  ClientOptions as GrpcClientOptions,
  ClientReadableStream,
} from '@grpc/grpc-js';
import { Observable } from 'rxjs';
import { CancelledError, DeadlineExceededError, InvalidArgumentError, fromGrpcError } from './errors.js';
import type { WorkbayError } from './errors.js';
import * as iws from './generated/iws/workspace_daemon.js';
import * as wsdaemon from './generated/wsdaemon/daemon.js';
import * as wsman from './generated/wsman/core.js';

// ---------------------------------------------------------------------------------------------------------------
// Options

/** TLS settings. With `privateKey` and `certChain` the client authenticates itself too (mutual TLS). */
export interface TlsOptions {
  /** PEM CA certificates to trust; the system roots when unset. */
  readonly rootCerts?: Buffer | string;
  /** PEM private key of the client certificate (mutual TLS). */
  readonly privateKey?: Buffer | string;
  /** PEM client certificate chain (mutual TLS). */
  readonly certChain?: Buffer | string;
  /** Host name to verify the server certificate against, when it differs from the address. */
  readonly serverName?: string;
}

export interface ClientOptions {
  /** Ready-made channel credentials; take precedence over `tls`. */
  readonly credentials?: ChannelCredentials;
  /** Use TLS (or mutual TLS). Without this and without `credentials`, the channel is insecure (plaintext). */
  readonly tls?: TlsOptions;
  /** Metadata sent with every call (e.g. an authorization header). */
  readonly metadata?: Readonly<Record<string, string>>;
  /** Deadline for unary calls that set none themselves, in milliseconds. Streams have no default deadline. */
  readonly defaultTimeoutMs?: number;
  /** Raw grpc-js channel options (keepalive, message sizes, ...). */
  readonly channelOptions?: Partial<GrpcClientOptions>;
}

export interface CallOptions {
  /** Absolute deadline: a `Date` or epoch milliseconds. Wins over `timeoutMs`. */
  readonly deadline?: Date | number;
  /** Relative deadline in milliseconds from the start of the call. */
  readonly timeoutMs?: number;
  /** Cancels the call when aborted; the call then fails with {@link CancelledError}. */
  readonly signal?: AbortSignal;
  /** Metadata for this call, merged over the client's. */
  readonly metadata?: Readonly<Record<string, string>> | Metadata;
}

/** The channel credentials that `options` describe: insecure by default, TLS or mutual TLS with `tls`. */
export function createChannelCredentials(options: Pick<ClientOptions, 'credentials' | 'tls'> = {}): ChannelCredentials {
  if (options.credentials) return options.credentials;
  const tls = options.tls;
  if (!tls) return grpcCredentials.createInsecure();
  if ((tls.privateKey === undefined) !== (tls.certChain === undefined)) {
    throw new InvalidArgumentError('tls', 'privateKey and certChain must be given together (mutual TLS)');
  }
  const buffer = (value: Buffer | string | undefined): Buffer | null =>
    value === undefined ? null : Buffer.isBuffer(value) ? value : Buffer.from(value);
  return grpcCredentials.createSsl(buffer(tls.rootCerts), buffer(tls.privateKey), buffer(tls.certChain));
}

// ---------------------------------------------------------------------------------------------------------------
// Typing

/** The shape of a ts-proto grpc-js method definition. */
export interface MethodDefinitionLike {
  readonly path: string;
  readonly requestStream: boolean;
  readonly responseStream: boolean;
  // Method syntax on purpose: bivariant parameters let concrete definitions match.
  requestSerialize(value: never): Buffer;
  responseDeserialize(value: Buffer): unknown;
}

/** The shape of a ts-proto grpc-js service definition. */
export type ServiceDefinitionLike = Readonly<Record<string, MethodDefinitionLike>>;

type RequestOf<M> = M extends { requestSerialize(value: infer R): Buffer } ? R : never;
type ResponseOf<M> = M extends { responseDeserialize(value: Buffer): infer R } ? R : never;

/** For each method, the ts-proto message functions of its request (`fromPartial` fills in defaults). */
export type RequestCodecs<S extends ServiceDefinitionLike> = {
  readonly [K in keyof S]: { fromPartial(object: never): RequestOf<S[K]> };
};

type RequestInput<C> = C extends { fromPartial(object: infer P): unknown } ? P : never;

type StreamingKeys<S extends ServiceDefinitionLike> = {
  [K in keyof S]: S[K]['responseStream'] extends true ? K : never;
}[keyof S];

/** A server stream: iterate it with `for await`; leaving the loop early cancels the call. */
export interface ServerStream<T> extends AsyncIterable<T> {
  /** Cancels the call; a running iteration ends with {@link CancelledError}. */
  cancel(): void;
}

/** Methods every typed client has besides its RPCs. */
export interface ClientLifecycle {
  /** The address the client was created for. */
  readonly address: string;
  /** Resolves once the channel is connected; rejects with `DeadlineExceededError` after `deadline`. */
  waitForReady(deadline?: Date | number): Promise<void>;
  /** Closes the channel. Calls still running fail. */
  close(): void;
}

/** A typed client for service `S` whose requests are normalised by the codecs `C`. */
export type TypedClient<S extends ServiceDefinitionLike, C extends RequestCodecs<S>> = {
  readonly [K in keyof S]: S[K]['responseStream'] extends true
    ? (request?: RequestInput<C[K]>, options?: CallOptions) => ServerStream<ResponseOf<S[K]>>
    : (request?: RequestInput<C[K]>, options?: CallOptions) => Promise<ResponseOf<S[K]>>;
} & {
  readonly [K in StreamingKeys<S> as `${K & string}$`]: (
    request?: RequestInput<C[K]>,
    options?: CallOptions,
  ) => Observable<ResponseOf<S[K]>>;
} & ClientLifecycle;

// ---------------------------------------------------------------------------------------------------------------
// Request codecs per service. `satisfies` makes a new RPC fail compilation until it is listed here.

const workspaceManagerRequests = {
  getWorkspaces: wsman.GetWorkspacesRequest,
  startWorkspace: wsman.StartWorkspaceRequest,
  stopWorkspace: wsman.StopWorkspaceRequest,
  describeWorkspace: wsman.DescribeWorkspaceRequest,
  backupWorkspace: wsman.BackupWorkspaceRequest,
  subscribe: wsman.SubscribeRequest,
  markActive: wsman.MarkActiveRequest,
  setTimeout: wsman.SetTimeoutRequest,
  controlPort: wsman.ControlPortRequest,
  takeSnapshot: wsman.TakeSnapshotRequest,
  controlAdmission: wsman.ControlAdmissionRequest,
  deleteVolumeSnapshot: wsman.DeleteVolumeSnapshotRequest,
  updateSshKey: wsman.UpdateSSHKeyRequest,
  describeCluster: wsman.DescribeClusterRequest,
} as const satisfies RequestCodecs<wsman.WorkspaceManagerService>;

const workspaceContentRequests = {
  initWorkspace: wsdaemon.InitWorkspaceRequest,
  waitForInit: wsdaemon.WaitForInitRequest,
  isWorkspaceExists: wsdaemon.IsWorkspaceExistsRequest,
  takeSnapshot: wsdaemon.TakeSnapshotRequest,
  disposeWorkspace: wsdaemon.DisposeWorkspaceRequest,
  backupWorkspace: wsdaemon.BackupWorkspaceRequest,
  deleteSnapshot: wsdaemon.DeleteSnapshotRequest,
  initProgress: wsdaemon.InitProgressRequest,
} as const satisfies RequestCodecs<wsdaemon.WorkspaceContentServiceService>;

const inWorkspaceRequests = {
  prepareForUserNs: iws.PrepareForUserNSRequest,
  writeIdMapping: iws.WriteIDMappingRequest,
  evacuateCGroup: iws.EvacuateCGroupRequest,
  mountProc: iws.MountProcRequest,
  umountProc: iws.UmountProcRequest,
  mountSysfs: iws.MountProcRequest,
  umountSysfs: iws.UmountProcRequest,
  mountNfs: iws.MountNfsRequest,
  umountNfs: iws.UmountNfsRequest,
  teardown: iws.TeardownRequest,
  wipingTeardown: iws.WipingTeardownRequest,
  setupPairVeths: iws.SetupPairVethsRequest,
  workspaceInfo: iws.WorkspaceInfoRequest,
} as const satisfies RequestCodecs<iws.InWorkspaceServiceService>;

const workspaceInfoRequests = {
  workspaceInfo: iws.WorkspaceInfoRequest,
} as const satisfies RequestCodecs<iws.WorkspaceInfoServiceService>;

/** Typed client of `wsman.WorkspaceManager`. */
export type WorkspaceManagerClient = TypedClient<wsman.WorkspaceManagerService, typeof workspaceManagerRequests>;
/** Typed client of `wsdaemon.WorkspaceContentService`. */
export type WorkspaceContentClient = TypedClient<
  wsdaemon.WorkspaceContentServiceService,
  typeof workspaceContentRequests
>;
/** Typed client of `iws.InWorkspaceService`. */
export type InWorkspaceClient = TypedClient<iws.InWorkspaceServiceService, typeof inWorkspaceRequests>;
/** Typed client of `iws.WorkspaceInfoService`. */
export type WorkspaceInfoClient = TypedClient<iws.WorkspaceInfoServiceService, typeof workspaceInfoRequests>;

/**
 * Client of the workspace manager. `address` is `host:port` or `unix:///path/to.sock`.
 *
 * @example
 * const manager = createWorkspaceManagerClient('127.0.0.1:7720');
 * const { status } = await manager.describeWorkspace({ id }, { timeoutMs: 5_000 });
 */
/**
 * Answers a manager client accepts by default: GetWorkspaces lists every workspace the manager knows (the stopped
 * ones for a while too, each with its bounded git status), which on a busy manager passes grpc-js's 4 MiB default.
 */
const workspaceManagerMaxReceiveBytes = 64 * 1024 * 1024;

export function createWorkspaceManagerClient(address: string, options?: ClientOptions): WorkspaceManagerClient {
  return createTypedClient(wsman.WorkspaceManagerService, workspaceManagerRequests, address, {
    ...options,
    channelOptions: {
      'grpc.max_receive_message_length': workspaceManagerMaxReceiveBytes,
      ...options?.channelOptions,
    },
  });
}

/** Client of the workspace daemon's content service. */
export function createWorkspaceContentClient(address: string, options?: ClientOptions): WorkspaceContentClient {
  return createTypedClient(wsdaemon.WorkspaceContentServiceService, workspaceContentRequests, address, options);
}

/** Client of the in-workspace daemon service (usually `unix:///.../daemon.sock`). */
export function createInWorkspaceClient(address: string, options?: ClientOptions): InWorkspaceClient {
  return createTypedClient(iws.InWorkspaceServiceService, inWorkspaceRequests, address, options);
}

/** Client of the workspace info service. */
export function createWorkspaceInfoClient(address: string, options?: ClientOptions): WorkspaceInfoClient {
  return createTypedClient(iws.WorkspaceInfoServiceService, workspaceInfoRequests, address, options);
}

// ---------------------------------------------------------------------------------------------------------------
// Implementation

interface ResolvedCall {
  readonly metadata: Metadata;
  readonly grpcOptions: Partial<GrpcCallOptions>;
  readonly signal: AbortSignal | undefined;
}

/**
 * Builds a typed client for any ts-proto grpc-js service definition. The `create*Client` functions are thin
 * wrappers around this; use it directly for services defined outside this package.
 */
export function createTypedClient<S extends ServiceDefinitionLike, C extends RequestCodecs<S>>(
  service: S,
  codecs: C,
  address: string,
  options: ClientOptions = {},
): TypedClient<S, C> {
  const channelOptions: Partial<GrpcClientOptions> = { ...options.channelOptions };
  if (options.tls?.serverName) {
    channelOptions['grpc.ssl_target_name_override'] = options.tls.serverName;
    channelOptions['grpc.default_authority'] = options.tls.serverName;
  }
  const client = new Client(address, createChannelCredentials(options), channelOptions);
  const resolve = (call: CallOptions | undefined, unary: boolean): ResolvedCall => resolveCall(options, call, unary);

  const api: Record<string, unknown> = {};
  for (const [name, method] of Object.entries(service)) {
    const codec = (codecs as Record<string, { fromPartial(object: unknown): unknown }>)[name];
    if (!codec) throw new TypeError(`no request codec for ${method.path}`);
    if (method.requestStream) throw new TypeError(`${method.path}: client-streaming calls are not supported`);
    const encode = (request: unknown): unknown => codec.fromPartial(request ?? {});
    if (method.responseStream) {
      api[name] = (request?: unknown, call?: CallOptions) =>
        serverStream(client, method, encode(request), resolve(call, false));
      api[`${name}$`] = (request?: unknown, call?: CallOptions) =>
        observeServerStream(client, method, encode(request), () => resolve(call, false));
    } else {
      api[name] = (request?: unknown, call?: CallOptions) =>
        unaryCall(client, method, encode(request), resolve(call, true));
    }
  }
  api['address'] = address;
  api['waitForReady'] = (deadline: Date | number = Infinity) =>
    new Promise<void>((resolveReady, reject) => {
      client.waitForReady(deadline, (error) =>
        error
          ? reject(new DeadlineExceededError(`${address} was not ready before the deadline`, { cause: error }))
          : resolveReady(),
      );
    });
  api['close'] = () => client.close();
  return Object.freeze(api) as TypedClient<S, C>;
}

function resolveCall(options: ClientOptions, call: CallOptions | undefined, unary: boolean): ResolvedCall {
  const metadata = new Metadata();
  for (const [key, value] of Object.entries(options.metadata ?? {})) metadata.set(key, value);
  if (call?.metadata instanceof Metadata) metadata.merge(call.metadata);
  else for (const [key, value] of Object.entries(call?.metadata ?? {})) metadata.set(key, value);

  let deadline: Date | number | undefined = call?.deadline;
  if (deadline === undefined && call?.timeoutMs !== undefined) deadline = Date.now() + call.timeoutMs;
  if (deadline === undefined && unary && options.defaultTimeoutMs !== undefined) {
    deadline = Date.now() + options.defaultTimeoutMs;
  }
  return { metadata, grpcOptions: deadline === undefined ? {} : { deadline }, signal: call?.signal };
}

function clientError(error: unknown, method: MethodDefinitionLike, signal: AbortSignal | undefined): WorkbayError {
  if (signal?.aborted) return new CancelledError(`${method.path} was cancelled`, { cause: signal.reason });
  return fromGrpcError(error);
}

function cancelledBeforeStart(method: MethodDefinitionLike, signal: AbortSignal): CancelledError {
  return new CancelledError(`${method.path} was cancelled before it started`, { cause: signal.reason });
}

function unaryCall(
  client: Client,
  method: MethodDefinitionLike,
  request: unknown,
  call: ResolvedCall,
): Promise<unknown> {
  const { signal } = call;
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(cancelledBeforeStart(method, signal));
      return;
    }
    let onAbort: (() => void) | undefined;
    const grpcCall = client.makeUnaryRequest(
      method.path,
      (value: unknown) => method.requestSerialize(value as never),
      (buffer: Buffer) => method.responseDeserialize(buffer),
      request,
      call.metadata,
      call.grpcOptions,
      (error, response) => {
        if (onAbort) signal?.removeEventListener('abort', onAbort);
        if (error) reject(clientError(error, method, signal));
        else resolve(response);
      },
    );
    if (signal) {
      onAbort = () => grpcCall.cancel();
      signal.addEventListener('abort', onAbort, { once: true });
    }
  });
}

function startServerStream(
  client: Client,
  method: MethodDefinitionLike,
  request: unknown,
  call: ResolvedCall,
): ClientReadableStream<unknown> {
  const stream = client.makeServerStreamRequest(
    method.path,
    (value: unknown) => method.requestSerialize(value as never),
    (buffer: Buffer) => method.responseDeserialize(buffer),
    request,
    call.metadata,
    call.grpcOptions,
  );
  // A late CANCELLED after the consumer has gone must not become an unhandled 'error' event.
  stream.on('error', () => undefined);
  return stream;
}

function serverStream(
  client: Client,
  method: MethodDefinitionLike,
  request: unknown,
  call: ResolvedCall,
): ServerStream<unknown> {
  let grpcStream: ClientReadableStream<unknown> | undefined;
  let cancelled = false;
  let started = false;
  const { signal } = call;

  async function* iterate(): AsyncGenerator<unknown, void, undefined> {
    if (cancelled) throw new CancelledError(`${method.path} was cancelled before it started`);
    if (signal?.aborted) throw cancelledBeforeStart(method, signal);
    const stream = startServerStream(client, method, request, call);
    grpcStream = stream;
    const onAbort = (): void => stream.cancel();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      for await (const message of stream) yield message;
    } catch (error) {
      throw cancelled
        ? new CancelledError(`${method.path} was cancelled`, { cause: error })
        : clientError(error, method, signal);
    } finally {
      signal?.removeEventListener('abort', onAbort);
      stream.cancel();
    }
  }

  return {
    [Symbol.asyncIterator]() {
      if (started) throw new TypeError(`${method.path}: a server stream can be iterated only once`);
      started = true;
      return iterate();
    },
    cancel() {
      cancelled = true;
      grpcStream?.cancel();
    },
  };
}

function observeServerStream(
  client: Client,
  method: MethodDefinitionLike,
  request: unknown,
  resolve: () => ResolvedCall,
): Observable<unknown> {
  return new Observable<unknown>((subscriber) => {
    const call = resolve();
    const { signal } = call;
    if (signal?.aborted) {
      subscriber.error(cancelledBeforeStart(method, signal));
      return undefined;
    }
    const stream = startServerStream(client, method, request, call);
    const onAbort = (): void => stream.cancel();
    signal?.addEventListener('abort', onAbort, { once: true });
    stream.on('data', (message: unknown) => subscriber.next(message));
    stream.on('error', (error: unknown) => subscriber.error(clientError(error, method, signal)));
    stream.on('end', () => subscriber.complete());
    return () => {
      signal?.removeEventListener('abort', onAbort);
      stream.cancel();
    };
  });
}
