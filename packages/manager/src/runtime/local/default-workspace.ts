/**
 * The built-in default workspace: what the local runtime runs for an image reference that no `images` entry maps.
 * A small HTTP server on the IDE port that shows the workspace id and lists the workspace content, so that a plain
 * `workbay start` works without any configuration.
 *
 * Run as `node default-workspace.js --port <n> [--host <addr>] [--workspace-id <id>] [--instance-id <id>]
 * [--owner <owner>]`; the directory it lists is its working directory (the workspace content).
 *
 * Routes: `/` (HTML page), `/api/info` (the same as JSON), `/healthz` (plain `ok`).
 * It exits 0 on SIGTERM or SIGINT after closing the server.
 */
import { readdir } from 'node:fs/promises';
import http from 'node:http';
import { parseArgs } from 'node:util';

interface WorkspaceInfo {
  readonly workspaceId: string;
  readonly instanceId: string;
  readonly owner: string;
  readonly contentDir: string;
  readonly hostname: string;
  readonly pid: number;
  readonly entries: { name: string; type: 'dir' | 'file' | 'link' | 'other' }[];
  readonly truncated: boolean;
}

const maxEntries = 500;

function options(): { port: number; host: string; workspaceId: string; instanceId: string; owner: string } {
  const { values } = parseArgs({
    options: {
      port: { type: 'string' },
      host: { type: 'string' },
      'workspace-id': { type: 'string' },
      'instance-id': { type: 'string' },
      owner: { type: 'string' },
    },
  });
  const port = Number(values.port ?? process.env['WORKBAY_IDE_PORT'] ?? process.env['PORT']);
  if (!Number.isInteger(port) || port <= 0 || port > 65535) {
    process.stderr.write('default workspace: --port (or PORT) must be a port number\n');
    process.exit(2);
  }
  return {
    port,
    host: values.host ?? '127.0.0.1',
    workspaceId: values['workspace-id'] ?? process.env['WORKBAY_WORKSPACE_ID'] ?? '',
    instanceId: values['instance-id'] ?? process.env['WORKBAY_INSTANCE_ID'] ?? '',
    owner: values.owner ?? process.env['WORKBAY_OWNER'] ?? '',
  };
}

async function info(o: ReturnType<typeof options>): Promise<WorkspaceInfo> {
  // Deliberate: the page is informational; an unreadable directory is shown as empty rather than failing the IDE.
  const dirents = await readdir('.', { withFileTypes: true }).catch(() => []);
  const entries = dirents
    .map((d) => ({
      name: d.name,
      type: d.isDirectory()
        ? ('dir' as const)
        : d.isFile()
          ? ('file' as const)
          : d.isSymbolicLink()
            ? ('link' as const)
            : ('other' as const),
    }))
    .sort((a, b) => a.name.localeCompare(b.name));
  return {
    workspaceId: o.workspaceId,
    instanceId: o.instanceId,
    owner: o.owner,
    contentDir: process.cwd(),
    hostname: (await import('node:os')).hostname(),
    pid: process.pid,
    entries: entries.slice(0, maxEntries),
    truncated: entries.length > maxEntries,
  };
}

const escapeHtml = (s: string): string =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c);

function page(i: WorkspaceInfo): string {
  const rows = i.entries
    .map((e) => `<li class="${e.type}">${escapeHtml(e.name)}${e.type === 'dir' ? '/' : ''}</li>`)
    .join('\n');
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>Workspace ${escapeHtml(i.workspaceId)}</title>
<style>body{font-family:system-ui,sans-serif;margin:2rem}code{background:#eee;padding:0 .3em}.dir{font-weight:bold}</style></head>
<body>
<h1>Workspace <code>${escapeHtml(i.workspaceId)}</code></h1>
<p>Instance <code>${escapeHtml(i.instanceId)}</code>, owner <code>${escapeHtml(i.owner)}</code>, host <code>${escapeHtml(i.hostname)}</code></p>
<p>This is Workbay's built-in default workspace; map the image to a command of your own in the local runtime's <code>images</code> config.</p>
<h2>Content of <code>${escapeHtml(i.contentDir)}</code></h2>
<ul>
${rows || '<li><em>(empty)</em></li>'}
</ul>
${i.truncated ? `<p>Only the first ${maxEntries} entries are shown.</p>` : ''}
</body></html>
`;
}

function main(): void {
  const o = options();
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://workspace');
    if (url.pathname === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    }
    info(o).then(
      (i) => {
        if (url.pathname === '/api/info') {
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(i));
        } else if (url.pathname === '/') {
          res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(page(i));
        } else {
          res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
        }
      },
      (error: unknown) => res.writeHead(500).end(String(error)),
    );
  });
  server.listen(o.port, o.host, () => {
    process.stdout.write(`default workspace ${o.workspaceId} listening on http://${o.host}:${o.port}\n`);
  });
  server.on('error', (error) => {
    process.stderr.write(`default workspace: ${error.message}\n`);
    process.exit(1);
  });
  const shutdown = (): void => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  };
  process.once('SIGTERM', shutdown);
  process.once('SIGINT', shutdown);
}

main();
