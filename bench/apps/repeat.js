'use strict';
// Runs one workload over and over on a farmem region, for a profiler to watch (perf record -a, perf top):
// starts a memory node process, fills the region, runs the workload `--runs` times and prints the median
// run against all-local, the pager's counters per run, and (on Linux) each thread's CPU time per run.
// Usage: node bench/apps/repeat.js [--workload columns] [--budget 0.25] [--policy readahead] [--runs 40]
//        [--spin-us 200] [--options '{"maxPrefetchFraction":0.5}'] (more FarMemory.open options)
//        [--prefetch-options '{"maxWindow":256}'] (the region's prefetchOptions)
//        [--pin auto|off] (CPU placement as `farmem bench` makes it, bench/cpus.js)
const fs = require('node:fs');
const { parseArgs } = require('node:util');
const { startNodeProcess, median } = require('../common');
const { cpuPlacement, placeSelf, describePlacement } = require('../cpus');
const { WORKLOADS, budgetBytes, initByCopy } = require('./workloads');
const { FarMemory } = require('../../dist/cjs/index.js');

/**
 * Nanoseconds each thread of this process has run, and waited runnable for a CPU, by thread id
 * (/proc/self/task/<tid>/schedstat). null where the kernel does not say.
 */
function threadTimes() {
  const times = new Map();
  let tids;
  try {
    tids = fs.readdirSync('/proc/self/task');
  } catch {
    return null;
  }
  for (const tid of tids) {
    try {
      const [ran, waited] = fs.readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ').map(Number);
      times.set(Number(tid), { ran, waited });
    } catch {
      // The thread ended, or no schedstat: left out.
    }
  }
  return times.size > 0 ? times : null;
}

/** Milliseconds per run on CPU, and runnable but waiting, for the main thread, the busiest other (the pager here) and the rest. */
function describeThreadTimes(before, after, runs) {
  if (before === null || after === null) return 'CPU by thread: not available (no /proc/self/task/*/schedstat)';
  const per = (ns) => (ns / runs / 1e6).toFixed(1);
  const deltas = [...after].map(([tid, t]) => {
    const b = before.get(tid) ?? { ran: 0, waited: 0 };
    return { tid, ran: t.ran - b.ran, waited: t.waited - b.waited };
  });
  const main = deltas.find((d) => d.tid === process.pid) ?? { ran: 0, waited: 0 };
  const others = deltas.filter((d) => d.tid !== process.pid).sort((a, b) => b.ran - a.ran);
  const busiest = others[0] ?? { ran: 0, waited: 0 };
  const rest = others.slice(1).reduce((sum, d) => sum + d.ran, 0);
  return (
    `CPU a run by thread: main (the workload) ${per(main.ran)} ms, busiest other (the pager) ${per(busiest.ran)} ms, ` +
    `${others.length - 1} others ${per(rest)} ms; runnable but waiting for a CPU: main ${per(main.waited)} ms, busiest other ${per(busiest.waited)} ms`
  );
}

async function main() {
  const { values: opts } = parseArgs({
    options: {
      workload: { type: 'string', default: 'columns' },
      budget: { type: 'string', default: '0.25' },
      policy: { type: 'string', default: 'readahead' },
      runs: { type: 'string', default: '40' },
      'spin-us': { type: 'string', default: '200' },
      options: { type: 'string', default: '{}' },
      'prefetch-options': { type: 'string', default: '{}' },
      pin: { type: 'string', default: 'auto' },
    },
  });
  const workload = WORKLOADS.find((w) => w.name === opts.workload);
  if (!workload) throw new Error(`no workload '${opts.workload}' (${WORKLOADS.map((w) => w.name).join(', ')})`);
  const runs = Number(opts.runs);
  const spin = Number(opts['spin-us']);
  const cpus = cpuPlacement(opts.pin);
  const nodeCpus = placeSelf(cpus);
  const bytes = workload.bytes(false);
  const ctx = workload.prepare(bytes, false);
  const timeRuns = (buffer, n) => {
    const seconds = [];
    for (let i = 0; i < n; i++) {
      const t0 = process.hrtime.bigint();
      workload.run(buffer, ctx);
      seconds.push(Number(process.hrtime.bigint() - t0) / 1e9);
    }
    return median(seconds);
  };

  const local = new ArrayBuffer(bytes);
  workload.init(local, ctx);
  workload.run(local, ctx);
  const localSeconds = timeRuns(local, 5);

  const node = await startNodeProcess('4GiB', ['--spin-us', String(spin)], { cpus: nodeCpus });
  const fm = await FarMemory.open({ nodes: [node.address], localBudget: budgetBytes(Number(opts.budget), bytes), spinMicros: spin, ...JSON.parse(opts.options) });
  const region = await fm.allocate(bytes, { prefetch: opts.policy, prefetchOptions: JSON.parse(opts['prefetch-options']) });
  try {
    initByCopy(workload, region.buffer, ctx);
    workload.run(region.buffer, ctx);
    const before = region.stats();
    console.log(`pid ${process.pid}: ${runs} runs of ${workload.name} at ${Number(opts.budget) * 100}% local, policy ${opts.policy}; CPUs: ${describePlacement(cpus)}`);
    const threadsBefore = threadTimes();
    const seconds = timeRuns(region.buffer, runs);
    const threadsAfter = threadTimes();
    const after = region.stats();
    const per = (name) => Math.round((after[name] - before[name]) / runs);
    console.log(`median ${seconds.toFixed(4)} s a run; all-local ${localSeconds.toFixed(4)} s; ${(localSeconds / seconds).toFixed(3)} of all-local`);
    console.log(`per run: ${per('faults')} faults, ${per('remoteFetches')} demand fetches, ${per('prefetched')} prefetched, ${per('evictions')} evictions, ${per('writeFaults')} write faults, ${per('writebacks')} write-backs, ${per('hugeBlocks')} whole blocks landed`);
    console.log(describeThreadTimes(threadsBefore, threadsAfter, runs));
  } finally {
    await region.free();
    await fm.close();
    await node.stop();
  }
}

main().catch((error) => {
  console.error(error?.stack ?? error);
  process.exit(1);
});
