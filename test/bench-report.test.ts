// bench/report.js on a small synthetic results file: the two charts and the generated section of the
// benchmark doc. No measurement runs here; the numbers are chosen so the expected cells are exact.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

interface RenderOptions {
  resultsFile?: string;
  imgDir?: string;
  markdownFile?: string;
}
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { renderReport } = require('../bench/report.js') as {
  renderReport: (options: RenderOptions) => Promise<{ files: string[] }>;
};

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'farmem-bench-report-'));
afterAll(() => fs.rmSync(TMP, { recursive: true, force: true }));

function run(system: string, label: string, budget: number, median: number) {
  return { system, label, budget, seconds: [median], median, counters: {} };
}

// scan: all-local 0.1 s. At 25%: none 0.4 s (0.25), readahead 0.2 s (0.50), swap 1.0 s (0.10).
// quicksort: all-local 1 s. At 25%: none failed, readahead 2.5 s (0.40), swap 20 s (0.050).
function fixture(swapAvailable = true) {
  const swap = (budget: number, median: number) => (swapAvailable ? [run('swap', 'kernel swap', budget, median)] : []);
  return {
    schema: 'farmem-bench/1',
    command: 'npx farmem bench --quick',
    quick: true,
    machine: { date: '2026-11-23T05:00:00.000Z', cpu: 'Test CPU 9000', cores: 2, memoryGiB: 24, kernel: '6.18.44', node: 'v20.20.2' },
    budgets: [1, 0.25],
    policies: ['none', 'readahead'],
    tcpStreamGBps: 8,
    tcpStreamMeasurements: [{ when: 'start', gbPerSec: 6, trials: [6] }, { when: 'end', gbPerSec: 8, trials: [8] }],
    cpus: { pinned: true, node: '1', application: '0' },
    swap: swapAvailable
      ? { available: true, reason: null, cgroup: 'v1', swapFile: '/var/tmp/farmem-bench.swap' }
      : { available: false, reason: 'no swap allowed in this container' },
    workloads: [
      {
        name: 'scan',
        title: 'Sequential scan',
        description: 'sum of a Float64Array',
        workingSetBytes: 1e9,
        local: { seconds: [0.1], median: 0.1 },
        runs: [
          run('farmem', 'none', 1, 0.1),
          run('farmem', 'readahead', 1, 0.1),
          ...swap(1, 0.1),
          run('farmem', 'none', 0.25, 0.4),
          run('farmem', 'readahead', 0.25, 0.2),
          ...swap(0.25, 1.0),
        ],
      },
      {
        name: 'quicksort',
        title: 'Quicksort',
        description: 'sort of a Float64Array',
        workingSetBytes: 1e8,
        local: { seconds: [1], median: 1 },
        runs: [
          run('farmem', 'none', 1, 1),
          run('farmem', 'readahead', 1, 1),
          ...swap(1, 1),
          { system: 'farmem', label: 'none', budget: 0.25, seconds: [], error: 'cell timed out' },
          run('farmem', 'readahead', 0.25, 2.5),
          // Its first try OOM-killed; the second, steered as usual, had no swap-in readahead.
          ...swap(0.25, 20).map((r) => ({
            ...r,
            cgroup: {
              workingSet: { sizeBytes: 1e8, residentBytes: 2.5e7, swappedBytes: 7.5e7 },
              timed: [{ limitBytes: 4e7, startResidentBytes: 2.4e7, endResidentBytes: 2.6e7 }],
              calibration: { converged: true },
              pageClusterAfterOomKill: 0,
              oomRescue: { rescues: 3, maxRaiseBytes: 2 * 1048576, raisedMs: 41.6 },
            },
          })),
        ],
      },
      {
        name: 'columns',
        title: 'Column analytics',
        description: 'filter and group-by',
        workingSetBytes: 1e8,
        local: { seconds: [0.04, 0.05, 0.06], median: 0.05 },
        runs: [
          run('farmem', 'readahead', 1, 0.05),
          ...swap(1, 0.05),
          // 0.56 of all-local by the medians (0.05 / 0.09), 0.36 from the slowest sample against the fastest (0.04 / 0.11).
          { ...run('farmem', 'readahead', 0.25, 0.09), seconds: [0.08, 0.09, 0.11] },
          ...swap(0.25, 1.0),
        ],
      },
      {
        name: 'kv',
        title: 'Key-value store',
        description: 'zipfian GET/SET',
        workingSetBytes: 1e8,
        local: { seconds: [0.001], median: 0.001 },
        runs: [
          run('farmem', 'none', 1, 0.001),
          run('farmem', 'readahead', 1, 0.001),
          ...swap(1, 0.001),
          // Faster than swap by the medians (1.2 s against 1.3 s), but its slowest sample is slower than swap's fastest.
          { ...run('farmem', 'none', 0.25, 1.2), seconds: [1.0, 1.2, 1.4] },
          run('farmem', 'readahead', 0.25, 1.25),
          ...swap(0.25, 1.3).map((r) => ({ ...r, seconds: [1.1, 1.3, 1.5] })),
        ],
      },
    ],
    faultLatency: [
      { label: 'farmem (policy none, 25% local)', samplesUs: [60, 70, 80, 90, 100, 150, 400] },
      ...(swapAvailable ? [{ label: 'kernel swap (25% local)', samplesUs: [20, 25, 30, 35, 40, 900] }] : []),
    ],
  };
}

