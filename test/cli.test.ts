// The `farmem` command as a user runs it: the built bin/farmem.js (dist/, built by `npm test` first) in a
// child process, with real userfaultfd and real memory nodes on loopback. `farmem demo` is the README's
// first command; it checks its own checksum and exits 1 on a mismatch.
import { spawn, type ChildProcess } from 'node:child_process';
import * as net from 'node:net';
import * as path from 'node:path';
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { parseSize } from '../lib/units';
import { runChild } from './helpers';

const CLI = path.join(__dirname, '..', 'bin', 'farmem.js');
/** Runs the command to its end, in a child process (runChild: not spawnSync, so vitest's worker stays responsive). */
const farmem = (args: string[]) => runChild(CLI, args);

/** The number in a `  name   value` row of the demo's statistics. */
function row(stdout: string, name: string): number {
  const match = new RegExp(`^  ${name} +([0-9.]+)`, 'm').exec(stdout);
  if (!match) throw new Error(`no '${name}' row in:\n${stdout}`);
  return Number(match[1]);
}

/** Starts `farmem node` on a free port; resolves with its address once it says it listens. */
async function startNodeCommand(args: string[]): Promise<{ child: ChildProcess; address: string; output: () => string }> {
  const child = spawn(process.execPath, [CLI, 'node', '--port', '0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const deadline = Date.now() + 15_000;
  for (;;) {
    const match = /listening on (\S+),/.exec(output);
    if (match) return { child, address: match[1], output: () => output };
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`farmem node did not start:\n${output}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('farmem demo', () => {
  let node: ChildProcess | null = null;
  afterEach(() => {
    node?.kill('SIGKILL');
    node = null;
  });

  it('fills, checks and updates a region four times its budget on an embedded node, through eviction and write-back', async () => {
    const r = await farmem(['demo', '--budget', '8MiB', '--updates', '20000']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/region 32\.0 MiB, local budget 8\.00 MiB, memory node 127\.0\.0\.1:\d+ \(embedded\)/);
    expect(r.stdout).toMatch(/^checksum verified: 0x[0-9a-f]{8}$/m);
    // 24 MiB of the 32 never fit: they went out dirty and came back.
    expect(row(r.stdout, 'write-backs')).toBeGreaterThan(6144);
    expect(row(r.stdout, 'remote fetches') + row(r.stdout, 'prefetched pages')).toBeGreaterThan(6144);
    expect(row(r.stdout, 'zero-fills')).toBe(8192);
    const resident = /^  resident now +(\S+ \S+)$/m.exec(r.stdout);
    expect(resident).not.toBeNull();
    expect(parseSize(resident![1])).toBeLessThanOrEqual(8 << 20);
  });

  it('runs against a `farmem node` process with a token, and a wrong token is refused with FARMEM_AUTH', async () => {
    const started = await startNodeCommand(['--token', 'T', '--capacity', '64MiB']);
    node = started.child;
    expect(started.output()).toMatch(/capacity 64\.0 MiB, token required/);

    const ok = await farmem(['demo', '--node', started.address, '--token', 'T', '--budget', '8MiB', '--updates', '2000']);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/^checksum verified/m);
    expect(ok.stdout).not.toMatch(/embedded/);

    const wrong = await farmem(['demo', '--node', started.address, '--token', 'wrong', '--budget', '8MiB']);
    expect(wrong.code).toBe(1);
    expect(wrong.stdout).not.toMatch(/checksum/);
    expect(wrong.stderr).toBe(
      `farmem demo: memory node ${started.address} (urgent connection): wrong token — pass the token the node was started ` +
        'with (--token / { token }) [FARMEM_AUTH]\n',
    );

    // SIGTERM stops it cleanly.
    const exited = once(node, 'exit');
    node.kill('SIGTERM');
    const [code] = (await exited) as [number | null];
    node = null;
    expect(code).toBe(0);
    expect(started.output()).toMatch(/farmem memory node stopped/);
  });

  it('names an unreachable node, with FARMEM_NODE_UNREACHABLE, and exits 1', async () => {
    // A port that was just free: nothing listens there.
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    await new Promise((resolve) => server.close(resolve));
    const r = await farmem(['demo', '--node', `127.0.0.1:${port}`, '--budget', '8MiB']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`cannot reach memory node 127\\.0\\.0\\.1:${port} .*is \`farmem node\` running there.*\\[FARMEM_NODE_UNREACHABLE\\]`));
  });

  it('ends quietly with status 141 when its reader closes the pipe (`farmem demo | head -1`)', async () => {
    const child = spawn(process.execPath, [CLI, 'demo', '--budget', '8MiB', '--updates', '2000'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.stdout.once('data', () => child.stdout.destroy());
    const [code] = (await once(child, 'close')) as [number | null];
    expect(stderr).not.toMatch(/EPIPE|Unhandled|    at /);
    expect(code).toBe(141);
  });

  it('refuses bad options with FARMEM_INVALID_OPTION before it starts anything', async () => {
    for (const args of [
      ['--updates', '1.5'],
      ['--budget', 'lots'],
      ['--prefetch', 'psychic'],
      ['--frobnicate'],
    ]) {
      const r = await farmem(['demo', ...args]);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stdout, args.join(' ')).toBe('');
      expect(r.stderr, args.join(' ')).toMatch(/^farmem demo: .*\[FARMEM_INVALID_OPTION\]\n$/s);
    }
  });
});
