import { describe, expect, it } from 'vitest';
import { LeaderInbox } from './leader-inbox.js';
import type { WorkspaceObject } from './workspace-objects.js';

function object(spec: Record<string, unknown>, status?: Record<string, unknown>): WorkspaceObject {
  return { metadata: { name: 'ws-1' }, spec, status } as unknown as WorkspaceObject;
}

describe('LeaderInbox', () => {
  it('hands out each request once, and drops malformed or unknown ones written into the object', () => {
    const inbox = new LeaderInbox();
    const requests = {
      markActive: { id: 'r1', request: { kind: 'markActive', closed: false, ignoreIfActive: false } },
      // Filed under one kind, claiming another: refused.
      setTimeout: { id: 'r2', request: { kind: 'takeSnapshot', returnImmediately: true } },
      deleteEverything: { id: 'r3', request: { kind: 'deleteEverything' } },
      controlPort: { id: 42, request: { kind: 'controlPort', expose: true } },
      controlAdmission: 'nonsense',
    };
    const first = inbox.pending('ws-1', object({ requests }));
    expect(first).toEqual([{ id: 'ws-1', type: 'request', requestId: 'r1', request: requests.markActive.request }]);
    expect(inbox.pending('ws-1', object({ requests }))).toEqual([]);
  });

  it('does not repeat a request an earlier leader answered', () => {
    const inbox = new LeaderInbox();
    const requests = { markActive: { id: 'r1', request: { kind: 'markActive', closed: true, ignoreIfActive: false } } };
    expect(inbox.pending('ws-1', object({ requests }, { acks: { markActive: { id: 'r1' } } }))).toEqual([]);
  });
});
