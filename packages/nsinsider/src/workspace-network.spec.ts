import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ownCgroupPath } from './cgroup-setup.js';
import { isNsinsiderError, isNsinsiderValidationError } from './errors.js';
import { runCommand } from './exec.js';
import {
  attachVethToNetns,
  claimVethPair,
  createNetns,
  createWorkspaceVeth,
  deleteLink,
  deleteNetns,
  listLinks,
  listNetns,
} from './workspace-network.js';
import { ensureWorkspaceFirewall, readWorkspaceFirewall, workspaceFirewallRuleset } from './workspace-firewall.js';
import { nonPublicNetworks } from './special-networks.js';

const isRoot = process.getuid?.() === 0;
// Names of our own: not the runtime's `wbv` prefix, so the host firewall and other tests leave them alone.
const name = `wbt${process.pid % 100000}`;

describe('workspaceFirewallRuleset', () => {
  it('drops new connections from workspace links to the host and between workspaces, masquerades the rest', () => {
    const rules = workspaceFirewallRuleset({ ifPrefix: 'wbv' });
    expect(rules).toContain('table inet workbay {');
    expect(rules).toContain('chain input { type filter hook input priority filter - 10; policy accept; }');
    expect(rules).toMatch(
      /chain input \{\n\s+iifname "wbv\*" ct state established,related accept\n\s+iifname "wbv\*" counter drop/,
    );
    expect(rules).toContain('iifname "wbv*" oifname "wbv*" counter drop');
    expect(rules).toContain('oifname "wbv*" counter drop');
    expect(rules).toContain('iifname "wbv*" ip daddr 169.254.0.0/16 counter drop');
    expect(rules).toContain('iifname "wbv*" oifname != "wbv*" masquerade');
  });
  it('with egress: resolvers on port 53 before the link-local drop, allowed networks before the blocked ones', () => {
    const rules = workspaceFirewallRuleset({
      ifPrefix: 'wbv',
      egress: {
        blocked: [...nonPublicNetworks.ipv4, ...nonPublicNetworks.ipv6],
        allowed: ['10.1.2.0/24', 'fd00:1::/64'],
        dns: ['169.254.169.253', '10.255.255.53'],
      },
    });
    const line = (text: string): number => rules.split('\n').findIndex((l) => l.includes(text));
    const resolvers = line('ip daddr { 169.254.169.253, 10.255.255.53 } meta l4proto { tcp, udp } th dport 53 accept');
    const linkLocal = line('ip daddr 169.254.0.0/16 counter drop');
    const allowed = line('iifname "wbv*" ip daddr { 10.1.2.0/24 } accept');
    const blocked = line('iifname "wbv*" ip daddr { 0.0.0.0/8, 10.0.0.0/8,');
    const flows = line('ct count over');
    expect([flows, resolvers, linkLocal, allowed, blocked].every((i) => i > 0)).toBe(true);
    expect(flows).toBeLessThan(resolvers);
    expect(resolvers).toBeLessThan(linkLocal);
    expect(linkLocal).toBeLessThan(allowed);
    expect(allowed).toBeLessThan(blocked);
    expect(rules).toContain('iifname "wbv*" ip6 daddr { fd00:1::/64 } accept');
    expect(rules).toContain(`iifname "wbv*" ip6 daddr { ${nonPublicNetworks.ipv6.join(', ')} } counter drop`);
  });
  it('refuses egress entries that are not addresses or CIDRs (they go into an nft script)', () => {
    for (const bad of [
      '10.0.0.0/8 } accept; {',
      'example.com',
      '10.0.0.0/33',
      '::1/129',
      'fe80::1%eth0',
      '1.2.3.4/8/8',
    ]) {
      let error: unknown;
      try {
        workspaceFirewallRuleset({ ifPrefix: 'wbv', egress: { blocked: [], allowed: [bad] } });
      } catch (e) {
        error = e;
      }
      expect(isNsinsiderValidationError(error) && error.field, bad).toBe('egress.allowed');
    }
  });
  it('refuses a prefix that could match more than workspace links', () => {
    for (const bad of ['', '*', 'w"b', '1ab', 'toolongprefix1']) {
      let error: unknown;
      try {
        workspaceFirewallRuleset({ ifPrefix: bad });
      } catch (e) {
        error = e;
      }
      expect(isNsinsiderValidationError(error) && error.field).toBe('ifPrefix');
    }
  });
});

describe('argument checks (nothing is run)', () => {
  it('names the bad field', async () => {
    await expect(createNetns('../x')).rejects.toMatchObject({ field: 'name' });
    await expect(deleteLink('a b')).rejects.toMatchObject({ field: 'ifName' });
    await expect(claimVethPair({ hostIfName: 'ok', alias: 'x\ny' })).rejects.toMatchObject({ field: 'alias' });
    await expect(attachVethToNetns({ hostIfName: 'ok', netns: 'n', cidr: '10.0.0.0/31' })).rejects.toMatchObject({
      field: 'cidr',
    });
  });
});

describe('ownCgroupPath', () => {
  let dir: string | undefined;
  afterEach(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  it('makes the v1 memory entry relative to the mount root, and reads the v2 unified entry', async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'own-cg-'));
    await writeFile(path.join(dir, 'cgroup'), '9:pids:/svc\n4:memory:/kubepods/pod1/ctr\n0::/unified/me\n');
    await writeFile(
      path.join(dir, 'mountinfo'),
      '35 31 0:32 /kubepods/pod1 /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n' +
        '41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n',
    );
    expect(await ownCgroupPath({ version: 'v1', roots: { memory: '/sys/fs/cgroup/memory' } }, dir)).toBe('ctr');
    expect(await ownCgroupPath({ version: 'v2', root: '/sys/fs/cgroup/unified' }, dir)).toBe('unified/me');
  });
});

