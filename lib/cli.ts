// The `farmem` command: run a memory node, run the demo, show what the kernel offers, replay fault traces.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import { constants as osConstants } from 'node:os';
import path from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { SingleBar, Presets } from 'cli-progress';
import { FarmemError } from './errors';
import { FarMemory, validatePrefetch } from './far-memory';
import { MemoryNode } from './memory-node';
import { capabilities } from './native';
import { BUILTIN_POLICIES } from './policies';
import { replayPolicies, type ReplayRow } from './replay';
import { distinctPages, readTrace, type Trace } from './trace-file';
import { formatBytes, parseSize } from './units';

const USAGE = `Usage: farmem <command> [options]

Commands:
  node           run a memory node
      --host H          address to listen on (default 127.0.0.1)
      --port P          port (default 7070; 0 picks one)
      --capacity SIZE   bytes of pages it holds, e.g. 4GiB (default 1GiB)
      --token T         clients must present this token (default: none)
      --spin-us N       after each request keep polling N µs rather than sleep
                        (default 0; lowers latency where idle CPUs wake slowly, as in VMs)
  demo           fill, checksum and randomly update a region 4x the local budget,
                 on a memory node it starts itself (or on --node)
      --budget SIZE     local budget (default 64MiB)
      --size SIZE       region size (default 4x the budget)
      --updates N       random 8-byte updates (default 100000)
      --prefetch P      none | readahead | stride | leap | history (default readahead)
      --node HOST:PORT  use this memory node instead of an embedded one
      --token T         its token
  capabilities   print what the running kernel's userfaultfd offers
  replay TRACE   replay a recorded fault trace against prefetch policies, offline
      --policy LIST     comma-separated, from ${BUILTIN_POLICIES.join(', ')}
                        (default all; 'none' always runs first, as the baseline)
      --budget B        local budget: a size such as 16MiB, or a percentage of
                        the pages the trace touches such as 25% (default: the
                        budget recorded in the trace)
      --options JSON    policy options by policy name, e.g. '{"leap":{"maxWindow":32}}'

  bench          application benchmarks: all-local memory, farmem at local budgets
                 of 100/50/25/12.5% with each policy, and kernel swap (as root)
      --quick           a smoke run of every workload (under two minutes)
      --report          draw the charts and tables of docs/benchmark.md from the
                        newest kept results (bench/results/apps-*.json)
      --workloads LIST  scan, random, quicksort, columns, kv, list, tree
      --budgets LIST    local shares, e.g. 1,0.25 (default 1,0.5,0.25,0.125)
      --policies LIST   default none,readahead,stride,leap,history
      --samples N       at least N timed runs per cell (default 3; quick 1)
      --sample-seconds S
                        then more, until those from the Nth on add up to over
                        S seconds (default 1; quick 0)
      --no-swap         skip the kernel swap runs
      --swap-file PATH  where the swap file goes (default /var/tmp/farmem-bench.swap)
      --spin-us N       pager and memory node poll N µs after demand work (default 200)
      --huge-pages M    auto (default: whole 2 MiB blocks land as huge pages where
                        the kernel offers it) or off (every page on its own)
      --pin M           auto (default: the memory node on the last CPU, the cells and
                        this process on the others, with taskset) or off
      Needs a clone of farmem with its dev dependencies (npm ci).

Options: --help, --version`;

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'node':
        return await runNode(rest);
      case 'demo':
        return await runDemo(rest);
      case 'capabilities':
        console.log(JSON.stringify(capabilities(), null, 2));
        return 0;
      case 'replay':
        return runReplay(rest);
      case 'bench':
        return await runBench(rest);
      case '--version':
      case '-v':
        console.log(require('../../package.json').version);
        return 0;
      case undefined:
      case '--help':
      case '-h':
      case 'help':
        console.log(USAGE);
        return command === undefined ? 1 : 0;
      default:
        console.error(`farmem: unknown command '${command}'\n\n${USAGE}`);
        return 2;
    }
  } catch (error) {
    const e = error as FarmemError;
    console.error(`farmem ${command}: ${e.message}${e.code ? ` [${e.code}]` : ''}`);
    return 1;
  }
}

function parse<T extends Record<string, { type: 'string' | 'boolean'; default?: string | boolean }>>(args: string[], options: T) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false }).values;
  } catch (error) {
    throw new FarmemError('FARMEM_INVALID_OPTION', `${(error as Error).message} (see farmem --help)`);
  }
}

