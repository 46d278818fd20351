/**
 * The connection to the API server and the mapping of its failures to Workbay's typed errors.
 *
 * @module
 */
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

/** The KubeConfig a runtime section describes: `server`+`token`, else `kubeconfigPath`, else in-cluster/default. */
export function kubeConfigFor(config: KubernetesRuntimeConfig): KubeConfig {
  const kc = new KubeConfig();
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

/** Maps a client-node failure to a domain error; never includes the token. */
export function apiError(error: unknown, what: string): Error {
  if (isWorkbayError(error)) return error;
  const code = typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined;
  const message = apiMessage(error);
  switch (code) {
    case 400:
    case 422:
      return new InvalidArgumentError('pod', `${what}: ${message}`, { cause: error });
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
