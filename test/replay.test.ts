// Trace files and `farmem replay`: a synthetic trace written with the trace-file helpers, replayed by the
// built command (dist/, built by `npm test` first) and in-process, which must agree.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { replayPolicies } from '../lib/replay';
import {
  TRACE_FLAG_PREFETCH_HIT,
  TRACE_FLAG_WRITE,
  TRACE_RECORD_BYTES,
  distinctPages,
  encodeTraceHeader,
  parseTrace,
  readTrace,
  writeTraceRecord,
  type TraceHeader,
} from '../lib/trace-file';
import { formatBytes } from '../lib/units';

const ROOT = path.join(__dirname, '..');
const CLI = path.join(ROOT, 'bin/farmem.js');
const REGION_PAGES = 50_000;

const header: TraceHeader = {
  format: 'farmem-trace',
  version: 1,
  pageSize: 4096,
  regionPages: REGION_PAGES,
  policy: 'none',
  localBudgetPages: 1000,
  startedAt: '2025-01-01T00:00:00.000Z',
};

/** A forward scan, a walk with stride 17, then seeded random pages; every third fault a write. */
function syntheticPages(): number[] {
  const pages: number[] = [];
  for (let p = 0; p < 3000; p++) pages.push(p);
  for (let k = 0; k < 1500; k++) pages.push(3000 + 17 * k);
  let x = 2024;
  for (let k = 0; k < 1500; k++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    pages.push(x % REGION_PAGES);
  }
  return pages;
}

function encode(pages: number[], h: TraceHeader = header): Buffer {
  const records = Buffer.alloc(pages.length * TRACE_RECORD_BYTES);
  pages.forEach((page, i) => writeTraceRecord(records, i * TRACE_RECORD_BYTES, i * 0.25, page, i % 3 === 0 ? TRACE_FLAG_WRITE : 0));
  return Buffer.concat([encodeTraceHeader(h), records]);
}

let dir: string;
let traceFile: string;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'farmem-replay-'));
  traceFile = path.join(dir, 'synthetic.trace');
  fs.writeFileSync(traceFile, encode(syntheticPages()));
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