async function runNode(args: string[]): Promise<number> {
  const values = parse(args, {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '7070' },
    capacity: { type: 'string', default: '1GiB' },
    token: { type: 'string', default: '' },
    'spin-us': { type: 'string', default: '0' },
  });
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new FarmemError('FARMEM_INVALID_OPTION', `--port: expected 0..65535, got '${values.port}'`);
  }
  const node = await MemoryNode.start({
    host: values.host,
    port,
    capacity: values.capacity,
    token: values.token,
    spinMicros: Number(values['spin-us']),
    inline: true,
  });
  console.log(`farmem memory node listening on ${node.address}, capacity ${formatBytes(node.capacity)}${values.token ? ', token required' : ''}`);
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  await node.stop();
  console.log('farmem memory node stopped');
  return 0;
}

/**
 * `farmem bench`: runs bench/suite.js (or bench/report.js for --report) in a child process with this
 * Node. The suites live in the repository, beside their dev dependencies (benny, vega), not in dist/.
 */
async function runBench(args: string[]): Promise<number> {
  const root = path.join(__dirname, '..', '..');
  const report = args.includes('--report');
  const script = path.join(root, 'bench', report ? 'report.js' : 'suite.js');
  if (!fs.existsSync(script)) {
    throw new FarmemError('FARMEM_BENCH_DEPS_MISSING', `the benchmarks are not in this install (${script} is missing): run them from a clone of farmem, after npm ci`);
  }
  for (const dep of report ? ['vega', 'vega-lite'] : ['benny']) {
    try {
      require.resolve(dep, { paths: [root] });
    } catch {
      throw new FarmemError('FARMEM_BENCH_DEPS_MISSING', `the benchmarks need the dev dependency '${dep}': run npm ci in the farmem clone`);
    }
  }
  const child = spawn(process.execPath, [script, ...args.filter((a) => a !== '--report')], { cwd: root, stdio: 'inherit' });
  const forward = (signal: NodeJS.Signals): void => void child.kill(signal);
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  try {
    const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
    return code ?? (signal ? 128 + (osConstants.signals[signal] ?? 0) : 1);
  } finally {
    process.off('SIGINT', forward);
    process.off('SIGTERM', forward);
  }
}

/** Order-independent, updatable checksum: the sum over words of a mix of index and value, mod 2^32. */
function mix(index: number, value: number): number {
  return Math.imul((value ^ index) >>> 0, 0x9e3779b1) >>> 0;
}

function valueAt(index: number, round: number): number {
  return (Math.imul(index + 1, 2654435761) ^ Math.imul(round, 0x85ebca6b)) >>> 0;
}

