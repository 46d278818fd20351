/**
 * Daemons per node: a {@link ContentService} that sends each call to the daemon of the node that holds the
 * workspace's content. A new workspace's content is placed on a node with a ready daemon (chosen here, or by the
 * caller with {@link NodeRoutingContentService.forNode}); `initWorkspace` reports that node (`nodeName`) so that the
 * workspace's pod is pinned to it. Later calls find the node from what this service placed, the caller's
 * `nodeOf` (the record's node, the pod's `nodeName`), or, after a restart with nothing known, by asking the daemons.
 *
 * One gRPC client per daemon address, all with the same TLS settings (`daemon.tls`: mTLS to every daemon).
 *
 * @module
 */
import { FailedPreconditionError, NotFoundError, UnavailableError } from '@workbay/api';
import type { GitStatusInfo } from '../domain/types.js';
import type { ContentService, InitContentRequest, InitContentResult, InitProgressInfo } from './content-service.js';
import { DaemonContentService } from './daemon-content-service.js';
import type { DaemonClientTls } from './daemon-content-service.js';

/** Where the daemons are (implemented by the kubernetes runtime's `NodeDaemons`). */
export interface DaemonDirectory {
  /** The gRPC address of the node's ready daemon; undefined when the node has none ready. */
  addressOf(node: string): string | undefined;
  /** The nodes with a ready daemon. */
  nodes(): string[];
}

export interface NodeRoutingOptions {
  readonly daemons: DaemonDirectory;
  readonly tls?: DaemonClientTls;
  /** The node of an instance when known elsewhere (the record's node, the pod's `spec.nodeName`). */
  readonly nodeOf?: (instanceId: string) => Promise<string | undefined> | string | undefined;
  /** Picks the node for new content; default: the node this service placed the fewest workspaces on, then by name. */
  readonly chooseNode?: (request: InitContentRequest, nodes: readonly string[]) => string | undefined;
  /** Makes the client for one daemon (tests); default a {@link DaemonContentService}. */
  readonly connect?: (address: string, tls?: DaemonClientTls) => ContentService;
}

export class NodeRoutingContentService implements ContentService {
  private readonly clients = new Map<string, ContentService>();
  /** Instance → node, for the content this service placed or found. */
  private readonly placed = new Map<string, string>();
  private closed = false;

  constructor(private readonly options: NodeRoutingOptions) {}

  /** The content service of one node's daemon. UNAVAILABLE while the node has no ready daemon. */
  forNode(node: string): ContentService {
    if (this.closed) throw new FailedPreconditionError('the content service is closed');
    const address = this.options.daemons.addressOf(node);
    if (!address) throw new UnavailableError(`no ready workspace daemon on node ${node}`);
    let client = this.clients.get(address);
    if (!client) {
      client = (this.options.connect ?? ((a, tls) => new DaemonContentService(a, tls)))(address, this.options.tls);
      this.clients.set(address, client);
    }
    return client;
  }

  /** The node holding the instance's content, if known without asking the daemons. */
  async knownNodeOf(instanceId: string): Promise<string | undefined> {
    return this.placed.get(instanceId) ?? ((await this.options.nodeOf?.(instanceId)) || undefined);
  }

  async initWorkspace(request: InitContentRequest, signal?: AbortSignal): Promise<InitContentResult> {
    const node = (await this.knownNodeOf(request.instanceId)) ?? this.choose(request);
    this.placed.set(request.instanceId, node);
    const result = await this.forNode(node).initWorkspace(request, signal);
    return { ...result, nodeName: node };
  }

  async initProgress(instanceId: string, signal?: AbortSignal): Promise<InitProgressInfo | undefined> {
    const node = await this.knownNodeOf(instanceId);
    const service = node ? this.forNode(node) : undefined;
    return service?.initProgress ? service.initProgress(instanceId, signal) : undefined;
  }

  async waitForInit(instanceId: string, signal?: AbortSignal): Promise<void> {
    await (await this.serviceOf(instanceId)).waitForInit(instanceId, signal);
  }

  async isWorkspaceExists(instanceId: string): Promise<boolean> {
    const known = await this.knownNodeOf(instanceId);
    if (known) return this.forNode(known).isWorkspaceExists(instanceId);
    return (await this.locate(instanceId)) !== undefined;
  }

  async takeSnapshot(instanceId: string, returnImmediately: boolean): Promise<string> {
    return (await this.serviceOf(instanceId)).takeSnapshot(instanceId, returnImmediately);
  }

  /** Snapshots live in the shared remote storage: any ready daemon can delete one. */
  async deleteSnapshot(snapshot: string): Promise<boolean> {
    const node = this.options.daemons.nodes()[0];
    if (!node) throw new UnavailableError('no ready workspace daemon on any node');
    return this.forNode(node).deleteSnapshot(snapshot);
  }

  async backupWorkspace(instanceId: string): Promise<string> {
    return (await this.serviceOf(instanceId)).backupWorkspace(instanceId);
  }

  async disposeWorkspace(
    instanceId: string,
    backup: boolean,
    signal?: AbortSignal,
  ): Promise<{ gitStatus?: GitStatusInfo }> {
    const result = await (await this.serviceOf(instanceId)).disposeWorkspace(instanceId, backup, signal);
    this.placed.delete(instanceId);
    return result;
  }

  close(): void {
    this.closed = true;
    for (const client of this.clients.values()) client.close();
    this.clients.clear();
  }

  // ---------------------------------------------------------------------------------------------------------------

  private choose(request: InitContentRequest): string {
    const nodes = this.options.daemons.nodes();
    if (nodes.length === 0) throw new UnavailableError('no ready workspace daemon on any node');
    const chosen = this.options.chooseNode
      ? this.options.chooseNode(request, nodes)
      : leastPlaced(nodes, [...this.placed.values()]);
    if (!chosen) throw new UnavailableError('no node was chosen for the workspace content');
    return chosen;
  }

  private async serviceOf(instanceId: string): Promise<ContentService> {
    const node = await this.locate(instanceId);
    if (!node) throw new NotFoundError(`no workspace daemon holds the content of workspace ${instanceId}`);
    return this.forNode(node);
  }

  /** The node whose daemon has the content: known, or found by asking every ready daemon (after a restart). */
  private async locate(instanceId: string): Promise<string | undefined> {
    const known = await this.knownNodeOf(instanceId);
    if (known) return known;
    for (const node of this.options.daemons.nodes()) {
      if (await this.forNode(node).isWorkspaceExists(instanceId)) {
        this.placed.set(instanceId, node);
        return node;
      }
    }
    return undefined;
  }
}

function leastPlaced(nodes: readonly string[], placed: readonly string[]): string | undefined {
  const load = new Map(nodes.map((n) => [n, 0]));
  for (const node of placed) if (load.has(node)) load.set(node, load.get(node)! + 1);
  return [...load].sort((a, b) => a[1] - b[1] || a[0].localeCompare(b[0]))[0]?.[0];
}