describe.runIf(isRoot)('workspace networks on the host (root)', () => {
  afterEach(async () => {
    await deleteLink(name).catch(() => undefined);
    await deleteNetns(name).catch(() => undefined);
  });

  it('claims a veth name once, attaches it to a named netns, and removes both', async () => {
    await claimVethPair({ hostIfName: name, alias: `workbay test ${name}` });
    const second = await claimVethPair({ hostIfName: name, alias: 'someone else' }).catch((e: unknown) => e);
    expect(isNsinsiderError(second) && second.code).toBe('EEXIST');
    expect(await listLinks(name)).toContainEqual({ name, alias: `workbay test ${name}` });

    await createNetns(name);
    expect(await listNetns(name)).toEqual([name]);
    const pair = await attachVethToNetns({ hostIfName: name, netns: name, cidr: '10.199.7.4/30' });
    expect(pair).toEqual({
      hostIfName: name,
      peerIfName: 'eth0',
      hostAddress: '10.199.7.5',
      peerAddress: '10.199.7.6',
      prefixLength: 30,
    });
    const inside = await runCommand('ip', ['-n', name, '-j', 'route']);
    expect(JSON.parse(inside.stdout)).toContainEqual(
      expect.objectContaining({ dst: 'default', gateway: '10.199.7.5' }),
    );
    // The host reaches the inside address over the pair; the host end has no IPv6 address.
    const ping = await runCommand('ping', ['-c', '1', '-W', '2', '10.199.7.6']);
    if (ping.spawnError === undefined) expect(ping.exitCode).toBe(0);
    const hostEnd = await runCommand('ip', ['-j', 'addr', 'show', name]);
    const families = (JSON.parse(hostEnd.stdout) as Array<{ addr_info: Array<{ family: string }> }>)[0]!.addr_info.map(
      (a) => a.family,
    );
    expect(families).toEqual(['inet']);

    expect(await deleteLink(name)).toBe(true);
    expect(await deleteLink(name)).toBe(false);
    expect(await deleteNetns(name)).toBe(true);
    expect(await deleteNetns(name)).toBe(false);
    expect(await listNetns(name)).toEqual([]);
  });

  it('creates the pair with its peer directly in the netns, once per host end name', async () => {
    await createNetns(name);
    const pair = await createWorkspaceVeth({
      hostIfName: name,
      alias: `workbay test ${name}`,
      netns: name,
      cidr: '10.199.6.8/30',
    });
    expect(pair).toMatchObject({ hostAddress: '10.199.6.9', peerAddress: '10.199.6.10', peerIfName: 'eth0' });
    expect(await listLinks(name)).toContainEqual({ name, alias: `workbay test ${name}` });
    const again = await createWorkspaceVeth({
      hostIfName: name,
      alias: 'someone else',
      netns: name,
      cidr: '10.199.6.8/30',
    }).catch((e: unknown) => e);
    expect(isNsinsiderError(again) && again.code).toBe('EEXIST');
    // The first owner's link is untouched by the refused claim.
    expect(await listLinks(name)).toContainEqual({ name, alias: `workbay test ${name}` });
    const inside = await runCommand('ip', ['-n', name, '-j', 'addr', 'show', 'eth0']);
    expect(inside.stdout).toContain('10.199.6.10');
    const hostEnd = await runCommand('ip', ['-j', 'addr', 'show', name]);
    const families = (JSON.parse(hostEnd.stdout) as Array<{ addr_info: Array<{ family: string }> }>)[0]!.addr_info.map(
      (a) => a.family,
    );
    expect(families).toEqual(['inet']);
  });

  it('an egress ruleset is one nft takes (checked by nft itself, nothing applied)', async () => {
    const rules = workspaceFirewallRuleset({
      ifPrefix: 'wbv',
      egress: {
        blocked: [...nonPublicNetworks.ipv4, ...nonPublicNetworks.ipv6],
        allowed: ['10.1.2.0/24', '10.9.9.9', 'fd00:1::/64'],
        dns: ['169.254.169.253', 'fd00::53'],
      },
    });
    const checked = await runCommand('nft', ['-c', '-f', '-'], { input: rules });
    expect(checked.stderr).toBe('');
    expect(checked.exitCode).toBe(0);
  });

  it('installs the host table idempotently', async () => {
    // The node's real table, which runtimes of other spec files install meanwhile: the same egress as theirs, so
    // that none of their workspaces is left reaching private addresses while this runs.
    const egress = { blocked: [...nonPublicNetworks.ipv4, ...nonPublicNetworks.ipv6] };
    await ensureWorkspaceFirewall({ ifPrefix: 'wbv', egress });
    await ensureWorkspaceFirewall({ ifPrefix: 'wbv', egress });
    const table = (await readWorkspaceFirewall())!;
    expect(table.match(/chain input/g)).toHaveLength(1);
    expect(table.match(/masquerade/g)).toHaveLength(1);
  });
});
