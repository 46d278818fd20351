/**
 * The arbitraries and checks of the RPC fuzz test: adversarial strings (huge, unicode, binary, path tricks),
 * numbers within each wire type, random initializer trees, requests invalid by construction.
 */
import fc from 'fast-check';
import { contentservice, wsman } from '@workbay/api';
import { isSensibleRefusal, show } from './attack-kit.js';
import type { CallOutcome } from './attack-kit.js';

export const numRuns = 60;
/** The one live workspace of the fuzzed system; destructive RPCs never name it. */
export const target = 'fuzz-target';

// ---------------------------------------------------------------------------------------------------------------
// Arbitraries

export const nasty = fc.constantFrom(
  '',
  ' ',
  '.',
  '..',
  '../../etc/passwd',
  '/',
  '/etc',
  '%',
  '%2e%2e',
  '\0',
  '\u202e\u0000\uffff',
  'a/b',
  'a@b',
  '@',
  'ws-1',
  'workspaces/x/snapshot-1.tar@workbay-user-alice',
  'workspaces/x/full.tar@workbay-user-bob',
  'core.sshCommand',
  'ext::sh -c id',
  'file:///etc',
  '-1',
  '1h',
  '-5m',
  '999999999h',
  'x'.repeat(70_000),
  'é'.repeat(40_000),
);
export const str = fc.oneof(
  { weight: 3, arbitrary: nasty },
  { weight: 3, arbitrary: fc.string({ maxLength: 40 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', minLength: 200, maxLength: 3000 }) },
);
// Numbers as the wire can carry them (the client refuses to encode anything else): adversarial within the type.
export const enumValue = fc.oneof(
  fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
  fc.constantFrom(-1, 0, 1, 2, 3, 999, 2 ** 31 - 1, -(2 ** 31)),
);
export const uint32 = fc.oneof(fc.nat({ max: 2 ** 32 - 1 }), fc.constantFrom(0, 1, 22, 65_535, 65_536, 2 ** 32 - 1));
export const int64 = fc.oneof(
  fc.maxSafeInteger(),
  fc.constantFrom(-1, 0, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER),
);
export const uint64 = fc.oneof(fc.maxSafeNat(), fc.constantFrom(0, 1, Number.MAX_SAFE_INTEGER));
export const strings = fc.array(str, { maxLength: 5 });
export const dict = fc.dictionary(str, str, { maxKeys: 4 });

export const initializer: fc.Arbitrary<contentservice.WorkspaceInitializer> = fc.letrec<{
  init: contentservice.WorkspaceInitializer;
}>((tie) => ({
  init: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constant(contentservice.WorkspaceInitializer.fromPartial({})),
    fc.constant(contentservice.WorkspaceInitializer.fromPartial({ spec: { $case: 'empty', value: {} } })),
    fc
      .record({ remoteUri: str, checkoutLocation: str, cloneTaget: str, targetMode: enumValue, customConfig: dict })
      .map((g) =>
        contentservice.WorkspaceInitializer.fromPartial({
          spec: {
            $case: 'git',
            value: { ...g, config: { customConfig: g.customConfig, authPassword: 'fuzz-secret' } },
          },
        }),
      ),
    str.map((snapshot) =>
      contentservice.WorkspaceInitializer.fromPartial({ spec: { $case: 'snapshot', value: { snapshot } } }),
    ),
    str.map((checkoutLocation) =>
      contentservice.WorkspaceInitializer.fromPartial({ spec: { $case: 'backup', value: { checkoutLocation } } }),
    ),
    fc.record({ url: str, filePath: str, digest: str }).map((f) =>
      contentservice.WorkspaceInitializer.fromPartial({
        spec: { $case: 'download', value: { files: [f], targetLocation: f.filePath } },
      }),
    ),
    fc
      .array(tie('init'), { maxLength: 3 })
      .map((initializer) =>
        contentservice.WorkspaceInitializer.fromPartial({ spec: { $case: 'composite', value: { initializer } } }),
      ),
  ),
})).init;

export const port = fc.record({ port: uint32, visibility: enumValue, protocol: enumValue, url: str });
export const id = fc.oneof({ weight: 4, arbitrary: str }, { weight: 1, arbitrary: fc.constant(target) });

/** A StartWorkspace request with random fields and at least one field that is invalid by construction. */
export const badStart = fc
  .tuple(
    fc.record({
      id: str,
      servicePrefix: str,
      owner: str,
      metaId: str,
      annotations: dict,
      image: str,
      initializer,
      ports: fc.array(port, { maxLength: 4 }),
      env: fc.array(fc.record({ name: str, value: str }), { maxLength: 4 }),
      location: str,
      timeout: str,
      admission: enumValue,
      klass: str,
      keys: strings,
      type: enumValue,
    }),
    fc.constantFrom('id', 'owner', 'port', 'timeout', 'image', 'env', 'key'),
  )
  .map(([r, broken]) =>
    wsman.StartWorkspaceRequest.fromPartial({
      id: broken === 'id' ? '../' + r.id : r.id,
      servicePrefix: r.servicePrefix,
      metadata: { owner: broken === 'owner' ? '' : r.owner, metaId: r.metaId, annotations: r.annotations },
      spec: {
        workspaceImage: broken === 'image' ? '' : r.image,
        initializer: r.initializer,
        ports: broken === 'port' ? [...r.ports, { port: 70_000 }] : r.ports,
        envvars: broken === 'env' ? [...r.env, { name: '1=bad name', value: 'x' }] : r.env,
        workspaceLocation: r.location,
        timeout: broken === 'timeout' ? 'not a duration' : r.timeout,
        admission: r.admission,
        class: r.klass,
        sshPublicKeys: broken === 'key' ? [...r.keys, 'not a key'] : r.keys,
      },
      type: r.type,
    }),
  );

/** A non-OK answer must be a sensible refusal; an OK answer is allowed where the RPC tolerates it. */
export function check(name: string, o: CallOutcome, mustRefuse: boolean): void {
  if (o.ok && !mustRefuse) return;
  if (!isSensibleRefusal(o)) throw new Error(`${name}: not a sensible refusal: ${show(o)}`);
}

/** Failure reports quote the counterexample; huge generated strings are cut so the report stays readable. */
export const reporter = <Ts>(details: fc.RunDetails<Ts>): void => {
  if (!details.failed) return;
  const cause = details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance);
  const text = `${cause.slice(0, 1500)}\n${fc.defaultReportMessage(details) ?? 'property failed'}`;
  throw new Error(text.replace(/(.)\1{50,}/gu, (m, c: string) => `${c.repeat(5)}…(${m.length}×)`).slice(0, 4000));
};
export const settings = { numRuns, endOnFailure: true, reporter } as const;
/** Defers a property so each RPC runs as its own test. */
export const run =
  <Ts extends [unknown, ...unknown[]]>(property: fc.IAsyncPropertyWithHooks<Ts>) =>
  (): Promise<void> =>
    fc.assert(property, settings);