async function runDemo(args: string[]): Promise<number> {
  const values = parse(args, {
    budget: { type: 'string', default: '64MiB' },
    size: { type: 'string' },
    updates: { type: 'string', default: '100000' },
    prefetch: { type: 'string', default: 'readahead' },
    node: { type: 'string' },
    token: { type: 'string', default: '' },
  });
  const budget = parseSize(values.budget, '--budget');
  const size = values.size === undefined ? 4 * budget : parseSize(values.size, '--size');
  const updates = Number(values.updates);
  if (!Number.isSafeInteger(updates) || updates < 0) {
    throw new FarmemError('FARMEM_INVALID_OPTION', `--updates: expected a non-negative integer, got '${values.updates}'`);
  }
  // Checked before FarMemory.open does, so that a typo does not start an embedded node first.
  validatePrefetch('--prefetch', values.prefetch, 'readahead');
  const node = values.node
    ? null
    : await MemoryNode.start({ host: '127.0.0.1', port: 0, capacity: Math.max(size * 2, 64 << 20), token: values.token });
  const address = values.node ?? node!.address;
  console.log(`farmem demo: region ${formatBytes(size)}, local budget ${formatBytes(budget)}, memory node ${address}${node ? ' (embedded)' : ''}, prefetch ${values.prefetch}`);
  const fm = await FarMemory.open({ nodes: [address], localBudget: budget, token: values.token, prefetch: values.prefetch });
  let ok = false;
  try {
    const region = await fm.allocate(size);
    const words = new Uint32Array(region.buffer, 0, Math.floor(size / 4));
    const n = words.length;
    const chunk = 1 << 20; // words per step between progress updates
    const bar = new SingleBar({ format: ' {phase} [{bar}] {percentage}% | {value}/{total} MiB | {rate} MB/s', hideCursor: true }, Presets.shades_classic);
    // Each phase reports MB/s, except the random updates, whose rate is in updates per second.
    const phases: Array<{ name: string; seconds: number; bytes: number; ops: number }> = [];
    const phase = async (name: string, total: number, step: (from: number, to: number) => void, unitBytes: number): Promise<void> => {
      const start = performance.now();
      bar.start(Math.ceil((total * unitBytes) / (1 << 20)), 0, { phase: name.padEnd(8), rate: '0' });
      for (let from = 0; from < total; from += chunk) {
        const to = Math.min(total, from + chunk);
        step(from, to);
        const seconds = (performance.now() - start) / 1000;
        bar.update(Math.floor((to * unitBytes) / (1 << 20)), { rate: ((to * unitBytes) / 1e6 / Math.max(seconds, 1e-9)).toFixed(0) });
        await yieldToLoop();
      }
      bar.stop();
      phases.push({ name, seconds: (performance.now() - start) / 1000, bytes: total * unitBytes, ops: total });
    };

    let expected = 0;
    await phase('fill', n, (from, to) => {
      for (let i = from; i < to; i++) {
        const v = valueAt(i, 0);
        words[i] = v;
        expected = (expected + mix(i, v)) >>> 0;
      }
    }, 4);

    let sum = 0;
    await phase('checksum', n, (from, to) => {
      for (let i = from; i < to; i++) sum = (sum + mix(i, words[i])) >>> 0;
    }, 4);
    if (sum !== expected) throw new Error(`checksum after fill: got ${sum}, expected ${expected}`);

    let seed = 0x12345678;
    await phase('update', updates, (from, to) => {
      for (let k = from; k < to; k++) {
        seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
        const i = seed % n;
        const v = valueAt(i, k + 1);
        expected = (expected - mix(i, words[i]) + mix(i, v)) >>> 0;
        words[i] = v;
      }
    }, 8);

    sum = 0;
    await phase('verify', n, (from, to) => {
      for (let i = from; i < to; i++) sum = (sum + mix(i, words[i])) >>> 0;
    }, 4);
    ok = sum === expected;

    const s = region.stats();
    console.log('');
    console.log(ok ? `checksum verified: 0x${sum.toString(16).padStart(8, '0')}` : `CHECKSUM MISMATCH: got 0x${sum.toString(16)}, expected 0x${expected.toString(16)}`);
    for (const p of phases) {
      const rate = p.name === 'update' ? `${(p.ops / p.seconds).toFixed(0).padStart(6)} updates/s` : `${(p.bytes / 1e6 / p.seconds).toFixed(0).padStart(6)} MB/s`;
      console.log(`  ${p.name.padEnd(9)} ${p.seconds.toFixed(2).padStart(7)} s  ${rate}`);
    }
    const rows: Array<[string, string]> = [
      ['faults', String(s.faults)],
      ['remote fetches', String(s.remoteFetches)],
      ['prefetched pages', String(s.prefetched)],
      ['prefetch hits', String(s.prefetchHits)],
      ['zero-fills', String(s.zeroFills)],
      ['write faults', String(s.writeFaults)],
      ['evictions', String(s.evictions)],
      ['write-backs', String(s.writebacks)],
      ['fetched', formatBytes(s.bytesFetched)],
      ['written back', formatBytes(s.bytesWritten)],
      ['resident now', formatBytes(s.residentBytes)],
      ['fault latency p50', `${s.faultLatencyUs.p50.toFixed(0)} µs`],
      ['fault latency p99', `${s.faultLatencyUs.p99.toFixed(0)} µs`],
    ];
    for (const [k, v] of rows) console.log(`  ${k.padEnd(18)} ${v}`);
    await region.free();
  } finally {
    await fm.close();
    await node?.stop();
  }
  return ok ? 0 : 1;
}

