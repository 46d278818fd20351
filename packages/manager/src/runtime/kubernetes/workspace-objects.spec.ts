import { describe, expect, it } from 'vitest';
import { makeRecord } from '../../test-support/records.js';
import {
  decodeRecord,
  encodeRecord,
  newSecretName,
  newWorkspaceObject,
  objectNameOf,
  secretNameFor,
  statusOf,
  transitionsFrom,
} from './workspace-objects.js';
import type { WorkspaceObject } from './workspace-objects.js';

const record = makeRecord({
  id: 'ws-1',
  statusVersion: 7,
  ownerToken: 'owner-token-secret',
  spec: { ...makeRecord().spec, initializer: 'c2VjcmV0', envvars: [{ name: 'API_KEY', value: 'hunter2' }] },
});

describe('records in Workspace objects', () => {
  it('are stored as JSON without the owner token, the initializer or environment values, and read back', () => {
    const text = encodeRecord(record);
    expect(text).not.toContain('owner-token-secret');
    expect(text).not.toContain('c2VjcmV0');
    expect(text).not.toContain('hunter2');
    expect(decodeRecord(text)).toMatchObject({ id: 'ws-1', statusVersion: 7, phase: record.phase });
  });

  it('refuses text that is not a record (anyone with write access to the objects can write it)', () => {
    for (const text of [
      undefined,
      42,
      '',
      'not json',
      'null',
      '[]',
      '"a string"',
      JSON.stringify({ id: 'ws-1' }),
      JSON.stringify({ ...JSON.parse(encodeRecord(record)), statusVersion: '7' }),
      JSON.stringify({ ...JSON.parse(encodeRecord(record)), spec: null }),
    ]) {
      expect(decodeRecord(text), String(text)).toBeUndefined();
    }
  });
});

describe('secretNameFor', () => {
  const objectNaming = (id: string, secretName: string): WorkspaceObject =>
    newWorkspaceObject(makeRecord({ id }), 'workbay', secretName);

  it('believes a name of this workspace with a claim, and nothing else', () => {
    const own = newSecretName('ws-1');
    expect(own).toMatch(/^ws-ws-1-secrets-[0-9a-f]{12}$/);
    expect(newSecretName('ws-1')).not.toBe(own);
    expect(secretNameFor(objectNaming('ws-1', own))).toBe(own);
    // Another workspace's Secret, a Secret of the manager's own, or a name with a longer tail: not believed.
    expect(secretNameFor(objectNaming('ws-1', newSecretName('ws-2')))).toBeUndefined();
    expect(secretNameFor(objectNaming('ws-1', 'workbay-manager-secrets'))).toBeUndefined();
    expect(secretNameFor(objectNaming('ws-1', `${own}0`))).toBeUndefined();
    expect(secretNameFor(objectNaming('ws-1', 'ws-ws-1-secrets-'))).toBeUndefined();
    // ws-1-2's prefix starts with ws-1's: each is only its own.
    expect(secretNameFor(objectNaming('ws-1', newSecretName('ws-1-2')))).toBeUndefined();
  });
});

describe('transitionsFrom', () => {
  const objectWith = (status: WorkspaceObject['status']): WorkspaceObject =>
    ({ ...newWorkspaceObject(record, 'workbay', newSecretName(record.id)), status }) as WorkspaceObject;
  const at = (statusVersion: number, id = 'ws-1') => makeRecord({ id, statusVersion });

  it('gives the transitions newer than the one seen and older than the record, in order', () => {
    const object = objectWith(statusOf(at(10), [at(7), at(8), at(9)]));
    expect(transitionsFrom(object, 'ws-1', undefined, 8).map((r) => r.statusVersion)).toEqual([7, 8, 9]);
    expect(transitionsFrom(object, 'ws-1', 8, 8).map((r) => r.statusVersion)).toEqual([9]);
    expect(transitionsFrom(objectWith(statusOf(at(10))), 'ws-1', undefined, 8)).toEqual([]);
  });

  it("passes over what is not the leader's: out of order, another workspace's, not below the record, beyond the bound", () => {
    const status = {
      ...statusOf(at(10)),
      transitions: [
        encodeRecord(at(5)),
        'garbage',
        encodeRecord(at(4)),
        encodeRecord(at(6, 'ws-2')),
        encodeRecord(at(11)),
        encodeRecord(at(7)),
      ],
    };
    expect(transitionsFrom(objectWith(status), 'ws-1', undefined, 8).map((r) => r.statusVersion)).toEqual([5, 7]);
    expect(transitionsFrom(objectWith(status), 'ws-1', undefined, 1).map((r) => r.statusVersion)).toEqual([5]);
  });
});

describe('objectNameOf', () => {
  it('gives each instance id an object name of its own (red team round 12, N2)', () => {
    expect(objectNameOf('0f8fad5b-d9cb-469f-a165-7086772895fe')).toBe('0f8fad5b-d9cb-469f-a165-7086772895fe');
    const forged = objectNameOf('Alice_ws1');
    const ids = ['Alice_ws1', forged, 'a1', 'A1', 'wb-a1', 'a.1'];
    expect(new Set(ids.map(objectNameOf)).size).toBe(ids.length);
    expect(objectNameOf(forged)).not.toBe(forged);
  });
});
