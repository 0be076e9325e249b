// Lifecycle hazards, each in a child process: the process must neither abort nor hang.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { FIXTURES, ROOT, runChild } from './helpers';

const SCRIPT = path.join(FIXTURES, 'lifecycle.cjs');

function expectCleanExit(result: Awaited<ReturnType<typeof runChild>>): void {
  expect(result.stderr).not.toMatch(/Assertion|uv_loop_close|Aborted|core dumped/);
  expect(result.signal).toBeNull();
  expect(result.code).toBe(0);
}

describe('lifecycle', () => {
  it('process.exit() with live regions', async () => {
    const result = await runChild(SCRIPT, ['exit-with-live-regions']);
    expectCleanExit(result);
    expect(result.stdout).toContain('exiting');
  });

  it('process.exit() while a worker is blocked in faults', async () => {
    const result = await runChild(SCRIPT, ['exit-with-faults-in-flight']);
    expectCleanExit(result);
  });

  it('close() while a worker is faulting', async () => {
    const result = await runChild(SCRIPT, ['close-with-faults-in-flight']);
    expectCleanExit(result);
    expect(result.stdout).toContain('closed; buffer length 0');
    expect(result.stdout).toContain('done');
  });

  it('terminate() of a worker that is faulting leaves the region serving and intact', async () => {
    const result = await runChild(SCRIPT, ['terminate-faulting-worker']);
    expectCleanExit(result);
    expect(result.stdout).toMatch(/terminated with 1; sum ok/);
  });

  it('returning from main without close() exits normally', async () => {
    const result = await runChild(SCRIPT, ['exit-without-close'], { timeoutMs: 20_000 });
    expectCleanExit(result);
    expect(result.stdout).toContain('returning from main');
  });

  it('an unprivileged user gets the user-mode-only fallback or an error that names the fix', async (context) => {
    if (process.getuid?.() !== 0) context.skip();
    // A copy the unprivileged user can read: the checkout may sit in root's home.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'farmem-unpriv-'));
    try {
      for (const part of ['dist', 'build/Release', 'test/fixtures', 'package.json']) {
        const from = path.join(ROOT, part);
        if (fs.existsSync(from)) fs.cpSync(from, path.join(dir, part), { recursive: true });
      }
      fs.chmodSync(dir, 0o755);
      const result = await runChild(path.join(dir, 'test/fixtures/lifecycle.cjs'), ['unprivileged'], { uid: 65534, gid: 65534, cwd: dir });
      expect(result.stderr).not.toMatch(/Assertion|Aborted/);
      expect(result.code).toBe(0);
      const report = JSON.parse(result.stdout.trim().split('\n').pop()!);
      const sysctl = fs.readFileSync('/proc/sys/vm/unprivileged_userfaultfd', 'utf8').trim();
      if (report.opened) {
        // Here the fallback: UFFD_USER_MODE_ONLY. JS accesses fault and are served; kernel accesses get EFAULT.
        expect(report.mode).toBe(sysctl === '1' ? 'kernel' : 'user-only');
        expect(report.jsOk).toBe(true);
        if (report.mode === 'user-only') expect(report.kernel).toBe('EFAULT');
      } else {
        expect(report.code).toBe('FARMEM_UFFD_UNAVAILABLE');
        expect(report.message).toMatch(/vm\.unprivileged_userfaultfd|\/dev\/userfaultfd/);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
