import type { Command } from 'commander';
import { Option } from 'commander';
import { NotFoundError, isWorkbayError, stopPolicy, workspacePhase, wsman } from '@workbay/api';
import type { StopPolicy, WorkspacePhase } from '@workbay/api';
import { ownerTokenQuery } from '../../proxy/port-proxy.js';
import type { CliContext } from '../context.js';
import { CliError, ExitCode } from '../exit-codes.js';
import {
  conditionList,
  describeStatus,
  phaseOf,
  statusJson,
  table,
  workspaceListHead,
  workspaceRow,
} from '../format.js';
import type { ActionWrapper } from '../program.js';
import { collect, defaultOwner } from '../program.js';
import { buildStartRequest, parseKeyValue } from '../start-request.js';
import type { StartFlags } from '../start-request.js';
import { follow, untilRunning, untilStopped } from '../wait.js';

interface FilterFlags {
  readonly owner?: string;
  readonly metaId?: string;
  readonly annotation: string[];
}

function filterOptions(command: Command): Command {
  return command
    .option('--owner <owner>', 'only workspaces of this owner')
    .option('--meta-id <id>', 'only instances of this workspace (meta id)')
    .option('--annotation <key=value>', 'only workspaces with this annotation (repeatable)', collect, []);
}

function metadataFilter(flags: FilterFlags): wsman.MetadataFilter {
  return wsman.MetadataFilter.fromPartial({
    owner: flags.owner ?? '',
    metaId: flags.metaId ?? '',
    annotations: Object.fromEntries(flags.annotation.map((a) => parseKeyValue(a, '--annotation'))),
  });
}

function parsePhases(values: readonly string[]): Set<WorkspacePhase> {
  // `RUNNING` (the proto's spelling) is taken for `running`, the one the CLI prints.
  const phases = values.map((v) => v.toLowerCase());
  for (const [i, v] of phases.entries()) {
    if (!workspacePhase.is(v)) {
      throw new CliError(
        `--phase: '${values[i]!.slice(0, 40)}' is not one of ${workspacePhase.values.join(', ')}`,
        ExitCode.usage,
      );
    }
  }
  return new Set(phases as WorkspacePhase[]);
}