function writeFixture(name: string, data: unknown): string {
  const file = path.join(TMP, name);
  fs.writeFileSync(file, JSON.stringify(data));
  return file;
}

const BEFORE = '# Benchmarks\n\nHand-written text before.\n\n<!-- apps:begin -->\nstale generated text\n<!-- apps:end -->\n\n## After\n\nHand-written text after.\n';

describe('bench/report.js', () => {
  const resultsFile = writeFixture('apps-2026-11-23T0500.json', fixture());
  const imgDir = path.join(TMP, 'docs', 'img');
  const markdownFile = path.join(TMP, 'docs', 'benchmark.md');

  it('draws both charts with every label and workload title', async () => {
    fs.mkdirSync(path.dirname(markdownFile), { recursive: true });
    fs.writeFileSync(markdownFile, BEFORE);
    const { files } = await renderReport({ resultsFile, imgDir, markdownFile });
    const normalized = path.join(imgDir, 'bench-normalized.svg');
    const cdf = path.join(imgDir, 'bench-fault-cdf.svg');
    expect(files).toEqual([normalized, cdf, markdownFile]);

    const svg = fs.readFileSync(normalized, 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    for (const text of ['none', 'readahead', 'kernel swap', 'Sequential scan', 'Quicksort', 'Test CPU 9000']) expect(svg).toContain(text);

    const cdfSvg = fs.readFileSync(cdf, 'utf8');
    expect(cdfSvg.startsWith('<svg')).toBe(true);
    expect(cdfSvg).toContain('farmem (policy none, 25% local)');
    expect(cdfSvg).toContain('kernel swap (25% local)');
  });

  it('replaces only the marked section of the doc, with tables computed from the results', () => {
    const md = fs.readFileSync(markdownFile, 'utf8');
    expect(md.startsWith('# Benchmarks\n\nHand-written text before.\n\n<!-- apps:begin -->\n')).toBe(true);
    expect(md.endsWith('<!-- apps:end -->\n\n## After\n\nHand-written text after.\n')).toBe(true);
    expect(md).not.toContain('stale generated text');

    expect(md).toContain('Test CPU 9000, 2 cores');
    expect(md).toContain('`npx farmem bench --quick`');
    // Measurements without readBufferBytes come from runs whose receiver read with 'data' events.
    expect(md).toContain(
      'TCP loopback stream: 8.00 GB/s, the faster of the run\'s medians (6.00 at the start, 8.00 at the end); 64 KiB writes, read with \'data\' events.',
    );
    expect(md).toContain('CPU placement: memory node on CPU 1; the applications, every cell and the stream');
    expect(md).toContain('[../apps-2026-11-23T0500.json](../apps-2026-11-23T0500.json)');
    expect(md).toContain('![Speed relative to all-local, per workload and local memory share](img/bench-normalized.svg)');
    expect(md).toContain('(img/bench-fault-cdf.svg)');

    expect(md).toContain('| policy | 100% | 25% |');
    expect(md).toContain('| readahead | 1.00 (0.100 s) | 0.50 (0.200 s) |'); // scan: 0.1 / 0.2
    expect(md).toContain('| kernel swap | 1.00 (0.100 s) | 0.10 (1.00 s) |');
    expect(md).toContain('| **farmem / swap** | 1.00 (none) | 5.00 (readahead) |'); // 0.50 / 0.10
    expect(md).toContain('| none | 1.00 (1.00 s) | — |'); // quicksort's failed cell
    expect(md).toContain('| **farmem / swap** | 1.00 (none) | 8.00 (readahead) |'); // 0.40 / 0.050

    // The bar at 25%: facts computed from the fixture.
    expect(md).toContain('| Sequential scan | 0.50 (readahead) | 0.10 | 5.00 | yes |');
    expect(md).toContain('| Key-value store | 0.00083 (none) | 0.00077 | 1.08 | by the medians; the samples overlap |');
    expect(md).toContain(
      '`quicksort`: best farmem 0.40 of all-local (readahead), 0.40 from its slowest sample against the fastest all-local one; ≥ 0.5: no.',
    );
    expect(md).toContain(
      '`columns`: best farmem 0.56 of all-local (readahead), 0.36 from its slowest sample against the fastest all-local one; ' +
        '≥ 0.5: by the medians; not sample for sample.',
    );
    expect(md).toContain('`scan`: 5.00 GB/s (readahead)'); // 1e9 B / 0.2 s
    expect(md).toContain('= 63% of the TCP stream\'s 8.00 GB/s; 60% is 4.80 GB/s; reached: yes.');
    expect(md).toContain(
      '| Quicksort | 25% | 25% (24% → 26%), page-cluster 0 (retry after an OOM kill), 3 stalls at the limit woken by raising it ' +
        '(at most 2 MiB, 42 ms in all, calibration included) |',
    );
  });

  it('sets the scan against the stream measured beside its cell, where the run measured it there', async () => {
    const data = fixture();
    data.tcpStreamMeasurements = [
      { when: 'start', gbPerSec: 9, trials: [9], writeBytes: 65536, readBufferBytes: 1 << 20 },
      { when: 'scan-before', gbPerSec: 8, trials: [8], writeBytes: 65536, readBufferBytes: 1 << 20 },
      { when: 'scan-after', gbPerSec: 7.5, trials: [7.5], writeBytes: 65536, readBufferBytes: 1 << 20 },
      { when: 'end', gbPerSec: 1, trials: [1], writeBytes: 65536, readBufferBytes: 1 << 20 },
    ];
    data.tcpStreamGBps = 9;
    (data as Record<string, unknown>).scanStreamGBps = 8;
    const file = writeFixture('apps-beside.json', data);
    const doc = path.join(TMP, 'beside.md');
    fs.writeFileSync(doc, BEFORE);
    await renderReport({ resultsFile: file, imgDir: path.join(TMP, 'beside-img'), markdownFile: doc });
    const md = fs.readFileSync(doc, 'utf8');
    expect(md).toContain(
      'TCP loopback stream: 9.00 GB/s, the faster of the run\'s medians (9.00 at the start, 8.00 just before the scan at 25%, ' +
        '7.50 just after the scan at 25%, 1.00 at the end); 64 KiB writes, read into one preallocated 1 MiB buffer.',
    );
    // 5 GB/s against the 8 beside it: 62.5%, so the bar (4.80 GB/s) is reached; against the start's 9 it would not be (56%).
    expect(md).toContain(
      '`scan`: 5.00 GB/s (readahead) = 63% of the TCP stream measured beside it, 8.00 GB/s (the faster of 8.00 before and 7.50 after); ' +
        '60% is 4.80 GB/s; reached: yes. Against the run\'s fastest stream median, 9.00 GB/s: 56%.',
    );
  });

  it('does not judge the scan bar against a stream slower than the scan itself', async () => {
    const data = fixture();
    data.tcpStreamGBps = 4;
    data.tcpStreamMeasurements = [{ when: 'start', gbPerSec: 4, trials: [4] }];
    const file = writeFixture('apps-slow-stream.json', data);
    const doc = path.join(TMP, 'slow-stream.md');
    fs.writeFileSync(doc, BEFORE);
    await renderReport({ resultsFile: file, imgDir: path.join(TMP, 'slow-stream-img'), markdownFile: doc });
    // The scan moved 5 GB/s (1e9 B / 0.2 s), more than the 4 GB/s stream.
    expect(fs.readFileSync(doc, 'utf8')).toContain(
      '`scan`: 5.00 GB/s (readahead) = 125% of the TCP stream\'s 4.00 GB/s; 60% is 2.40 GB/s; reached: not judged: ' +
        'the stream moved less than the scan itself did over the same loopback, so it measured no ceiling.',
    );
  });

  it('replaces its section on a second run rather than adding another', async () => {
    const first = fs.readFileSync(markdownFile, 'utf8');
    await renderReport({ resultsFile, imgDir, markdownFile });
    const second = fs.readFileSync(markdownFile, 'utf8');
    expect(second).toBe(first);
    expect(second.split('<!-- apps:begin -->').length).toBe(2);
    expect(second.split('## Applications').length).toBe(2);
  });

  it('appends both markers to a doc that has none, and says why swap is missing', async () => {
    const doc = path.join(TMP, 'docs', 'plain.md');
    fs.writeFileSync(doc, '# Plain\n\nOnly text.');
    const noSwap = writeFixture('apps-noswap.json', fixture(false));
    await renderReport({ resultsFile: noSwap, imgDir: path.join(TMP, 'img2'), markdownFile: doc });
    const md = fs.readFileSync(doc, 'utf8');
    expect(md.startsWith('# Plain\n\nOnly text.\n\n<!-- apps:begin -->\n')).toBe(true);
    expect(md.endsWith('<!-- apps:end -->\n')).toBe(true);
    expect(md).toContain('Kernel swap: not measured: no swap allowed in this container.');
    expect(md).not.toMatch(/^\| kernel swap \|/m); // no swap row in the tables
  });

  it('refuses a missing or unreadable results file with FARMEM_BENCH_NO_RESULTS', async () => {
    const missing = renderReport({ resultsFile: path.join(TMP, 'nope.json'), imgDir, markdownFile });
    await expect(missing).rejects.toMatchObject({ code: 'FARMEM_BENCH_NO_RESULTS', message: expect.stringContaining('npx farmem bench') });
    const garbage = path.join(TMP, 'garbage.json');
    fs.writeFileSync(garbage, '{ not json');
    await expect(renderReport({ resultsFile: garbage, imgDir, markdownFile })).rejects.toMatchObject({ code: 'FARMEM_BENCH_NO_RESULTS' });
  });
});
