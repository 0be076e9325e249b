// The package as users load it: by name, from ESM and from CommonJS, with types.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { expect, it } from 'vitest';
import { FIXTURES, ROOT, runChild } from './helpers';

const PUBLIC_NAMES = [
  'BUILTIN_POLICIES', 'Coffer', 'CofferError', 'FarMemory', 'FarmemError', 'HistoryPolicy', 'LeapPolicy', 'MAX_ANSWER_PAGES', 'MemoryNode', 'NoPrefetch', 'PAGE_SIZE',
  'ReadaheadPolicy', 'Region', 'StridePolicy', 'TRACE_FLAG_FIRST_TOUCH', 'TRACE_FLAG_PREFETCH_HIT', 'TRACE_FLAG_WRITE', 'TRACE_RECORD_BYTES',
  'attachRegion', 'capabilities', 'checkAnswer', 'createPolicy', 'encodeTraceHeader', 'formatBytes', 'parseSize',
  'parseTrace', 'readTrace', 'replayPolicies', 'simulate', 'traceFromPages', 'writeTraceRecord',
];

it('loads by name from CommonJS with every public name', async () => {
  const result = await runChild(path.join(FIXTURES, 'cjs-consumer.cjs'));
  expect(result.code).toBe(0);
  expect(JSON.parse(result.stdout).names).toEqual(PUBLIC_NAMES);
});

it('loads by name from an ES module and works there, sharing the CommonJS instance', async () => {
  const result = await runChild(path.join(FIXTURES, 'esm-consumer.mjs'));
  expect(result.stderr).toBe('');
  expect(result.code).toBe(0);
  expect(JSON.parse(result.stdout)).toEqual({ ok: true, code: 'FARMEM_INVALID_OPTION', sameModule: true, mode: 'kernel' });
});

it('ships type declarations for the public API', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  const types = fs.readFileSync(path.join(ROOT, pkg.types), 'utf8');
  for (const name of ['FarMemory', 'MemoryNode', 'Region', 'FarmemError', 'FarMemoryOptions', 'MemoryNodeOptions', 'RegionStats', 'Capabilities']) {
    expect(types).toContain(name);
  }
  expect(fs.existsSync(path.join(ROOT, 'dist/cjs/far-memory.d.ts'))).toBe(true);
});

it("offers farmem/coffer by name, from CommonJS and ES modules, and refuses it outside a coffer", async () => {
  const result = await runChild(path.join(FIXTURES, 'coffer-subpath.mjs'));
  expect(result.stderr).toBe('');
  expect(JSON.parse(result.stdout)).toEqual({ esm: 'FARMEM_ISOLATION', cjs: 'FARMEM_ISOLATION', same: true });
});
