/** TEST ONLY: manager workspace records for the Kubernetes repository specs. */
import type { WorkspaceRecord } from '@workbay/manager';

export function makeRecord(overrides: Partial<WorkspaceRecord> = {}): WorkspaceRecord {
  const id = overrides.id ?? 'ws-1';
  return {
    id,
    metaId: `meta-${id}`,
    owner: 'alice',
    annotations: {},
    type: 'regular',
    servicePrefix: id,
    url: `http://127.0.0.1:7780/ws/${id}/`,
    ownerToken: 'x'.repeat(32),
    spec: {
      image: 'workbay/default',
      ideImage: { webRef: '', supervisorRef: '', desktopRef: '', desktopPluginRef: '' },
      ideImageLayers: [],
      initializer: '',
      initializerKind: 'empty',
      ports: [],
      envvars: [],
      sysEnvvars: [],
      workspaceLocation: 'project',
      admission: 'owner-only',
      className: 'g1-standard',
      sshPublicKeys: [],
      featureFlags: [],
    },
    phase: 'pending',
    conditions: {
      failed: '',
      timeout: '',
      snapshot: '',
      headlessTaskFailed: '',
      finalBackupComplete: false,
      deployed: false,
      stoppedByRequest: false,
      aborted: false,
    },
    message: '',
    statusVersion: 1,
    createdAt: Date.now(),
    phaseTimes: { pending: Date.now() },
    progress: {
      contentReady: false,
      initRequested: false,
      everReady: false,
      closed: false,
      disposed: false,
      idePort: 0,
    },
    ...overrides,
  };
}
