// Shared test helpers. Tests load the built package (dist/), as users do.
import { spawn } from 'node:child_process';
import * as path from 'node:path';

export const ROOT = path.join(__dirname, '..');
// eslint-disable-next-line @typescript-eslint/no-require-imports
export const farmem = require('../dist/cjs/index.js') as typeof import('../lib/index');
export const FIXTURES = path.join(__dirname, 'fixtures');

export const MiB = 1024 * 1024;

/**
 * timeBudgetMs for policy modules and guides in tests that are not about the budget. The budget is the
 * pager thread's CPU time, which also counts what the thread does during a call besides the policy (a
 * garbage collection, compiling the policy's code): on a loaded host a test should not depend on it.
 */
export const UNHURRIED_BUDGET_MS = 1000;

/** Deterministic bytes for page `page` of a test, in round `round`. */
export function fillPattern(view: Uint8Array, seed: number): void {
  let x = seed >>> 0 || 1;
  for (let i = 0; i < view.length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    view[i] = x;
    view[i + 1] = x >>> 8;
    view[i + 2] = x >>> 16;
    view[i + 3] = x >>> 24;
  }
}

/** What fn throws; fails the test if it returns. */
export function caught(fn: () => unknown): any {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error('expected a throw');
}

export interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a fixture script in a fresh Node process, killing it after timeoutMs. */
export function runChild(script: string, args: string[] = [], options: { timeoutMs?: number; uid?: number; gid?: number; cwd?: string } = {}): Promise<ChildResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [script, ...args], {
      cwd: options.cwd ?? ROOT,
      uid: options.uid,
      gid: options.gid,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}