/** --budget: a size ('16MiB') or a percentage of the pages the trace touches ('25%'), in pages. */
function budgetPagesOf(value: string | undefined, trace: Trace): number {
  const { pageSize, localBudgetPages } = trace.header;
  if (value === undefined) {
    if (localBudgetPages < 1) {
      throw new FarmemError('FARMEM_INVALID_OPTION', '--budget: the trace records no local budget; give one, such as --budget 16MiB or --budget 25%');
    }
    return localBudgetPages;
  }
  const percent = /^\s*(\d+(?:\.\d+)?)\s*%\s*$/.exec(value);
  if (percent) {
    const share = Number(percent[1]);
    if (!(share > 0)) throw new FarmemError('FARMEM_INVALID_OPTION', `--budget: expected a percentage above 0%, got '${value}'`);
    return Math.max(1, Math.ceil((distinctPages(trace) * share) / 100));
  }
  const pages = Math.floor(parseSize(value, '--budget') / pageSize);
  if (pages < 1) {
    throw new FarmemError('FARMEM_INVALID_OPTION', `--budget: '${value}' is less than one page (${pageSize} bytes); give a larger size or a percentage such as 25%`);
  }
  return pages;
}

function policyOptionsOf(value: string | undefined): Record<string, Record<string, unknown>> {
  if (value === undefined) return {};
  const expected = `expected a JSON object of options by policy name, such as '{"leap":{"maxWindow":32}}'`;
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch (error) {
    throw new FarmemError('FARMEM_INVALID_OPTION', `--options: ${expected}; it is not JSON (${(error as Error).message})`);
  }
  const isObject = (v: unknown): boolean => v !== null && typeof v === 'object' && !Array.isArray(v);
  if (!isObject(parsed) || !Object.values(parsed as object).every(isObject)) {
    throw new FarmemError('FARMEM_INVALID_OPTION', `--options: ${expected}, got ${value}`);
  }
  return parsed as Record<string, Record<string, unknown>>;
}

function percent(fraction: number | null): string {
  return fraction === null ? '-' : `${(fraction * 100).toFixed(1)}%`;
}

function runReplay(args: string[]): number {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: {
        policy: { type: 'string', default: BUILTIN_POLICIES.join(',') },
        budget: { type: 'string' },
        options: { type: 'string' },
      },
      strict: true,
      allowPositionals: true,
    });
  } catch (error) {
    throw new FarmemError('FARMEM_INVALID_OPTION', `${(error as Error).message} (see farmem --help)`);
  }
  const { values, positionals } = parsed;
  if (positionals.length !== 1) {
    throw new FarmemError(
      'FARMEM_INVALID_OPTION',
      positionals.length === 0
        ? 'give the trace file to replay: farmem replay TRACE [--policy LIST] [--budget B] [--options JSON]'
        : `expected one trace file, got ${positionals.length}: ${positionals.join(' ')}`,
    );
  }
  const file = positionals[0];
  const names = values.policy.split(',').map((name) => name.trim()).filter((name) => name.length > 0);
  const policyOptions = policyOptionsOf(values.options);
  const trace = readTrace(file);
  const budgetPages = budgetPagesOf(values.budget, trace);
  const rows = replayPolicies(trace, names, { budgetPages, policyOptions });

  const { header } = trace;
  console.log(
    `trace ${file}: ${trace.length} references to ${distinctPages(trace)} distinct pages of a ${header.regionPages}-page region ` +
      `(pages of ${formatBytes(header.pageSize)}, recorded with '${header.policy}')`,
  );
  console.log(`budget ${budgetPages} pages (${formatBytes(budgetPages * header.pageSize)})`);
  console.log('');
  const columns = ['policy', 'faults', 'hits', 'prefetched', 'accuracy', 'coverage', 'fetched', 'unused'];
  const cells = rows.map((row: ReplayRow) => [
    row.policy,
    String(row.faults),
    String(row.hits),
    String(row.prefetched),
    percent(row.accuracy),
    percent(row.coverage),
    formatBytes(row.bytesFetched),
    formatBytes(row.bytesUnused),
  ]);
  const widths = columns.map((title, c) => Math.max(title.length, ...cells.map((line) => line[c].length)));
  const format = (line: string[]): string =>
    line.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  ');
  console.log(format(columns));
  for (const line of cells) console.log(format(line));
  console.log('');
  console.log('faults: demand fetches; hits: references served locally; accuracy: prefetched pages used;');
  console.log("coverage: share of the baseline's faults removed; unused: prefetched, never used");
  for (const row of rows) {
    if (row.error) console.log(`${row.policy}: misbehaved ${row.error}; replayed as 'none' from there`);
  }
  return 0;
}