export function registerWorkspaceCommands(program: Command, wrap: ActionWrapper): void {
  filterOptions(program.command('list').alias('ls').description('list workspaces'))
    .option('--phase <phase>', 'only workspaces in this phase (repeatable)', collect, [])
    .action(
      wrap(async (ctx, flags) => {
        const f = flags as FilterFlags & { phase: string[] };
        const phases = parsePhases(f.phase);
        const { status } = await ctx.client.getWorkspaces({ mustMatch: metadataFilter(f) }, ctx.call());
        const shown = status
          .filter((s) => phases.size === 0 || phases.has(phaseOf(s)))
          .sort((a, b) => (a.metadata?.startedAt?.getTime() ?? 0) - (b.metadata?.startedAt?.getTime() ?? 0));
        if (ctx.json) ctx.printJson(shown.map(statusJson));
        else if (shown.length === 0) ctx.err('No workspaces.\n');
        else
          ctx.out(
            table(
              workspaceListHead,
              shown.map((s) => workspaceRow(s)),
            ),
          );
      }),
    );

  program
    .command('start')
    .description('start a workspace (prints its URL and owner token)')
    .option('--image <ref>', 'workspace image; unmapped images run the built-in default workspace', 'workbay/default')
    .option('--id <instanceId>', 'instance id (default: a random UUID)')
    .option('--meta-id <id>', 'workspace (meta) id, stable across restarts (default: random)')
    .option('--owner <owner>', 'owner (default: WORKBAY_OWNER or your user name)')
    .option('--class <class>', 'workspace class (see `workbay classes`)')
    .addOption(
      new Option('--type <type>', 'workspace type')
        .choices(['regular', 'prebuild', 'probe', 'imagebuild'])
        .default('regular'),
    )
    .option('--port <port[:public|private][:http|https]>', 'expose a port (repeatable)', collect, [])
    .option(
      '--env <NAME=VALUE>',
      'environment variable; NAME alone copies it from here, which keeps a secret off this command line (repeatable)',
      collect,
      [],
    )
    .option('--annotation <key=value>', 'metadata annotation (repeatable)', collect, [])
    .option('--location <path>', 'workspace location inside the content (default: repo name or meta id)')
    .option('--service-prefix <prefix>', 'service prefix for URLs (default: the meta id)')
    .option('--git <url>', 'initialize by cloning this Git repository')
    .option('--branch <branch>', 'with --git: check out this branch')
    .option('--commit <sha>', 'with --git: check out this commit')
    .option('--snapshot <object@bucket>', 'initialize from a snapshot (see `workbay snapshot`)')
    .option('--backup', "initialize from the workspace's last backup (same --meta-id)")
    .option('--empty', 'start with empty content (the default)')
    .option('--inactivity-timeout <duration>', 'inactivity timeout, e.g. 30m')
    .option('--closed-timeout <duration>', 'timeout after the IDE closed, e.g. 2m')
    .option('--max-lifetime <duration>', 'hard cap on the lifetime, e.g. 36h')
    .addOption(new Option('--admission <level>', 'who may open the workspace').choices(['owner', 'everyone']))
    .option('--git-user-name <name>', 'Git author name inside the workspace')
    .option('--git-user-email <email>', 'Git author email inside the workspace')
    .option('--wait', 'wait until the workspace runs, showing progress on stderr')
    .action(
      wrap(async (ctx, flags) => {
        const f = flags as StartFlags & { wait?: boolean };
        const request = buildStartRequest(f, ctx.io.env, defaultOwner(ctx.io.env));
        const target = { id: request.id, metaId: request.metadata?.metaId };
        let response: wsman.StartWorkspaceResponse | undefined;
        const start = async (): Promise<wsman.WorkspaceStatus | undefined> => {
          response = await ctx.client.startWorkspace(request, ctx.call());
          if (!f.wait) return undefined;
          return (await ctx.client.describeWorkspace({ id: request.id }, ctx.call())).status;
        };
        let final: wsman.WorkspaceStatus | undefined;
        if (f.wait) final = await follow(ctx, target, untilRunning, start);
        else await start();
        const r = response!;
        if (ctx.json) {
          ctx.printJson({
            id: request.id,
            metaId: target.metaId,
            url: r.url,
            ownerToken: r.ownerToken,
            ...(final ? { phase: phaseOf(final), status: statusJson(final) } : {}),
          });
        } else {
          ctx.out(
            `${request.id}\n` +
              `  workspace    ${target.metaId}\n` +
              `  url          ${r.url}\n` +
              `  owner token  ${r.ownerToken}\n` +
              `  open         ${withToken(r.url, r.ownerToken)}\n` +
              (final ? `  phase        ${phaseOf(final)}\n` : ''),
          );
        }
      }),
    );

  program
    .command('stop')
    .description('stop one or more workspaces')
    .argument('<id...>', 'instance ids')
    .addOption(
      new Option('--policy <policy>', 'normally (30s grace, final backup), immediately (1s), abort (1s, no backup)')
        .choices(['normally', 'immediately', 'abort'])
        .default('normally'),
    )
    .option('--wait', 'wait until each workspace is stopped')
    .action(
      wrap(async (ctx, ids, flags) => {
        const f = flags as { policy: StopPolicy; wait?: boolean };
        const results: { id: string; phase: string; failed?: string }[] = [];
        for (const id of ids as string[]) {
          const stop = async (): Promise<wsman.WorkspaceStatus | undefined> => {
            await ctx.client.stopWorkspace({ id, policy: stopPolicy.toProto(f.policy) }, ctx.call());
            return describeOrStopped(ctx, id);
          };
          if (f.wait) {
            const before = await ctx.client.describeWorkspace({ id }, ctx.call());
            const status = await follow(ctx, { id, metaId: before.status?.metadata?.metaId }, untilStopped, stop);
            results.push({ id, phase: phaseOf(status), failed: status.conditions?.failed || undefined });
          } else {
            await stop();
            results.push({ id, phase: 'stopping' });
          }
        }
        if (ctx.json) ctx.printJson(results);
        else for (const r of results) ctx.out(`${r.id} ${r.phase}${r.failed ? ` (failed: ${r.failed})` : ''}\n`);
      }),
    );

  program
    .command('describe')
    .description('show everything about one workspace')
    .argument('<id>', 'instance id')
    .option('--show-token', 'include the owner token')
    .action(
      wrap(async (ctx, id, flags) => {
        const f = flags as { showToken?: boolean };
        const { status, lastActivity } = await ctx.client.describeWorkspace({ id: id as string }, ctx.call());
        if (!status) throw new NotFoundError(`workspace ${String(id)} not found`);
        if (ctx.json) {
          const json = statusJson(status) as { auth?: { ownerToken?: string } };
          if (!f.showToken && json.auth?.ownerToken) json.auth.ownerToken = '';
          ctx.printJson({ status: json, lastActivity });
        } else {
          ctx.out(describeStatus(status, lastActivity, { showToken: f.showToken === true }));
        }
      }),
    );

  filterOptions(program.command('watch').description('follow status changes live (Ctrl+C to end)'))
    .option('--id <instanceId>', 'only this instance (repeatable)', collect, [])
    .option('--phase <phase>', 'only updates into this phase (repeatable)', collect, [])
    .action(
      wrap(async (ctx, flags) => {
        const f = flags as FilterFlags & { id: string[]; phase: string[] };
        return watch(ctx, metadataFilter(f), new Set(f.id), parsePhases(f.phase));
      }),
    );
}

