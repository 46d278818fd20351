/**
 * Wire compatibility with the 2022 `wsman` contract: every service, method, message, field and enum value of
 * the seed `core.proto` must exist unchanged in ours (same numbers, types, labels and streaming flags). The only
 * allowed differences are the JSON-only renames listed in `allowedRenames`; the test also fails if a listed
 * rename no longer occurs, so the list stays exact.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { protoFiles, protoRoot } from './proto-root.js';
import * as wire from './wire.js';
import { contentservice, wsman } from './wire.js';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const sharedDir = process.env['WORKBAY_SHARED_DIR'] ?? join(repoRoot, '..', 'shared');
const seedFile = join(sharedDir, 'seeds', '003_081e968441c0d95b.txt');
const wktDir = join(dirname(createRequire(import.meta.url).resolve('protoc/package.json')), 'include');

/** Field renames that only change JSON / TypeScript names: `<message>.<seed name>` -> our name. */
const allowedRenames: Readonly<Record<string, string>> = {
  'wsman.DescribeClusterResponse.WorkspaceClasses': 'workspace_classes',
  'wsman.WorkspaceClass.Id': 'id',
  'wsman.WorkspaceClass.DisplayName': 'display_name',
};

/** Workbay extension fields (numbers >= 100). */
const expectedExtensions = [
  'wsman.SubscribeRequest.resume_from_status_version',
  'wsman.SubscribeResponse.resync_required',
  'wsdaemon.InitWorkspaceResponse.content_location',
  'wsdaemon.InitWorkspaceResponse.initializer_metrics',
  'wsdaemon.InitWorkspaceResponse.content_source',
];

/** The seed file starts with a few lines of page header text; the proto starts at `syntax`. */
function seedProtoSource(): string {
  const text = readFileSync(seedFile, 'utf8');
  const start = text.indexOf('syntax = "proto3";');
  if (start < 0) throw new Error(`${seedFile} contains no proto3 file`);
  return text.slice(start);
}

function parseInto(root: protobuf.Root, source: string): void {
  protobuf.parse(source, root, { keepCase: true, alternateCommentMode: true });
}

function loadRoot(coreSource: string): protobuf.Root {
  const root = new protobuf.Root();
  for (const wkt of ['timestamp', 'duration']) {
    parseInto(root, readFileSync(join(wktDir, 'google', 'protobuf', `${wkt}.proto`), 'utf8'));
  }
  // The seed imports "content-service-api/initializer.proto"; ours lives at contentservice/initializer.proto.
  parseInto(root, readFileSync(join(protoRoot, protoFiles.contentservice), 'utf8'));
  parseInto(root, coreSource);
  root.resolveAll();
  return root;
}

function fullName(reflection: protobuf.ReflectionObject): string {
  return reflection.fullName.replace(/^\./, '');
}

function collect(
  ns: protobuf.NamespaceBase,
  types: protobuf.Type[],
  enums: protobuf.Enum[],
  services: protobuf.Service[],
) {
  for (const nested of ns.nestedArray) {
    if (nested instanceof protobuf.Type) types.push(nested);
    else if (nested instanceof protobuf.Enum) enums.push(nested);
    else if (nested instanceof protobuf.Service) services.push(nested);
    if (nested instanceof protobuf.Namespace || nested instanceof protobuf.Type)
      collect(nested, types, enums, services);
  }
}

interface Catalog {
  readonly types: Map<string, protobuf.Type>;
  readonly enums: Map<string, protobuf.Enum>;
  readonly services: Map<string, protobuf.Service>;
}

function catalog(root: protobuf.Root, pkg: string): Catalog {
  const types: protobuf.Type[] = [];
  const enums: protobuf.Enum[] = [];
  const services: protobuf.Service[] = [];
  collect(root.lookup(pkg) as protobuf.Namespace, types, enums, services);
  return {
    types: new Map(types.filter((t) => !t.name.endsWith('Entry')).map((t) => [fullName(t), t])),
    enums: new Map(enums.map((e) => [fullName(e), e])),
    services: new Map(services.map((s) => [fullName(s), s])),
  };
}

/** Everything about a field that reaches the wire (the name only reaches JSON). */
function fieldShape(field: protobuf.Field): Record<string, unknown> {
  const resolved = field.resolvedType ? fullName(field.resolvedType) : field.type;
  return {
    id: field.id,
    type: resolved,
    repeated: field.repeated,
    map: field.map,
    keyType: field instanceof protobuf.MapField ? field.keyType : undefined,
    optional: Boolean(field.options?.['proto3_optional']),
    oneof: field.partOf && !field.partOf.name.startsWith('_') ? field.partOf.name : undefined,
  };
}

