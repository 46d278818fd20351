import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { Option } from 'commander';
import { parseGoDuration, portProtocol, portVisibility, timeoutType, wsman } from '@workbay/api';
import type { PortProtocol, PortVisibility } from '@workbay/api';
import { CliError, ExitCode } from '../exit-codes.js';
import { float32Decimal, portLine, table } from '../format.js';
import type { ActionWrapper } from '../program.js';
import { parseAdmission } from '../start-request.js';

export function registerControlCommands(program: Command, wrap: ActionWrapper): void {
  program
    .command('snapshot')
    .description('take a snapshot of a running workspace; prints <object>@<bucket> for `start --snapshot`')
    .argument('<id>', 'instance id')
    .option('--no-wait', 'return as soon as the snapshot is named, before the upload completes')
    .action(
      wrap(async (ctx, id, flags) => {
        const { wait } = flags as { wait: boolean };
        const { url } = await ctx.client.takeSnapshot(
          { id: id as string, returnImmediately: !wait },
          wait ? { ...ctx.call(), timeoutMs: ctx.waitTimeoutMs } : ctx.call(),
        );
        if (ctx.json) ctx.printJson({ id, snapshot: url, complete: wait });
        else ctx.out(`${url}\n`);
      }),
    );

  program
    .command('backup')
    .description("back up a running workspace's content now")
    .argument('<id>', 'instance id')
    .action(
      wrap(async (ctx, id) => {
        const { url } = await ctx.client.backupWorkspace(
          { id: id as string },
          { ...ctx.call(), timeoutMs: ctx.waitTimeoutMs },
        );
        if (ctx.json) ctx.printJson({ id, backup: url });
        else ctx.out(`${url}\n`);
      }),
    );

  program
    .command('timeout')
    .description('set a workspace timeout (a Go duration such as 45m or 2h; 0 disables the closed timeout)')
    .argument('<id>', 'instance id')
    .argument('<duration>', 'the new timeout')
    .addOption(
      new Option('--type <type>', 'inactivity: after the last activity; closed: after the IDE closed')
        .choices(['inactivity', 'closed'])
        .default('inactivity'),
    )
    .action(
      wrap(async (ctx, id, duration, flags) => {
        const { type } = flags as { type: 'inactivity' | 'closed' };
        parseGoDuration(duration as string, 'duration');
        await ctx.client.setTimeout(
          {
            id: id as string,
            duration: duration as string,
            type: timeoutType.toProto(type === 'closed' ? 'closed' : 'workspace'),
          },
          ctx.call(),
        );
        if (ctx.json) ctx.printJson({ id, type, duration });
        else ctx.out(`${String(id)}: ${type} timeout set to ${String(duration)}\n`);
      }),
    );

  const port = program.command('port').description('expose or unexpose a workspace port');
  port
    .command('expose')
    .description('expose a port (again, to change its visibility or protocol)')
    .argument('<id>', 'instance id')
    .argument('<port>', 'port number')
    .addOption(
      new Option('--visibility <visibility>', 'who may open it').choices(['private', 'public']).default('private'),
    )
    .option('--public', 'shorthand for --visibility public')
    .addOption(
      new Option('--protocol <protocol>', 'how the proxy talks to it').choices(['http', 'https']).default('http'),
    )
    .action(
      wrap(async (ctx, id, portText, flags) => {
        const f = flags as { visibility: PortVisibility; public?: boolean; protocol: PortProtocol };
        const number = parsePort(portText as string);
        const visibility: PortVisibility = f.public ? 'public' : f.visibility;
        await ctx.client.controlPort(
          {
            id: id as string,
            expose: true,
            spec: {
              port: number,
              visibility: portVisibility.toProto(visibility),
              protocol: portProtocol.toProto(f.protocol),
            },
          },
          ctx.call(),
        );
        const exposed = await exposedPort(ctx, id as string, number);
        if (ctx.json) ctx.printJson({ id, port: number, visibility, protocol: f.protocol, url: exposed?.url ?? '' });
        else ctx.out(`${String(id)}: ${exposed ? portLine(exposed) : `${number} exposed`}\n`);
      }),
    );
  port
    .command('unexpose')
    .description('stop exposing a port')
    .argument('<id>', 'instance id')
    .argument('<port>', 'port number')
    .action(
      wrap(async (ctx, id, portText) => {
        const number = parsePort(portText as string);
        await ctx.client.controlPort({ id: id as string, expose: false, spec: { port: number } }, ctx.call());
        if (ctx.json) ctx.printJson({ id, port: number, exposed: false });
        else ctx.out(`${String(id)}: port ${number} no longer exposed\n`);
      }),
    );

  program
    .command('admission')
    .description('who may open the workspace: its owner only, or everyone')
    .argument('<id>', 'instance id')
    .argument('<level>', 'owner | everyone')
    .action(
      wrap(async (ctx, id, level) => {
        if (level !== 'owner' && level !== 'everyone') {
          throw new CliError(`admission level must be 'owner' or 'everyone', not '${String(level)}'`, ExitCode.usage);
        }
        await ctx.client.controlAdmission({ id: id as string, level: parseAdmission(level) }, ctx.call());
        if (ctx.json) ctx.printJson({ id, admission: level });
        else ctx.out(`${String(id)}: admission ${level}\n`);
      }),
    );

  program
    .command('ssh-key')
    .description("replace the workspace's authorized SSH keys with the keys in these files")
    .argument('<id>', 'instance id')
    .argument('<file...>', 'public key files (one key per line; # comments and blank lines are skipped)')
    .action(
      wrap(async (ctx, id, files) => {
        const keys: string[] = [];
        for (const file of files as string[]) {
          let text: string;
          try {
            text = await readFile(file, 'utf8');
          } catch (error) {
            throw new CliError(`cannot read '${file}': ${(error as Error).message}`, ExitCode.usage);
          }
          keys.push(
            ...text
              .split('\n')
              .map((l) => l.trim())
              .filter((l) => l && !l.startsWith('#')),
          );
        }
        if (keys.length === 0) throw new CliError('no keys found in the given files', ExitCode.usage);
        await ctx.client.updateSshKey({ id: id as string, keys }, ctx.call());
        if (ctx.json) ctx.printJson({ id, keys: keys.length });
        else ctx.out(`${String(id)}: ${keys.length} SSH key${keys.length === 1 ? '' : 's'} installed\n`);
      }),
    );

  program
    .command('classes')
    .description('list the workspace classes the manager offers')
    .action(
      wrap(async (ctx) => {
        const response = await ctx.client.describeCluster({}, ctx.call());
        if (ctx.json) {
          const json = wsman.DescribeClusterResponse.toJSON(response) as {
            workspaceClasses?: { creditsPerMinute?: number }[];
          };
          // Credits travel as a float32: print them as configured.
          for (const c of json.workspaceClasses ?? []) {
            if (typeof c.creditsPerMinute === 'number') c.creditsPerMinute = float32Decimal(c.creditsPerMinute);
          }
          ctx.printJson(json);
          return;
        }
        const rows = response.workspaceClasses.map((c) => [
          c.id === response.preferredWorkspaceClass ? `${c.id} *` : c.id,
          c.displayName,
          c.description,
          c.creditsPerMinute ? String(float32Decimal(c.creditsPerMinute)) : '',
        ]);
        ctx.out(table(['ID', 'NAME', 'DESCRIPTION', 'CREDITS/MIN'], rows));
        if (response.preferredWorkspaceClass) ctx.out('* preferred class\n');
      }),
    );
}

function parsePort(text: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < 1 || n > 65535) throw new CliError(`'${text}' is not a port number`, ExitCode.usage);
  return n;
}

async function exposedPort(
  ctx: Parameters<Parameters<ActionWrapper>[0]>[0],
  id: string,
  port: number,
): Promise<wsman.PortSpec | undefined> {
  const { status } = await ctx.client.describeWorkspace({ id }, ctx.call());
  return status?.spec?.exposedPorts.find((p) => p.port === port);
}
