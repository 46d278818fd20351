import type { CloneTargetMode } from '@workbay/api';

/** How a clone authenticates. Secrets live only in memory, never in session state or logs. */
export type GitAuth =
  | { readonly method: 'none' }
  | { readonly method: 'basic'; readonly username: string; readonly password: string }
  | { readonly method: 'basic-ots'; readonly otsUrl: string };

export interface GitInitializerSpec {
  readonly remoteUri: string;
  readonly upstreamRemoteUri?: string;
  readonly targetMode: CloneTargetMode;
  /** Argument of the target mode: a commit or branch name. */
  readonly cloneTarget: string;
  /** Relative to the workspace root; '' is the root. */
  readonly checkoutLocation: string;
  readonly customConfig: Readonly<Record<string, string>>;
  readonly auth: GitAuth;
  readonly fullClone: boolean;
}

export interface DownloadFileSpec {
  readonly url: string;
  readonly filePath: string;
  /** OCI digest, `sha256:<hex>` or `sha512:<hex>`. */
  readonly digest: string;
}

/** The domain form of `contentservice.WorkspaceInitializer`. */
export type InitializerSpec =
  | { readonly kind: 'empty' }
  | { readonly kind: 'git'; readonly git: GitInitializerSpec }
  | { readonly kind: 'snapshot'; readonly snapshot: string }
  | { readonly kind: 'prebuild'; readonly snapshot?: string; readonly git: readonly GitInitializerSpec[] }
  | { readonly kind: 'composite'; readonly children: readonly InitializerSpec[] }
  | { readonly kind: 'download'; readonly targetLocation: string; readonly files: readonly DownloadFileSpec[] }
  | { readonly kind: 'backup'; readonly checkoutLocation: string };

/** Metric types, as in `wsdaemon.InitializerStepMetric.type`. */
export type InitializerMetricType =
  'git' | 'file_download' | 'snapshot' | 'backup' | 'prebuild' | 'composite' | 'empty';

export interface InitializerMetric {
  readonly type: InitializerMetricType;
  readonly durationMs: number;
  /** Bytes the step produced or transferred. */
  readonly bytes: number;
}

/** Where the content came from (the ready marker's `source`). */
export type ContentSource = 'from-backup' | 'from-prebuild' | 'from-other';

export interface InitializerOutcome {
  readonly metrics: readonly InitializerMetric[];
  readonly source: ContentSource;
  /** Checkout locations of git working copies (relative), for git status on disposal. */
  readonly gitLocations: readonly string[];
  /**
   * True when everything the initializer wrote is owned by the workspace's host identity already (git cloned as
   * that user): the daemon then skips its ownership walk over the content. Absent: walk.
   */
  readonly contentOwned?: boolean;
}

/** A copy of the spec without credentials, safe for session state and logs. */
export function redactSpec(spec: InitializerSpec): InitializerSpec {
  const redactGit = (git: GitInitializerSpec): GitInitializerSpec => ({
    ...git,
    remoteUri: stripUserInfo(git.remoteUri),
    ...(git.upstreamRemoteUri !== undefined ? { upstreamRemoteUri: stripUserInfo(git.upstreamRemoteUri) } : {}),
    auth:
      git.auth.method === 'basic'
        ? { method: 'basic', username: git.auth.username, password: '[redacted]' }
        : git.auth.method === 'basic-ots'
          ? { method: 'basic-ots', otsUrl: '[redacted]' }
          : git.auth,
  });
  switch (spec.kind) {
    case 'git':
      return { kind: 'git', git: redactGit(spec.git) };
    case 'prebuild':
      return { ...spec, git: spec.git.map(redactGit) };
    case 'composite':
      return { kind: 'composite', children: spec.children.map(redactSpec) };
    case 'download':
      return { ...spec, files: spec.files.map((f) => ({ ...f, url: stripQuery(f.url) })) };
    default:
      return spec;
  }
}

function stripUserInfo(url: string): string {
  try {
    const parsed = new URL(url);
    if (!parsed.username && !parsed.password) return url;
    parsed.username = '';
    parsed.password = '';
    return parsed.toString();
  } catch {
    // Deliberate: not a URL (scp-like `git@host:repo` or a path) has no user info to strip.
    return url;
  }
}

// Presigned download URLs carry their signature in the query.
function stripQuery(url: string): string {
  const at = url.indexOf('?');
  return at === -1 ? url : `${url.slice(0, at)}?[redacted]`;
}