describe('compatibility with the 2022 wsman contract', () => {
  let seed: Catalog;
  let ours: Catalog;

  beforeAll(() => {
    if (!existsSync(seedFile)) {
      throw new Error(`seed proto not found at ${seedFile}; set WORKBAY_SHARED_DIR to the shared/ directory`);
    }
    seed = catalog(loadRoot(seedProtoSource()), 'wsman');
    ours = catalog(loadRoot(readFileSync(join(protoRoot, protoFiles.wsman), 'utf8')), 'wsman');
  });

  it('parses both contracts', () => {
    expect(seed.services.size).toBe(1);
    expect(seed.types.size).toBeGreaterThan(40);
    expect(ours.types.size).toBeGreaterThanOrEqual(seed.types.size);
  });

  it('keeps every service and method with the same request, response and streaming', () => {
    for (const [name, service] of seed.services) {
      const mine = ours.services.get(name);
      expect(mine, `service ${name}`).toBeDefined();
      for (const method of service.methodsArray) {
        const other = mine!.methods[method.name];
        expect(other, `${name}.${method.name}`).toBeDefined();
        expect({
          request: fullName(other!.resolvedRequestType!),
          response: fullName(other!.resolvedResponseType!),
          requestStream: Boolean(other!.requestStream),
          responseStream: Boolean(other!.responseStream),
        }).toEqual({
          request: fullName(method.resolvedRequestType!),
          response: fullName(method.resolvedResponseType!),
          requestStream: Boolean(method.requestStream),
          responseStream: Boolean(method.responseStream),
        });
      }
    }
  });

  it('keeps every message field with the same number, type and label', () => {
    const renamesSeen: string[] = [];
    for (const [name, type] of seed.types) {
      const mine = ours.types.get(name);
      expect(mine, `message ${name}`).toBeDefined();
      for (const field of type.fieldsArray) {
        const other = mine!.fieldsById[field.id];
        expect(other, `${name}.${field.name} = ${field.id}`).toBeDefined();
        expect(fieldShape(other!), `${name}.${field.name}`).toEqual(fieldShape(field));
        if (other!.name !== field.name) {
          const key = `${name}.${field.name}`;
          expect(allowedRenames[key], `unlisted rename ${key} -> ${other!.name}`).toBe(other!.name);
          renamesSeen.push(key);
        }
      }
    }
    expect(renamesSeen.sort()).toEqual(Object.keys(allowedRenames).sort());
  });

  it('keeps every enum value with the same number', () => {
    for (const [name, seedEnum] of seed.enums) {
      const mine = ours.enums.get(name);
      expect(mine, `enum ${name}`).toBeDefined();
      for (const [value, number] of Object.entries(seedEnum.values)) {
        expect(mine!.values[value], `${name}.${value}`).toBe(number);
      }
    }
  });

  it('numbers Workbay extensions from 100 up, and only those', () => {
    const extensions: string[] = [];
    for (const pkg of ['wsman', 'wsdaemon', 'iws'] as const) {
      const catalogOfPackage = catalog(loadRoot(readFileSync(join(protoRoot, protoFiles[pkg]), 'utf8')), pkg);
      for (const [name, type] of catalogOfPackage.types) {
        for (const field of type.fieldsArray) if (field.id >= 100) extensions.push(`${name}.${field.name}`);
      }
    }
    for (const [name, type] of catalog(loadRoot(''), 'contentservice').types) {
      for (const field of type.fieldsArray) if (field.id >= 100) extensions.push(`${name}.${field.name}`);
    }
    expect(extensions.sort()).toEqual([...expectedExtensions].sort());
  });

  it('marks what the newest upstream reserved as deprecated instead of dropping it', () => {
    const deprecatedFields = [
      'wsman.IDEImage.desktop_ref',
      'wsman.IDEImage.desktop_plugin_ref',
      'wsman.WorkspaceSpec.deprecated_ide_image',
      'wsman.StartWorkspaceSpec.deprecated_ide_image',
      'wsman.StartWorkspaceSpec.volume_snapshot',
    ];
    for (const path of deprecatedFields) {
      const [message, field] = [path.slice(0, path.lastIndexOf('.')), path.slice(path.lastIndexOf('.') + 1)];
      expect(ours.types.get(message)!.fields[field]!.options?.['deprecated'], path).toBe(true);
    }
    const flags = ours.enums.get('wsman.WorkspaceFeatureFlag')!;
    for (const value of [
      'FULL_WORKSPACE_BACKUP',
      'FIXED_RESOURCES',
      'PERSISTENT_VOLUME_CLAIM',
      'WORKSPACE_CLASS_LIMITING',
    ]) {
      expect(flags.valuesOptions?.[value]?.['deprecated'], value).toBe(true);
    }
    expect(ours.enums.get('wsman.WorkspaceType')!.valuesOptions?.['PROBE']?.['deprecated']).toBe(true);
  });

  it('decodes messages written with the seed contract', () => {
    const seedRoot = loadRoot(seedProtoSource());
    const SeedCluster = seedRoot.lookupType('wsman.DescribeClusterResponse');
    const clusterBytes = SeedCluster.encode(
      SeedCluster.fromObject({ WorkspaceClasses: [{ Id: 'g1-standard', DisplayName: 'Standard' }] }),
    ).finish();
    expect(wsman.DescribeClusterResponse.decode(clusterBytes).workspaceClasses).toEqual([
      { id: 'g1-standard', displayName: 'Standard', description: '', creditsPerMinute: 0 },
    ]);

    const SeedSpec = seedRoot.lookupType('wsman.StartWorkspaceSpec');
    const specBytes = SeedSpec.encode(
      SeedSpec.fromObject({
        workspace_image: 'img',
        deprecated_ide_image: 'ide',
        feature_flags: [4, 5, 7],
        volume_snapshot: { volume_snapshot_name: 'snap', volume_snapshot_handle: 'handle' },
        initializer: { git: { remote_uri: 'https://example.com/repo.git', target_mode: 2, clone_taget: 'main' } },
        ssh_public_keys: ['ssh-ed25519 AAAA'],
      }),
    ).finish();
    const spec = wsman.StartWorkspaceSpec.decode(specBytes);
    expect(spec.workspaceImage).toBe('img');
    expect(spec.deprecatedIdeImage).toBe('ide');
    expect(spec.featureFlags).toEqual([
      wsman.WorkspaceFeatureFlag.FULL_WORKSPACE_BACKUP,
      wsman.WorkspaceFeatureFlag.FIXED_RESOURCES,
      wsman.WorkspaceFeatureFlag.PERSISTENT_VOLUME_CLAIM,
    ]);
    expect(spec.volumeSnapshot).toEqual({ volumeSnapshotName: 'snap', volumeSnapshotHandle: 'handle' });
    expect(spec.initializer?.spec).toMatchObject({
      $case: 'git',
      value: { remoteUri: 'https://example.com/repo.git', targetMode: contentservice.CloneTargetMode.REMOTE_BRANCH },
    });
    expect(spec.sshPublicKeys).toEqual(['ssh-ed25519 AAAA']);

    // And the other way round: what we write, the seed contract reads.
    const ourStatus = wsman.WorkspaceStatus.encode(
      wsman.WorkspaceStatus.fromPartial({
        id: 'ws-1',
        statusVersion: 42,
        phase: wsman.WorkspacePhase.RUNNING,
        spec: { type: wsman.WorkspaceType.PROBE, ideImage: { webRef: 'web', desktopRef: 'desk' } },
        conditions: { firstUserActivity: new Date('2022-06-30T12:00:00Z'), aborted: wsman.WorkspaceConditionBool.TRUE },
      }),
    ).finish();
    const decoded = seedRoot
      .lookupType('wsman.WorkspaceStatus')
      .toObject(seedRoot.lookupType('wsman.WorkspaceStatus').decode(ourStatus), { longs: Number, enums: String });
    expect(decoded).toMatchObject({
      id: 'ws-1',
      status_version: 42,
      phase: 'RUNNING',
      spec: { type: 'PROBE', ide_image: { web_ref: 'web', desktop_ref: 'desk' } },
      conditions: { first_user_activity: { seconds: 1656590400 } },
    });
  });
});