/** The workspace URL that logs the owner in through the port proxy (it turns the token into a cookie). */
function withToken(url: string, token: string): string {
  try {
    const u = new URL(url);
    u.searchParams.set(ownerTokenQuery, token);
    return u.toString();
  } catch {
    // Deliberate: a URL we cannot parse is shown as it is, without the login token.
    return url;
  }
}

/** After StopWorkspace: the current status, or a synthetic STOPPED one if the manager already forgot it. */
async function describeOrStopped(ctx: CliContext, id: string): Promise<wsman.WorkspaceStatus> {
  try {
    const { status } = await ctx.client.describeWorkspace({ id }, ctx.call());
    if (status) return status;
  } catch (error) {
    if (!isWorkbayError(error, 'not-found')) throw error;
  }
  return wsman.WorkspaceStatus.fromPartial({
    id,
    phase: wsman.WorkspacePhase.STOPPED,
    statusVersion: Number.MAX_SAFE_INTEGER,
  });
}

/**
 * Prints one line (or JSON object) per update until interrupted. When the stream breaks, reconnects and resumes
 * after the last status_version seen (the manager's resume extension); when the manager cannot replay the gap,
 * prints the current state of every matching workspace instead.
 */
async function watch(
  ctx: CliContext,
  filter: wsman.MetadataFilter,
  ids: Set<string>,
  phases: Set<WorkspacePhase>,
): Promise<number> {
  let lastVersion = 0;
  let backoffMs = 250;
  const print = (status: wsman.WorkspaceStatus | undefined, note?: string): void => {
    if (!status || (ids.size > 0 && !ids.has(status.id))) return;
    if (status.statusVersion > lastVersion) lastVersion = status.statusVersion;
    const phase = phaseOf(status);
    if (phases.size > 0 && !phases.has(phase)) return;
    if (ctx.json) {
      ctx.printJson(statusJson(status), false);
      return;
    }
    const conditions = conditionList(status.conditions)
      .filter((c) => !c.startsWith('first user activity'))
      .join('; ');
    const when = new Date().toISOString().slice(11, 23);
    ctx.out(
      `${when}  ${status.id}  ${status.metadata?.metaId ?? ''}  ${phase}${conditions ? `  ${conditions}` : ''}${note ? `  (${note})` : ''}\n`,
    );
  };
  const resync = async (): Promise<void> => {
    const { status } = await ctx.client.getWorkspaces({ mustMatch: filter }, ctx.call());
    for (const s of status) print(s, 'resync');
  };

  const signal = ctx.io.signal;
  // A manager that is not there at all is an error; a stream that breaks later is reconnected.
  try {
    await ctx.client.waitForReady(Date.now() + (ctx.call().timeoutMs ?? 30_000));
  } catch (error) {
    throw new CliError(
      `cannot reach the manager at ${ctx.options.address}: ${(error as Error).message}`,
      ExitCode.unavailable,
    );
  }
  while (!signal?.aborted) {
    const ended = await new Promise<unknown>((resolve) => {
      const subscription = ctx.client
        .subscribe$({ mustMatch: filter, resumeFromStatusVersion: lastVersion }, { signal })
        .subscribe({
          next: (response) => {
            backoffMs = 250;
            if (response.resyncRequired) {
              resync().catch((error: unknown) => ctx.err(`workbay: resync failed: ${String(error)}\n`));
            }
            print(response.status);
          },
          error: (error: unknown) => resolve(error),
          complete: () => resolve(undefined),
        });
      const onAbort = (): void => {
        subscription.unsubscribe();
        resolve(undefined);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      subscription.add(() => signal?.removeEventListener('abort', onAbort));
    });
    if (signal?.aborted) break;
    // Transient breaks (manager restart, slow-subscriber cut-off) reconnect; anything else ends the command.
    if (ended !== undefined && !isReconnectable(ended)) throw ended;
    ctx.err(`workbay: status stream ended${ended ? ` (${(ended as Error).message})` : ''}; reconnecting\n`);
    await new Promise((r) => setTimeout(r, backoffMs));
    backoffMs = Math.min(backoffMs * 2, 5_000);
  }
  return ExitCode.ok;
}

function isReconnectable(error: unknown): boolean {
  return (
    isWorkbayError(error, 'unavailable') ||
    isWorkbayError(error, 'aborted') ||
    isWorkbayError(error, 'resource-exhausted') ||
    isWorkbayError(error, 'cancelled')
  );
}