function farmem(...args: string[]) {
  const result = spawnSync(process.execPath, [CLI, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

const percent = (fraction: number | null) => (fraction === null ? '-' : `${(fraction * 100).toFixed(1)}%`);

describe('trace files', () => {
  it('round-trips header and records', () => {
    const records = Buffer.alloc(2 * TRACE_RECORD_BYTES);
    writeTraceRecord(records, 0, 1.5, 7, TRACE_FLAG_WRITE);
    writeTraceRecord(records, TRACE_RECORD_BYTES, 2.25, 49_999, TRACE_FLAG_PREFETCH_HIT);
    const trace = parseTrace(Buffer.concat([encodeTraceHeader(header), records]));
    expect(trace.header).toEqual(header);
    expect(trace.length).toBe(2);
    expect([...trace.time]).toEqual([1.5, 2.25]);
    expect([...trace.page]).toEqual([7, 49_999]);
    expect([...trace.flags]).toEqual([TRACE_FLAG_WRITE, TRACE_FLAG_PREFETCH_HIT]);
  });

  it('reads the file the command will read', () => {
    const trace = readTrace(traceFile);
    expect(trace.length).toBe(6000);
    expect(trace.header.localBudgetPages).toBe(1000);
  });

  const refused = (buffer: Buffer, pattern: RegExp) => {
    let error: unknown;
    try {
      parseTrace(buffer);
    } catch (e) {
      error = e;
    }
    expect((error as { code?: string })?.code).toBe('FARMEM_BAD_TRACE');
    expect((error as Error).message).toMatch(pattern);
  };

  it('refuses what is not a farmem trace, another version, a truncated record and pages past the region', () => {
    refused(Buffer.from('hello\n'), /is not a farmem trace: it must start with a JSON header line/);
    refused(Buffer.from('{"format":"other"}\n'), /is not a farmem trace/);
    refused(Buffer.from('{not json\n'), /its first line is not JSON/);
    refused(Buffer.from(JSON.stringify({ ...header, version: 2 }) + '\n'), /version 2; this farmem reads version 1 only/);
    const whole = encode([1, 2, 3]);
    refused(whole.subarray(0, whole.length - 5), /truncated: 11 byte\(s\) left over after its 2 whole record\(s\)/);
    refused(encode([1, REGION_PAGES]), /record 1 names page 50000, but the region has 50000 pages/);
    refused(Buffer.from(JSON.stringify({ ...header, regionPages: 0 }) + '\n'), /header field "regionPages" is 0/);
  });
});

describe('farmem replay', () => {
  it('prints a row per policy whose numbers are those of replayPolicies in-process', () => {
    const result = farmem('replay', traceFile, '--policy', 'readahead,leap', '--budget', '25%');
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);

    const trace = readTrace(traceFile);
    const budgetPages = Math.ceil(distinctPages(trace) * 0.25);
    const expected = replayPolicies(trace, ['readahead', 'leap'], { budgetPages });
    expect(result.stdout).toContain(`trace ${traceFile}: 6000 references to ${distinctPages(trace)} distinct pages of a 50000-page region`);
    expect(result.stdout).toContain(`budget ${budgetPages} pages (${formatBytes(budgetPages * 4096)})`);

    const lines = result.stdout.split('\n');
    const head = lines.findIndex((line) => line.startsWith('policy'));
    expect(lines[head].split(/\s+/)).toEqual(['policy', 'faults', 'hits', 'prefetched', 'accuracy', 'coverage', 'fetched', 'unused']);
    const rows = lines.slice(head + 1, head + 1 + expected.length).map((line) => line.trim().split(/\s{2,}/));
    expect(rows).toEqual(
      expected.map((row) => [
        row.policy,
        String(row.faults),
        String(row.hits),
        String(row.prefetched),
        percent(row.accuracy),
        percent(row.coverage),
        formatBytes(row.bytesFetched),
        formatBytes(row.bytesUnused),
      ]),
    );
    // The baseline first, then the policies asked for; and the scan and the stride walk make them worth it.
    expect(rows.map((row) => row[0])).toEqual(['none', 'readahead', 'leap']);
    expect(expected[1].coverage).toBeGreaterThan(0.3);
    expect(expected[2].coverage).toBeGreaterThan(0.5);
  });

  it('takes policy options and the recorded budget by default', () => {
    const result = farmem('replay', traceFile, '--policy', 'leap', '--options', '{"leap":{"maxWindow":8}}');
    expect(result.code).toBe(0);
    const expected = replayPolicies(readTrace(traceFile), ['leap'], { budgetPages: 1000, policyOptions: { leap: { maxWindow: 8 } } });
    expect(result.stdout).toContain('budget 1000 pages');
    expect(result.stdout).toMatch(new RegExp(`\\nleap\\s+${expected[1].faults}\\s+${expected[1].hits}\\s+${expected[1].prefetched}\\s`));
  });

  it('says what is wrong with a bad trace, an unknown policy, bad options or a missing file, and exits 1', () => {
    const bad = path.join(dir, 'bad.trace');
    fs.writeFileSync(bad, encode([1, 2, 3]).subarray(0, -3));
    const cases: Array<[string[], RegExp]> = [
      [['replay', bad], /farmem replay: '.*bad\.trace' is truncated: 13 byte\(s\) left over .* \[FARMEM_BAD_TRACE\]/],
      [['replay', traceFile, '--policy', 'readahead,oracle'], /expected one of 'none', 'readahead', 'stride', 'leap', 'history', got "oracle"/],
      [['replay', traceFile, '--options', '{"leap":{"maxWindw":8}}'], /unknown option 'maxWindw' for the 'leap' policy — did you mean 'maxWindow'/],
      [['replay', traceFile, '--options', '[1]'], /--options: expected a JSON object of options by policy name/],
      [['replay', traceFile, '--budget', '0%'], /--budget: expected a percentage above 0%/],
      [['replay', path.join(dir, 'missing.trace')], /cannot read trace '.*missing\.trace': no such file/],
      [['replay'], /give the trace file to replay/],
    ];
    for (const [args, pattern] of cases) {
      const result = farmem(...args);
      expect(result.code, args.join(' ')).toBe(1);
      expect(result.stderr, args.join(' ')).toMatch(pattern);
      expect(result.stdout).toBe('');
    }
  });
});
