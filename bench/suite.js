'use strict';
// `farmem bench`: the application workloads on all-local memory, on farmem at shrinking local budgets
// with each prefetch policy, and under kernel swap in a memory cgroup at the same budgets. Each cell runs
// in a fresh process (bench/apps/cell.js) against one memory node process. Writes
// bench/results/apps-<date>.json and prints a table; `farmem bench --report` draws the charts.
// Usage: node bench/suite.js [--quick] [--workloads scan,kv] [--budgets 1,0.5,0.25,0.125]
//        [--policies none,readahead,stride,leap] [--samples 3] [--sample-seconds 1] [--no-swap]
//        [--swap-file PATH] [--out FILE]
//        [--spin-us 200] [--huge-pages auto|off] [--pin auto|off]
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { SingleBar, Presets } = require('cli-progress');
const { ROOT, args, machine, startNodeProcess } = require('./common');
const { BUILTIN_POLICIES } = require('../dist/cjs/index.js');
const { WORKLOADS, budgetBytes } = require('./apps/workloads');
const { RESULT_MARK } = require('./apps/cell');
const { fmtNorm, STREAM_WHEN, besideScan } = require('./report');
const kernelSwap = require('./apps/kernel-swap');
const { loopbackStreamGBps } = require('./apps/tcp-stream');
const { cpuPlacement, placeSelf, describePlacement } = require('./cpus');

const CELL = path.join(__dirname, 'apps', 'cell.js');
const LATENCY_BUDGET = 0.25;
// The budget the issue's bar is read at: the scan's farmem cell there has the stream measured beside it.
const SCAN_BAR_BUDGET = 0.25;
// The swap cell's cgroup limit starts at its footprint before the working set (its cold part squeezed
// out first), plus the budget, plus this much for the heap's growth while it runs. The cell then steers
// the limit until the kernel keeps the budget's worth of the working set resident (calibrateLimit in
// apps/kernel-swap.js): left alone, the kernel swaps out Node's own idle pages during the runs and gives
// the working set up to twice its budget.
const SWAP_SLACK_BYTES = 4 << 20;

/** A bad option: printed as one line with its code, exit status 2. */
function usageError(message) {
  return Object.assign(new Error(`${message} (see npx farmem --help)`), { code: 'FARMEM_INVALID_OPTION' });
}

function list(value, name, parse = (s) => s) {
  const items = value.split(',').map((s) => s.trim()).filter(Boolean).map(parse);
  if (items.length === 0) throw usageError(`--${name}: give a comma-separated list`);
  return items;
}

function options() {
  return args({
    quick: { type: 'boolean', default: false },
    workloads: { type: 'string' },
    budgets: { type: 'string' },
    policies: { type: 'string' },
    samples: { type: 'string' },
    'sample-seconds': { type: 'string' },
    'no-swap': { type: 'boolean', default: false },
    'swap-file': { type: 'string' },
    'spin-us': { type: 'string', default: '200' },
    'huge-pages': { type: 'string', default: 'auto' },
    pin: { type: 'string', default: 'auto' },
    out: { type: 'string' },
  });
}

function cellResult(stdout, what) {
  const line = stdout.split('\n').find((l) => l.startsWith(RESULT_MARK));
  if (!line) throw new Error(`${what}: no result line`);
  return JSON.parse(line.slice(RESULT_MARK.length));
}

/** Runs a cell in a plain child process; its own output is kept for the error message only. */
function runCell(argv, what) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CELL, ...argv], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), 600_000);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) {
        try { resolve(cellResult(stdout, what)); } catch (error) { reject(error); }
      } else {
        reject(new Error(`${what} failed (${code ?? signal}): ${stderr.trim().split('\n').slice(-3).join(' | ')}`));
      }
    });
  });
}