describe('our contracts', () => {
  it('parse with protobufjs, every file', () => {
    const root = new protobuf.Root();
    for (const wkt of ['timestamp', 'duration']) {
      parseInto(root, readFileSync(join(wktDir, 'google', 'protobuf', `${wkt}.proto`), 'utf8'));
    }
    for (const file of Object.values(protoFiles)) parseInto(root, readFileSync(join(protoRoot, file), 'utf8'));
    root.resolveAll();
    expect(Object.keys((root.lookup('iws.InWorkspaceService') as protobuf.Service).methods)).toHaveLength(13);
    expect(Object.keys((root.lookup('wsman.WorkspaceManager') as protobuf.Service).methods)).toHaveLength(14);
    // The original's six, plus the Workbay extensions DeleteSnapshot and InitProgress.
    expect(Object.keys((root.lookup('wsdaemon.WorkspaceContentService') as protobuf.Service).methods)).toEqual([
      'InitWorkspace',
      'WaitForInit',
      'IsWorkspaceExists',
      'TakeSnapshot',
      'DisposeWorkspace',
      'BackupWorkspace',
      'DeleteSnapshot',
      'InitProgress',
    ]);
  });

  it('the wire entry point re-exports every generated wsman and contentservice value', () => {
    const exported = new Set(Object.keys(wire));
    const renamed: Record<string, string> = { WorkspaceManagerClient: 'WorkspaceManagerGrpcClient' };
    for (const module of [wsman, contentservice]) {
      for (const name of Object.keys(module)) {
        if (/(FromJSON|ToJSON)$/.test(name) || name === 'protobufPackage' || name === 'protobufFileName') continue;
        expect(exported.has(renamed[name] ?? name), name).toBe(true);
      }
    }
  });
});
