/**
 * The connection to the API server and the mapping of its failures to Workbay's typed errors.
 *
 * @module
 */
import http from 'node:http';
import https from 'node:https';
import { KubeConfig } from '@kubernetes/client-node';
import {
  AlreadyExistsError,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  UnauthenticatedError,
  UnavailableError,
  isWorkbayError,
} from '@workbay/api';
import type { KubernetesRuntimeConfig } from './config.js';

type RequestContext = Parameters<KubeConfig['applySecurityAuthentication']>[0];
type HttpsOptions = Parameters<KubeConfig['applyToHTTPSOptions']>[0];

/**
 * A KubeConfig whose requests share one keep-alive agent. client-node 1.4 builds a new `https.Agent` for every
 * API call, so every call opened a new TLS connection with a new SecureContext (CA store loaded, handshake,
 * peer certificate parsed): measured on the bench's leader, that synchronous work was over a third of its CPU
 * and held its event loop for hundreds of ms at a time, which delayed every Subscribe stream write behind it.
 * The agent is rebuilt only when its TLS material changes (a rotated client certificate); proxy agents are
 * left as client-node makes them.
 */
export class PooledKubeConfig extends KubeConfig {
  private pooled?: { readonly key: string; readonly agent: http.Agent };

  override async applySecurityAuthentication(context: RequestContext): Promise<void> {
    await super.applySecurityAuthentication(context);
    const agent = context.getAgent();
    if (agent) context.setAgent(this.shared(agent));
  }

  override async applyToHTTPSOptions(opts: HttpsOptions): Promise<void> {
    await super.applyToHTTPSOptions(opts);
    const options = opts as https.RequestOptions;
    if (options.agent instanceof http.Agent) options.agent = this.shared(options.agent);
  }

  private shared(fresh: http.Agent): http.Agent {
    const plain = fresh.constructor === https.Agent || fresh.constructor === http.Agent;
    if (!plain) return fresh;
    const o = (fresh as http.Agent & { options: https.AgentOptions }).options;
    const text = (v: unknown): unknown =>
      Buffer.isBuffer(v) ? v.toString('latin1') : Array.isArray(v) ? v.map(text) : v;
    const material = [o.ca, o.cert, o.key, o.pfx, o.passphrase, o.rejectUnauthorized, o.servername];
    const key = JSON.stringify([fresh.constructor === https.Agent, ...material.map(text)]);
    if (this.pooled?.key !== key) {
      const Agent = fresh.constructor as typeof https.Agent;
      this.pooled = { key, agent: new Agent({ ...o, keepAlive: true }) };
    }
    return this.pooled.agent;
  }
}

/** The KubeConfig a runtime section describes: `server`+`token`, else `kubeconfigPath`, else in-cluster/default. */
export function kubeConfigFor(config: KubernetesRuntimeConfig): KubeConfig {
  const kc = new PooledKubeConfig();
  if (config.server) {
    kc.loadFromOptions({
      clusters: [{ name: 'workbay', server: config.server, skipTLSVerify: config.skipTLSVerify }],
      users: [{ name: 'workbay', token: config.token }],
      contexts: [{ name: 'workbay', cluster: 'workbay', user: 'workbay', namespace: config.namespace }],
      currentContext: 'workbay',
    });
  } else if (config.kubeconfigPath) {
    kc.loadFromFile(config.kubeconfigPath);
  } else {
    kc.loadFromDefault();
  }
  return kc;
}

/**
 * Maps a client-node failure to a domain error; never includes the token. `field` names what an invalid (400/422)
 * answer is about: the pod by default, a config key when the object was made from one.
 */
export function apiError(error: unknown, what: string, field = 'pod'): Error {
  if (isWorkbayError(error)) return error;
  const code = typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined;
  const message = apiMessage(error);
  switch (code) {
    case 400:
    case 422:
      return new InvalidArgumentError(field, `${what}: ${message}`, { cause: error });
    case 401:
      return new UnauthenticatedError(`${what}: the API server rejected the credentials`, { cause: error });
    case 403:
      return new PermissionDeniedError(`${what}: ${message}`, { cause: error });
    case 404:
      return new NotFoundError(`${what}: not found`, { cause: error });
    case 409:
      return new AlreadyExistsError(`${what}: already exists`, { cause: error });
    default:
      return new UnavailableError(`${what}: the Kubernetes API is unavailable (${message})`, { cause: error });
  }
}

function apiMessage(error: unknown): string {
  const body = typeof error === 'object' && error !== null ? (error as { body?: unknown }).body : undefined;
  if (typeof body === 'string') {
    try {
      const parsed = JSON.parse(body) as { message?: string };
      if (parsed.message) return parsed.message;
    } catch {
      // not JSON
    }
  } else if (typeof body === 'object' && body !== null && typeof (body as { message?: unknown }).message === 'string') {
    return (body as { message: string }).message;
  }
  return error instanceof Error ? error.message.split('\n')[0]! : String(error);
}
