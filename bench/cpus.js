'use strict';
// CPU placement for the application benchmarks. The memory node stands for another machine, so it gets a
// CPU of its own. The applications (every all-local, farmem and kernel-swap cell) and the suite's own
// process run on the others. On a 2-vCPU VM the scheduler otherwise moves the pager, the application and
// the node between the two CPUs, and every wakeup across them costs a vCPU wake. docs/benchmark-log.md
// (2026-12-04) gives the figures.
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');

/** "0-2,5" -> [0, 1, 2, 5]. */
function parseCpuList(text) {
  const cpus = [];
  for (const part of text.trim().split(',')) {
    if (part === '') continue;
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) throw new Error(`cannot read the CPU list '${text}'`);
    const first = Number(m[1]);
    const last = m[2] === undefined ? first : Number(m[2]);
    for (let c = first; c <= last; c++) cpus.push(c);
  }
  return cpus;
}

/** The CPUs this process may run on (its affinity, not merely the CPUs online). */
function allowedCpus() {
  const status = fs.readFileSync('/proc/self/status', 'utf8');
  const m = /^Cpus_allowed_list:\s*(\S+)$/m.exec(status);
  if (!m) throw new Error('/proc/self/status has no Cpus_allowed_list');
  return parseCpuList(m[1]);
}

function hasTaskset() {
  try {
    execFileSync('taskset', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * mode 'auto': the last allowed CPU for the memory node, the rest for the applications, where there are
 * two CPUs or more and taskset (util-linux) is installed. Resolves to
 * { pinned: true, node: '1', application: '0' } or { pinned: false, reason }. mode 'off': never pinned.
 */
function cpuPlacement(mode) {
  if (mode === 'off') return { pinned: false, reason: '--pin off' };
  if (mode !== 'auto') throw new Error(`--pin: '${mode}' is neither auto nor off`);
  const cpus = allowedCpus();
  if (cpus.length < 2) return { pinned: false, reason: `this process may run on ${cpus.length} CPU only: none to set apart for the memory node` };
  if (!hasTaskset()) return { pinned: false, reason: 'taskset (util-linux) is not installed: processes left where the scheduler puts them' };
  return { pinned: true, node: String(cpus[cpus.length - 1]), application: cpus.slice(0, -1).join(',') };
}

/** [command, argv] run on `cpus` through taskset; unchanged when cpus is null. */
function onCpus(cpus, command, argv) {
  return cpus ? ['taskset', ['-c', cpus, command, ...argv]] : [command, argv];
}

/** Moves every thread of this process onto `cpus`. Threads and children started later inherit it. */
function pinSelf(cpus) {
  execFileSync('taskset', ['-a', '-p', '-c', cpus, String(process.pid)], { stdio: 'ignore' });
}

/**
 * Applies a placement to this process: pins it to the applications' CPUs when pinned. Returns the CPUs
 * for whatever stands for the remote machine (the memory node, the stream's sender), or null.
 */
function placeSelf(placement) {
  if (!placement.pinned) return null;
  pinSelf(placement.application);
  return placement.node;
}

/** One line for the output and the report. */
function describePlacement(placement) {
  if (!placement) return 'not recorded (runs before 2026-12-04 left every process where the scheduler put it)';
  if (!placement.pinned) return `not pinned: ${placement.reason}`;
  return `memory node on CPU ${placement.node}; the applications, every cell and the stream's receiver on CPU ${placement.application} (taskset)`;
}

module.exports = { parseCpuList, allowedCpus, cpuPlacement, onCpus, pinSelf, placeSelf, describePlacement };