async function runSwapCell(prepared, argv, budgetBytes, what) {
  const attempt = (slack, calibrate) => kernelSwap.runInCgroup(prepared, {
    argv: [CELL, ...argv],
    budgetBytes,
    limitSlackBytes: slack,
    timeoutMs: 600_000,
    env: { ...process.env, FARMEM_BENCH_CALIBRATE: calibrate ? '1' : '0' },
  });
  let slack = SWAP_SLACK_BYTES;
  let calibrate = true;
  let pageCluster = null; // the host's
  let r = await attempt(slack, calibrate);
  // Under a tight limit cgroup v1's reclaim can give up and OOM-kill: every page it holds is on the active
  // list, most of them in the swap cache. runInCgroup turns v1's OOM killer off and wakes such stalls
  // (startOomRescue). With the killer off, a kernel allocation outside a page fault that finds no room
  // fails instead, and Node may abort on it. Either death gets the retries below. The second try is at
  // the same budget, still steered, with no swap-in readahead (page-cluster 0), which charges pages
  // nobody asked for: kv survived that way here, quicksort did not. A third has three times the slack
  // and the limit left there (swap then keeps more than the budget resident, as the results record).
  const diedAtLimit = (result) => result.oomKilled || (result.signal !== null && !result.timedOut);
  if (diedAtLimit(r)) {
    pageCluster = 0;
    r = await kernelSwap.withPageCluster(pageCluster, () => attempt(slack, calibrate));
  }
  if (diedAtLimit(r)) {
    slack *= 3;
    calibrate = false;
    r = await kernelSwap.withPageCluster(pageCluster, () => attempt(slack, calibrate));
  }
  if (diedAtLimit(r)) {
    throw new Error(`${what}: died three times at its cgroup's limit (last: ${r.oomKilled ? "the cgroup's OOM killer" : r.signal})`);
  }
  if (r.code !== 0) throw new Error(`${what} failed (${r.code ?? r.signal})`);
  const out = cellResult(r.stdout, what);
  if (out.cgroup) {
    out.cgroup.slackBytes = slack;
    if (r.oomRescue) out.cgroup.oomRescue = r.oomRescue;
    if (pageCluster !== null) out.cgroup.pageClusterAfterOomKill = pageCluster;
    if (!calibrate) out.cgroup.uncalibratedAfterOomKill = true;
  }
  return out;
}

async function main() {
  let opts;
  try {
    opts = options();
  } catch (error) {
    throw usageError(error.message);
  }
  const quick = opts.quick;
  const workloads = opts.workloads
    ? list(opts.workloads, 'workloads', (name) => {
      const found = WORKLOADS.find((w) => w.name === name);
      if (!found) throw usageError(`--workloads: no workload '${name}' (${WORKLOADS.map((w) => w.name).join(', ')})`);
      return found;
    })
    : WORKLOADS;
  const budgets = list(opts.budgets ?? (quick ? '0.25' : '1,0.5,0.25,0.125'), 'budgets', Number);
  for (const budget of budgets) if (!(budget > 0 && budget <= 1)) throw usageError(`--budgets: ${budget} is not a share in (0, 1]`);
  const policies = list(opts.policies ?? (quick ? 'none,readahead,leap,history' : BUILTIN_POLICIES.join(',')), 'policies');
  for (const policy of policies) if (!BUILTIN_POLICIES.includes(policy)) throw usageError(`--policies: no policy '${policy}' (${BUILTIN_POLICIES.join(', ')})`);
  const samples = opts.samples ?? (quick ? '1' : '3');
  if (!/^[1-9]\d?$/.test(samples)) throw usageError(`--samples: ${samples} is not a count from 1 to 99`);
  // Past the minimum, fast cells go on sampling this long: three samples of one 0.1 s scan cell spread
  // from 0.087 to 0.121 s here. A smoke run must end within two minutes, so it takes the minimum.
  const sampleSeconds = opts['sample-seconds'] ?? (quick ? '0' : '1');
  if (!/^\d{1,2}(\.\d+)?$/.test(sampleSeconds) || Number(sampleSeconds) > 60) throw usageError(`--sample-seconds: ${sampleSeconds} is not a number of seconds from 0 to 60`);
  const swapFile = opts['swap-file'] ?? '/var/tmp/farmem-bench.swap';
  const spin = opts['spin-us'];
  if (!/^\d{1,5}$/.test(spin) || Number(spin) > 10_000) throw usageError(`--spin-us: ${spin} is not a number of µs from 0 to 10000`);
  const hugePages = opts['huge-pages'];
  if (hugePages !== 'auto' && hugePages !== 'off') throw usageError(`--huge-pages: '${hugePages}' is neither auto nor off`);
  let cpus;
  try {
    cpus = cpuPlacement(opts.pin);
  } catch (error) {
    throw usageError(error.message);
  }
  // Every cell is a child of this process and inherits its CPUs; only the memory node and the stream's
  // sender, which stand for the remote machine, are placed elsewhere.
  const nodeCpus = placeSelf(cpus);

  const results = {
    schema: 'farmem-bench/1',
    command: ['npx farmem bench', ...process.argv.slice(2)].join(' '),
    quick,
    machine: machine(),
    budgets,
    policies,
    samplesPerCell: Number(samples),
    // More samples past samplesPerCell until those add up to this many seconds (0: none).
    sampleSeconds: Number(sampleSeconds),
    // Both farmem's pager (FarMemory spinMicros) and the memory node (--spin-us) poll this long after demand work.
    spinMicros: Number(spin),
    // farmem's hugePages option; each farmem cell records whether it applied (hugePagesUsed).
    hugePages,
    // Where the processes ran (bench/cpus.js): the memory node on a CPU of its own, or not pinned and why.
    cpus,
    swapSlackBytes: SWAP_SLACK_BYTES,
    // The fastest of the stream's medians over the run (tcpStreamMeasurements: at the start, beside the
    // scan, at the end): this host's loopback read 3.08 GB/s just before a scan and 1.83 just after it, so
    // one figure taken before the cells can be far from what the scan got minutes later.
    tcpStreamGBps: null,
    tcpStreamMeasurements: [],
    // The faster of the two medians measured just before and just after the scan's farmem cell at
    // SCAN_BAR_BUDGET ('scan-before', 'scan-after'): the stream as it was when the scan ran, which the
    // scan bar is set against. null when the run has no such cell.
    scanStreamGBps: null,
    swap: null,
    workloads: [],
    faultLatency: [],
  };

  console.error(`CPU placement: ${describePlacement(cpus)}`);
  const measureStream = async (when) => {
    console.error(`measuring the loopback TCP stream (the transport ceiling) ${STREAM_WHEN[when]} …`);
    const stream = await loopbackStreamGBps({ bytes: (quick ? 512 : 2048) * 2 ** 20, trials: quick ? 1 : 3, senderCpus: nodeCpus });
    results.tcpStreamMeasurements.push({ when, gbPerSec: stream.gbPerSec, trials: stream.trials, writeBytes: stream.writeBytes, readBufferBytes: stream.readBufferBytes });
    results.tcpStreamGBps = Math.max(...results.tcpStreamMeasurements.map((m) => m.gbPerSec));
    const beside = besideScan(results.tcpStreamMeasurements);
    if (beside.length === 2) results.scanStreamGBps = Math.max(...beside.map((m) => m.gbPerSec));
  };
  await measureStream('start');

  const largest = Math.max(...workloads.map((w) => w.bytes(quick)));
  const prepared = opts['no-swap']
    ? { available: false, reason: 'kernel swap skipped: --no-swap' }
    : await kernelSwap.prepareKernelSwap({ swapBytes: Math.max(1 << 30, 2 * largest), swapFile });
  results.swap = prepared.available
    ? { available: true, reason: null, cgroup: prepared.cgroupVersion, swapFile: prepared.swapFile }
    : { available: false, reason: prepared.reason };
  if (!prepared.available) console.error(prepared.reason);

  const cells = [];
  for (const w of workloads) {
    const variants = [...policies, ...(w.guide ? ['none+guide'] : [])];
    cells.push({ w, system: 'local', budget: 1 });
    for (const budget of budgets) {
      cells.push({ w, system: 'farmem', budget, variants });
      if (prepared.available) cells.push({ w, system: 'swap', budget });
    }
  }

  const node = await startNodeProcess('4GiB', ['--spin-us', spin], { cpus: nodeCpus });
  // Off a terminal (CI logs, a pipe) the bar prints a line every 10 s instead of redrawing.
  const bar = new SingleBar({
    format: 'farmem bench [{bar}] {value}/{total} cells | {duration_formatted} | {cell}',
    stream: process.stderr,
    noTTYOutput: true,
    notTTYSchedule: 10_000,
  }, Presets.shades_classic);
  bar.start(cells.length, 0, { cell: '' });
  try {
    const byWorkload = new Map();
    for (const cell of cells) {
      const what = `${cell.w.name} on ${cell.system}${cell.system === 'local' ? '' : ` at ${cell.budget * 100}%`}`;
      bar.update({ cell: what });
      const latency = cell.w.name === 'random' && cell.budget === LATENCY_BUDGET && cell.system !== 'local' ? (quick ? 1000 : 4000) : 0;
      const argv = ['--workload', cell.w.name, '--system', cell.system, '--budget', String(cell.budget), '--samples', samples,
        '--sample-seconds', sampleSeconds, '--latency', String(latency), ...(quick ? ['--quick'] : [])];
      if (cell.system === 'farmem') argv.push('--node', node.address, '--variants', cell.variants.join(','), '--spin', spin, '--huge-pages', hugePages);
      // This host's loopback moves by more than half within a run: the scan is set against the stream
      // measured beside its own cell, with the node idle, not only at the run's two ends.
      // Not in a smoke run, which must end within two minutes.
      const isScanBarCell = !quick && cell.w.name === 'scan' && cell.system === 'farmem' && cell.budget === SCAN_BAR_BUDGET;
      const measureBesideScan = async (when) => {
        bar.stop();
        await measureStream(when);
        bar.start(cells.length, cells.indexOf(cell), { cell: what });
      };
      if (isScanBarCell) await measureBesideScan('scan-before');
      let out;
      try {
        out = cell.system === 'swap'
          ? await runSwapCell(prepared, argv, budgetBytes(cell.budget, cell.w.bytes(quick)), what)
          : await runCell(argv, what);
      } catch (error) {
        // A failed cell is recorded and the suite goes on; the report shows it as missing.
        bar.stop();
        console.error(`  ${error.message}`);
        bar.start(cells.length, cells.indexOf(cell), { cell: what });
        out = { runs: [], error: error.message };
        if (cell.system !== 'local') out.runs = [{ system: cell.system, label: cell.system === 'swap' ? 'kernel swap' : 'farmem', budget: cell.budget, error: error.message }];
      }
      if (isScanBarCell) await measureBesideScan('scan-after');
      let entry = byWorkload.get(cell.w.name);
      if (!entry) {
        entry = { name: cell.w.name, title: cell.w.title, description: cell.w.description, workingSetBytes: cell.w.bytes(quick), local: null, runs: [] };
        byWorkload.set(cell.w.name, entry);
        results.workloads.push(entry);
      }
      if (cell.system === 'local') {
        entry.local = out.runs[0] ? { seconds: out.runs[0].seconds, median: out.runs[0].median } : { error: out.error };
      } else {
        for (const r of out.runs) {
          entry.runs.push({ ...r, normalized: entry.local?.median && r.median ? entry.local.median / r.median : null });
        }
        if (out.cgroup && entry.runs.length > 0) entry.runs[entry.runs.length - 1].cgroup = out.cgroup;
      }
      if (out.latency) {
        const label = cell.system === 'swap' ? `kernel swap (${cell.budget * 100}% local)` : `farmem, policy none (${cell.budget * 100}% local)`;
        results.faultLatency.push({ label, workload: cell.w.name, ...out.latency });
      }
      bar.increment();
    }
  } finally {
    bar.stop();
    await node.stop();
    if (prepared.available) await prepared.cleanup();
  }

  // A smoke run (--quick) measures once: it must end within two minutes.
  if (!quick) await measureStream('end');

  const file = opts.out ?? path.join(ROOT, 'bench', 'results', `apps-${results.machine.date.slice(0, 16).replace(':', '')}.json`);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(results, null, 2) + '\n');
  printTable(results);
  console.log(`\nresults: ${path.relative(process.cwd(), file)}\ncharts and tables: npx farmem bench --report`);
}

/** Normalised performance (local time / time), one row per workload and system, one column per budget. */
function printTable(results) {
  const beside = results.scanStreamGBps === null ? '' : ` (beside the scan at 25%: ${results.scanStreamGBps.toFixed(2)} GB/s)`;
  console.log(`\nloopback TCP stream: ${results.tcpStreamGBps.toFixed(2)} GB/s${beside}; performance normalised to all-local (1.00)`);
  console.log(`| workload | system | ${results.budgets.map((b) => `${b * 100}%`).join(' | ')} |`);
  console.log(`|---|---|${results.budgets.map(() => '---').join('|')}|`);
  for (const w of results.workloads) {
    const labels = [...new Set(w.runs.map((r) => r.label))];
    for (const label of labels) {
      const cells = results.budgets.map((budget) => {
        const r = w.runs.find((x) => x.label === label && x.budget === budget);
        return fmtNorm(r?.normalized ?? null);
      });
      console.log(`| ${w.name} | ${label} | ${cells.join(' | ')} |`);
    }
  }
}

main().catch((error) => {
  if (error.code === 'FARMEM_INVALID_OPTION') {
    console.error(`farmem bench: ${error.message} [${error.code}]`);
    process.exit(2);
  }
  console.error(error);
  process.exit(1);
});
