'use strict';
// The baseline a user would reach for instead of far memory: the same workload on a plain ArrayBuffer,
// in a process whose memory cgroup is limited to the same local budget, with Linux swapping to a file.
//
// Parent side: prepareKernelSwap() adds a swap file and finds the memory cgroup hierarchy;
// runInCgroup() runs one benchmark child in a fresh cgroup of its own.
// Child side: enterLimit() sets the limit once the child has loaded and built its inputs, so the limit
// starts at Node's own (squeezed) footprint plus the budget; calibrateLimit() and moveLimit() then steer
// it until workingSetResidentBytes() says the working set keeps the budget resident; cgroupUsageBytes()
// and swapCounters() report on the run.
const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const NOT_ROOT =
  'kernel swap skipped: adding a swap file and a memory cgroup needs root; ' +
  'run the bench as root (sudo npx farmem bench) to include it';

// What this process has set up and must undo, also from the exit/signal handlers.
// pageCluster: the host's vm.page-cluster while withPageCluster has changed it, else null.
const owned = { swapFiles: new Set(), cgroups: new Set(), children: new Set(), pageCluster: null };
let handlersInstalled = false;
let cgroupCounter = 0;
const internals = new WeakMap(); // prepared object -> { hierarchy, swapFile, cgroups, cleaned }

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function readText(file) {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

/** Runs a command; resolves { ok, code, stdout, stderr } and never rejects. */
function execCommand(cmd, args) {
  return new Promise((resolve) => {
    let child;
    try {
      child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (error) {
      resolve({ ok: false, code: null, stdout: '', stderr: String(error.message) });
      return;
    }
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    child.once('error', (error) => resolve({ ok: false, code: null, stdout, stderr: stderr || error.message }));
    child.once('close', (code) => resolve({ ok: code === 0, code, stdout, stderr: stderr.trim() }));
  });
}

function describeFailure(what, result) {
  return `${what} failed${result.code == null ? '' : ` (exit ${result.code})`}: ${result.stderr || result.stdout.trim() || 'no output'}`;
}

// ---- finding the memory cgroup -------------------------------------------------------------------

/** Mount lines of /proc/self/mounts as { point, type, options[] }; octal escapes in paths undone. */
function mounts() {
  const text = readText('/proc/self/mounts') || '';
  const unescape = (s) => s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
  return text.split('\n').filter(Boolean).map((line) => {
    const [, point, type, options] = line.split(' ');
    return { point: unescape(point), type, options: options.split(',') };
  });
}

/**
 * The directory new cgroups go under: this process's own cgroup where it can hold children (so the
 * benchmark stays inside whatever accounting the caller is under), else the hierarchy's root.
 * Returns { version, dir } or { reason }.
 */
function findMemoryHierarchy() {
  const all = mounts();
  // /proc/self/cgroup lines are "id:controllers:path"; the cgroup2 line is "0::path".
  const own = (readText('/proc/self/cgroup') || '').split('\n').map((line) => /^\d+:([^:]*):(.*)$/.exec(line))
    .filter(Boolean).map((m) => ({ controllers: m[1].split(','), rel: m[2] }));

  const v1 = all.find((m) => m.type === 'cgroup' && m.options.includes('memory'));
  if (v1) {
    const entry = own.find((e) => e.controllers.includes('memory'));
    const candidate = entry ? path.join(v1.point, entry.rel) : v1.point;
    const dir = fs.existsSync(path.join(candidate, 'cgroup.procs')) ? candidate : v1.point;
    return { version: 'v1', dir };
  }

  const v2 = all.find((m) => m.type === 'cgroup2' && (readText(path.join(m.point, 'cgroup.controllers')) || '').split(/\s+/).includes('memory'));
  if (v2) {
    // cgroup v2: a cgroup that has processes cannot enable controllers for its children (except the
    // root), so try our own cgroup first and fall back to the mount's root.
    const entry = own.find((e) => e.controllers.length === 1 && e.controllers[0] === '');
    const candidates = [];
    if (entry && entry.rel !== '/') candidates.push(path.join(v2.point, entry.rel));
    candidates.push(v2.point);
    const errors = [];
    for (const dir of candidates) {
      const controllers = (readText(path.join(dir, 'cgroup.controllers')) || '').split(/\s+/);
      if (!controllers.includes('memory')) continue;
      const enabled = (readText(path.join(dir, 'cgroup.subtree_control')) || '').split(/\s+/);
      if (!enabled.includes('memory')) {
        try {
          fs.writeFileSync(path.join(dir, 'cgroup.subtree_control'), '+memory');
        } catch (error) {
          errors.push(`${dir}: ${error.code || error.message}`);
          continue;
        }
      }
      return { version: 'v2', dir };
    }
    return { reason: `kernel swap skipped: could not enable the memory controller for child cgroups (${errors.join('; ')})` };
  }

  return { reason: 'kernel swap skipped: no memory cgroup controller found (no cgroup v1 mount with "memory", no cgroup2 mount offering "memory")' };
}

// ---- swap file -----------------------------------------------------------------------------------

/** Paths of active swap areas from /proc/swaps (the kernel escapes spaces as \040). */
function activeSwaps() {
  const lines = (readText('/proc/swaps') || '').split('\n').slice(1).filter(Boolean);
  return lines.map((line) => line.split(/\s+/)[0].replace(/\\040/g, ' '));
}

/** Whether a file carries mkswap's signature at the end of its first page. */
function hasSwapSignature(file) {
  let fd;
  try {
    fd = fs.openSync(file, 'r');
    const buf = Buffer.alloc(10);
    for (const pageSize of [4096, 16384, 65536]) {
      if (fs.readSync(fd, buf, 0, 10, pageSize - 10) === 10 && buf.toString('latin1').startsWith('SWAPSPACE2')) return true;
    }
    return false;
  } catch {
    return false;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/**
 * One try at removing a cgroup: true once it is gone. With killLeft, any task still inside (a grandchild
 * that left the process group) is killed first, since rmdir fails with EBUSY while one remains.
 */
function tryRemoveCgroup(dir, killLeft) {
  try {
    fs.rmdirSync(dir);
  } catch (error) {
    if (error.code !== 'ENOENT') {
      if (killLeft) {
        for (const pid of (readText(path.join(dir, 'cgroup.procs')) || '').split('\n').filter(Boolean)) {
          try { process.kill(Number(pid), 'SIGKILL'); } catch { /* already gone */ }
        }
      }
      return false;
    }
  }
  owned.cgroups.delete(dir);
  return true;
}

function removeCgroupSync(dir) {
  for (let attempt = 0; attempt < 40; attempt++) {
    if (tryRemoveCgroup(dir, true)) return true;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
  }
  return false;
}

/** Best-effort synchronous teardown, for 'exit' and signals: kill children, drop cgroups, swapoff, page-cluster back. */
function teardownSync() {
  restorePageClusterSync();
  for (const child of owned.children) {
    try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ }
  }
  for (const dir of [...owned.cgroups]) removeCgroupSync(dir);
  for (const file of [...owned.swapFiles]) {
    try { execFileSync('swapoff', [file], { stdio: 'ignore' }); } catch { /* not active */ }
    try { fs.rmSync(file, { force: true }); } catch { /* leave it */ }
    owned.swapFiles.delete(file);
  }
}

function onSignal(signal) {
  teardownSync();
  // Our listener stopped the default action; when nobody else handles the signal, die of it as usual.
  process.removeListener(signal, onSignal);
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
}

function installHandlers() {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', teardownSync);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, onSignal);
}

function uninstallHandlersIfIdle() {
  if (!handlersInstalled || owned.swapFiles.size || owned.cgroups.size || owned.children.size || owned.pageCluster !== null) return;
  handlersInstalled = false;
  process.removeListener('exit', teardownSync);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.removeListener(signal, onSignal);
}

/**
 * Drops farmem-bench-<pid>-<n> cgroups left by a run that died (its pid is gone). A benchmark child
 * orphaned there is killed: it would otherwise keep running with its pages in the swap file.
 */
function removeStaleCgroups(dir) {
  let names;
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const m = /^farmem-bench-(\d+)-\d+$/.exec(name);
    if (!m || Number(m[1]) === process.pid) continue;
    try {
      process.kill(Number(m[1]), 0);
      continue; // that run is still alive
    } catch (error) {
      if (error.code !== 'ESRCH') continue;
    }
    removeCgroupSync(path.join(dir, name));
  }
}

/**
 * Adds a swap file and finds the memory cgroup hierarchy.
 * Resolves { available: true, cgroupVersion, swapFile, createdSwapFile, cleanup() } or
 * { available: false, reason }; never rejects.
 * A swap file already active at `swapFile` (a crashed earlier run) is swapped off and made afresh;
 * should that swapoff fail it is reused as it is (createdSwapFile: false). Either way cleanup() turns it
 * off and deletes it. An existing file there that is not a swap area is left alone (unavailable).
 */
async function prepareKernelSwap({ swapBytes = 2 * 1024 ** 3, swapFile = path.join(os.tmpdir(), 'farmem-bench.swap') } = {}) {
  if (process.platform !== 'linux') return { available: false, reason: 'kernel swap skipped: needs Linux (memory cgroups and swapon)' };
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return { available: false, reason: NOT_ROOT };

  const hierarchy = findMemoryHierarchy();
  if (hierarchy.reason) return { available: false, reason: hierarchy.reason };

  removeStaleCgroups(hierarchy.dir);
  swapFile = path.resolve(swapFile);
  const bytes = Math.ceil(swapBytes / 4096) * 4096;
  installHandlers();

  if (activeSwaps().includes(swapFile)) {
    const off = await execCommand('swapoff', [swapFile]);
    if (!off.ok) {
      owned.swapFiles.add(swapFile);
      return available(hierarchy, swapFile, false);
    }
  }
  if (fs.existsSync(swapFile) && !hasSwapSignature(swapFile)) {
    uninstallHandlersIfIdle();
    return { available: false, reason: `kernel swap skipped: ${swapFile} exists and is not a swap file; not overwriting it (pass another swapFile or remove it)` };
  }

  const fail = (reason) => {
    try { fs.rmSync(swapFile, { force: true }); } catch { /* nothing to remove */ }
    uninstallHandlersIfIdle();
    return { available: false, reason: `kernel swap skipped: ${reason}` };
  };
  fs.rmSync(swapFile, { force: true });
  owned.swapFiles.add(swapFile); // from here on the exit handler removes it
  // fallocate is instant where the filesystem supports it; dd writes the zeros where it does not
  // (swapon rejects files with holes, so ftruncate is no use).
  let made = await execCommand('fallocate', ['-l', String(bytes), swapFile]);
  if (!made.ok) {
    fs.rmSync(swapFile, { force: true });
    made = await execCommand('dd', ['if=/dev/zero', `of=${swapFile}`, 'bs=1M', `count=${Math.ceil(bytes / 1048576)}`, 'status=none']);
    if (!made.ok) {
      owned.swapFiles.delete(swapFile);
      return fail(describeFailure(`creating ${swapFile} (fallocate, then dd)`, made));
    }
  }
  try {
    fs.chmodSync(swapFile, 0o600);
  } catch (error) {
    owned.swapFiles.delete(swapFile);
    return fail(`chmod 600 ${swapFile} failed: ${error.message}`);
  }
  const mk = await execCommand('mkswap', [swapFile]);
  if (!mk.ok) {
    owned.swapFiles.delete(swapFile);
    return fail(describeFailure(`mkswap ${swapFile}`, mk));
  }
  // Highest priority, so pages go to this file even where the system has swap of its own.
  const on = await execCommand('swapon', ['--priority', '32767', swapFile]);
  if (!on.ok) {
    owned.swapFiles.delete(swapFile);
    return fail(describeFailure(`swapon ${swapFile}`, on));
  }
  return available(hierarchy, swapFile, true);
}

function available(hierarchy, swapFile, createdSwapFile) {
  const state = { hierarchy, swapFile, cgroups: new Set(), cleaned: false };
  const prepared = {
    available: true,
    cgroupVersion: hierarchy.version,
    swapFile,
    createdSwapFile,
    async cleanup() {
      if (state.cleaned) return;
      state.cleaned = true;
      for (const dir of state.cgroups) await removeCgroup(dir);
      const off = await execCommand('swapoff', [swapFile]);
      if (!off.ok && activeSwaps().includes(swapFile)) {
        throw new Error(`kernel swap cleanup: ${describeFailure(`swapoff ${swapFile}`, off)}`);
      }
      fs.rmSync(swapFile, { force: true });
      owned.swapFiles.delete(swapFile);
      uninstallHandlersIfIdle();
    },
  };
  internals.set(prepared, state);
  return prepared;
}

async function removeCgroup(dir) {
  // Charges can take a moment to drain after the last task exits: kill leftovers only after a while.
  for (let attempt = 0; attempt < 40; attempt++) {
    if (tryRemoveCgroup(dir, attempt >= 10)) return true;
    await sleep(50);
  }
  return false;
}

/** Whether the cgroup's OOM killer fired, read before the cgroup is removed. */
function wasOomKilled(version, dir, signal, timedOut) {
  const file = path.join(dir, version === 'v2' ? 'memory.events' : 'memory.oom_control');
  const m = /^oom_kill (\d+)$/m.exec(readText(file) || '');
  if (m) return Number(m[1]) > 0;
  // v1 before Linux 4.13 has no counter. failcnt counts every time usage hit the limit, which is
  // routine under swapping, so it only means an OOM kill alongside a SIGKILL we did not send.
  return signal === 'SIGKILL' && !timedOut && Number(readText(path.join(dir, 'memory.failcnt')) || 0) > 0;
}

// How far a stalled v1 cgroup's limit is raised for a moment, and how long before it goes back.
const RESCUE_STEP_BYTES = 1 << 20;
const RESCUE_HOLD_MS = 5;

/**
 * cgroup v1 only. Under a tight limit v1's reclaim sometimes gives up (every page it holds just
 * referenced), and the OOM killer ends the cell. Here the killer is off: a charge that fails then
 * sleeps ("under_oom") until some of the cgroup's memory is freed (a swap-out completing) or the limit
 * rises. In case nothing is freed, this process, outside the cgroup, polls for a sleeper every
 * millisecond, raises the limit by RESCUE_STEP_BYTES, which wakes it, and puts the limit back
 * RESCUE_HOLD_MS later (reclaiming on the way down) unless the child has set a limit of its own since.
 * A stall counts in the cell's time, as memory.high's throttling does on v2. Returns null where the
 * killer cannot be turned off, else { stop() -> { rescues, maxRaiseBytes, raisedMs } }.
 */
function startOomRescue(dir) {
  const control = path.join(dir, 'memory.oom_control');
  const limitPath = path.join(dir, 'memory.limit_in_bytes');
  try {
    fs.writeFileSync(control, '1');
  } catch {
    return null;
  }
  const stats = { rescues: 0, maxRaiseBytes: 0, raisedMs: 0 };
  let raised = null; // { from, to, at } while this process holds the limit above the child's
  const readLimit = () => Number(readText(limitPath));
  const tick = () => {
    const underOom = /^under_oom 1$/m.test(readText(control) || '');
    const now = performance.now();
    if (underOom) {
      const limit = readLimit();
      if (!Number.isFinite(limit)) return;
      const to = limit + RESCUE_STEP_BYTES;
      try {
        fs.writeFileSync(limitPath, String(to));
      } catch {
        return; // the cgroup is going away
      }
      if (raised === null || raised.to !== limit) raised = { from: limit, to, at: now };
      else raised.to = to; // raised again before it went back: still from the child's limit
      stats.rescues++;
      stats.maxRaiseBytes = Math.max(stats.maxRaiseBytes, raised.to - raised.from);
      return;
    }
    if (raised === null || now - raised.at < RESCUE_HOLD_MS) return;
    if (readLimit() !== raised.to) {
      raised = null; // the child set its own limit meanwhile
      return;
    }
    try {
      fs.writeFileSync(limitPath, String(raised.from));
      stats.raisedMs += now - raised.at;
      raised = null;
    } catch {
      // EBUSY: not reclaimable down to it yet; tried again on the next tick.
    }
  };
  const timer = setInterval(tick, 1);
  return {
    stop() {
      clearInterval(timer);
      if (raised !== null) stats.raisedMs += performance.now() - raised.at;
      return stats;
    },
  };
}

/**
 * Runs `node ...argv` in a fresh memory cgroup, with no limit yet: the child sets it with enterLimit().
 * stdout is collected, stderr inherited. Resolves { code, signal, stdout, oomKilled, timedOut, oomRescue }
 * (oomRescue: startOomRescue's figures on v1, else null).
 */
async function runInCgroup(prepared, { limitSlackBytes = 0, budgetBytes, argv = [], env = process.env, timeoutMs = 0 } = {}) {
  const state = prepared && internals.get(prepared);
  if (!state) throw new Error('runInCgroup: pass the object prepareKernelSwap() resolved with available: true');
  if (state.cleaned) throw new Error('runInCgroup: cleanup() has already run');
  if (!Number.isFinite(budgetBytes) || budgetBytes <= 0) throw new Error('runInCgroup: budgetBytes must be a positive number');
  const version = prepared.cgroupVersion;
  const cgdir = path.join(state.hierarchy.dir, `farmem-bench-${process.pid}-${cgroupCounter++}`);
  fs.mkdirSync(cgdir);
  state.cgroups.add(cgdir);
  owned.cgroups.add(cgdir);
  installHandlers();

  // The shell joins the cgroup and then execs node, so every byte node allocates is charged to it.
  const child = spawn('/bin/sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgdir, process.execPath, ...argv], {
    stdio: ['ignore', 'pipe', 'inherit'],
    detached: true, // its own process group, so a timeout can kill everything it started
    env: {
      ...env,
      FARMEM_BENCH_CGROUP: cgdir,
      FARMEM_BENCH_CGROUP_VERSION: version,
      FARMEM_BENCH_LIMIT_BYTES: String(Math.round(budgetBytes + limitSlackBytes)),
    },
  });
  owned.children.add(child);
  const rescue = version === 'v1' ? startOomRescue(cgdir) : null;
  let stdout = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d) => { stdout += d; });

  let timedOut = false;
  const timer = timeoutMs > 0
    ? setTimeout(() => {
      timedOut = true;
      try { process.kill(-child.pid, 'SIGKILL'); } catch { /* already gone */ }
    }, timeoutMs)
    : null;

  let oomRescue = null;
  const { code, signal } = await new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (c, s) => resolve({ code: c, signal: s }));
  }).finally(() => {
    if (timer) clearTimeout(timer);
    if (rescue !== null) oomRescue = rescue.stop();
    owned.children.delete(child);
  });
  // Whatever it left in its process group goes too.
  try { process.kill(-child.pid, 'SIGKILL'); } catch { /* none left */ }

  const oomKilled = wasOomKilled(version, cgdir, signal, timedOut);
  if (await removeCgroup(cgdir)) state.cgroups.delete(cgdir);
  return { code, signal, stdout, oomKilled, timedOut, oomRescue };
}

// ---- child side ----------------------------------------------------------------------------------

function childCgroup() {
  const dir = process.env.FARMEM_BENCH_CGROUP;
  if (!dir) return null;
  return { dir, version: process.env.FARMEM_BENCH_CGROUP_VERSION === 'v2' ? 'v2' : 'v1' };
}

/** Bytes charged to this child's cgroup now (anon, page cache, kernel), or null outside runInCgroup. */
function cgroupUsageBytes() {
  const cg = childCgroup();
  if (!cg) return null;
  return Number(fs.readFileSync(path.join(cg.dir, cg.version === 'v2' ? 'memory.current' : 'memory.usage_in_bytes'), 'utf8'));
}

/** The control file limitCgroup writes: v2's memory.high, v1's memory.limit_in_bytes. */
function limitFile(version) {
  return version === 'v2' ? 'memory.high' : 'memory.limit_in_bytes';
}

/** Limits this child's cgroup's resident memory to `bytes`, leaving swap unlimited. */
function limitCgroup(bytes) {
  const cg = childCgroup();
  if (!cg) throw new Error('limitCgroup: not running under runInCgroup (FARMEM_BENCH_CGROUP unset)');
  const value = String(Math.round(bytes));
  if (cg.version === 'v2') {
    try {
      fs.writeFileSync(path.join(cg.dir, 'memory.swap.max'), 'max');
    } catch (error) {
      if (error.code !== 'ENOENT') throw error; // no swap accounting: swap is not limited anyway
    }
    // memory.high, with memory.max left at "max": above it the kernel reclaims and throttles the task
    // that allocates, and never OOM-kills. A memory.max the kernel cannot reclaim down to in time
    // OOM-kills instead: on a 6.18 host, 11 of 28 swap cells, whose retries then ran with up to 5x
    // farmem's memory.
    fs.writeFileSync(path.join(cg.dir, limitFile('v2')), value);
  } else {
    // v1: memory.memsw.limit_in_bytes (RAM + swap) stays at its default, unlimited, so only RAM is capped.
    fs.writeFileSync(path.join(cg.dir, limitFile('v1')), value);
  }
}

/**
 * Pages swapped in and out so far: pswpin and pswpout from /proc/vmstat. System-wide counts, not this
 * cgroup's, so take differences around a measurement on an otherwise idle machine.
 */
function swapCounters() {
  const text = readText('/proc/vmstat') || '';
  const get = (name) => {
    const m = new RegExp(`^${name} (\\d+)$`, 'm').exec(text);
    return m ? Number(m[1]) : 0;
  };
  return { swapIns: get('pswpin'), swapOuts: get('pswpout') };
}

/**
 * Squeezes the child's footprint (half of it, for a moment), then sets the limit to what it uses after
 * that plus FARMEM_BENCH_LIMIT_BYTES. Call it once everything is loaded and the inputs are built, just
 * before allocating the working set. Returns { footprintBytes, baselineBytes, limitBytes, limitFile }
 * (the control file written), or null outside runInCgroup.
 */
function enterLimit() {
  const cg = childCgroup();
  if (!cg) return null;
  const extra = Number(process.env.FARMEM_BENCH_LIMIT_BYTES);
  if (!Number.isFinite(extra) || extra <= 0) throw new Error('enterLimit: FARMEM_BENCH_LIMIT_BYTES is not set');
  // Squeezed first, the cold part of the footprint goes to swap now, so the budget is not padded with
  // room the kernel frees by swapping out Node's own idle pages (farmem pages its region only).
  const footprintBytes = cgroupUsageBytes();
  try {
    limitCgroup(Math.floor(footprintBytes / 2));
  } catch {
    // EBUSY: the kernel could not get that low; what it did swap out stays out.
  }
  const baselineBytes = cgroupUsageBytes();
  const limitBytes = baselineBytes + extra;
  limitCgroup(limitBytes);
  childLimitBytes = limitBytes;
  return { footprintBytes, baselineBytes, limitBytes, limitFile: limitFile(cg.version) };
}

let childLimitBytes = null; // the limit this child last set (enterLimit, moveLimit)

/** The limit this child last set, in bytes. */
function currentLimitBytes() {
  return childLimitBytes;
}

/** How far from the budget the working set's resident bytes may be and count as on target. */
function residentTolerance(budgetBytes) {
  return Math.max(Math.round(budgetBytes * 0.05), 512 << 10);
}

/** On target: within the tolerance of the budget, or the whole working set where the budget covers it. */
function onTarget(residentBytes, budgetBytes, bytes) {
  const tolerance = residentTolerance(budgetBytes);
  return Math.abs(residentBytes - budgetBytes) <= tolerance || (residentBytes < budgetBytes && residentBytes >= bytes - tolerance);
}

/**
 * Moves this child's limit by `deltaBytes`. Lowering below usage makes the kernel reclaim at once; v1
 * answers EBUSY where it cannot, so the step is halved and tried again (v2's memory.high never refuses).
 * Returns the limit now set.
 */
function moveLimit(deltaBytes) {
  if (childLimitBytes == null) throw new Error('moveLimit: call enterLimit() first');
  let step = Math.round(deltaBytes);
  for (let tries = 0; tries < 4 && step !== 0; tries++) {
    try {
      limitCgroup(childLimitBytes + step);
      childLimitBytes += step;
      break;
    } catch (error) {
      if (error.code !== 'EBUSY') throw error;
      step = Math.round(step / 2);
    }
  }
  return childLimitBytes;
}

/**
 * Moves the cgroup's limit until the kernel keeps `budgetBytes` of the working set resident, as farmem's
 * budget caps its region. A fixed limit does not: during the runs the kernel swaps out Node's own idle
 * pages and gives that room to the working set (a 64 MiB KV table at a 16 MiB budget kept 31 MiB
 * resident). Calls `runOnce` (untimed) up to `rounds` times, measuring after each (over `range`, from
 * allocateWorkingSet) and moving the limit by the excess.
 * Returns { targetBytes, toleranceBytes, converged, rounds: [{ limitBytes, residentBytes }] }.
 */
function calibrateLimit(bytes, budgetBytes, runOnce, { rounds = 8, range = null } = {}) {
  if (childLimitBytes == null) throw new Error('calibrateLimit: call enterLimit() first');
  const history = [];
  let converged = false;
  for (let round = 0; round < rounds; round++) {
    runOnce();
    const ws = workingSetResidentBytes(bytes, range);
    if (!ws) break; // the mapping was not found: nothing to steer by
    history.push({ limitBytes: childLimitBytes, residentBytes: ws.residentBytes });
    if (onTarget(ws.residentBytes, budgetBytes, bytes)) {
      converged = true;
      break;
    }
    moveLimit(budgetBytes - ws.residentBytes);
  }
  return { targetBytes: budgetBytes, toleranceBytes: residentTolerance(budgetBytes), converged, rounds: history };
}

const pagemapBuffers = new Map(); // bytes read -> Buffer, reused so that measuring allocates nothing new

/** [start, end) of every anonymous mapping in /proc/self/maps (inode 0, no path). */
function anonymousMappings() {
  const out = [];
  for (const line of (readText('/proc/self/maps') || '').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ 0\s*$/.exec(line);
    if (m) out.push([parseInt(m[1], 16), parseInt(m[2], 16)]);
  }
  return out;
}

/** Whether an anonymous range of `sizeBytes` can hold a buffer of `bytes` (malloc adds a header page). */
function fitsWorkingSet(sizeBytes, bytes) {
  return sizeBytes >= bytes && sizeBytes <= bytes + (2 << 20);
}

/** The smallest of `ranges` ([start, end) pairs) that can hold `bytes`, as { start, sizeBytes }, or null. */
function smallestFit(ranges, bytes) {
  let best = null;
  for (const [start, end] of ranges) {
    if (fitsWorkingSet(end - start, bytes) && (!best || end - start < best.sizeBytes)) best = { start, sizeBytes: end - start };
  }
  return best;
}

/**
 * Allocates the working set as a plain ArrayBuffer and finds where its memory went: the anonymous
 * memory that appeared with it, which is a mapping of its own or the part by which a neighbouring
 * mapping grew when the kernel merged the two. Returns { buffer, range: { start, sizeBytes } | null }.
 */
function allocateWorkingSet(bytes) {
  const before = anonymousMappings();
  const buffer = new ArrayBuffer(bytes);
  // What is new: each mapping now, less the parts of it that were mapped before.
  const appeared = anonymousMappings().flatMap(([start, end]) => {
    let pieces = [[start, end]];
    for (const [oldStart, oldEnd] of before) {
      if (oldEnd <= start || oldStart >= end) continue;
      pieces = pieces.flatMap(([a, b]) => [[a, Math.min(b, oldStart)], [Math.max(a, oldEnd), b]].filter(([x, y]) => y > x));
    }
    return pieces;
  });
  return { buffer, range: smallestFit(appeared, bytes) };
}

/**
 * Resident bytes of the working set: of `range` (from allocateWorkingSet), or else of the smallest
 * anonymous mapping in /proc/self/maps that can hold `bytes` (a large ArrayBuffer gets an mmap of its
 * own, unless the kernel merged it with a neighbour). Its pages are counted in /proc/self/pagemap (bit
 * 63 present, bit 62 swapped), read into a reused buffer, so that measuring allocates little under a
 * tight limit, as parsing smaps would not. Returns { sizeBytes, residentBytes, swappedBytes }, or null
 * if no range is given and no such mapping is found.
 */
function workingSetResidentBytes(bytes, range = null) {
  const best = range ?? smallestFit(anonymousMappings(), bytes);
  if (!best) return null;
  const pages = best.sizeBytes / 4096;
  let buf = pagemapBuffers.get(pages * 8);
  if (!buf) {
    buf = Buffer.alloc(pages * 8);
    pagemapBuffers.set(pages * 8, buf);
  }
  const fd = fs.openSync('/proc/self/pagemap', 'r');
  try {
    fs.readSync(fd, buf, 0, buf.length, (best.start / 4096) * 8);
  } finally {
    fs.closeSync(fd);
  }
  let present = 0;
  let swapped = 0;
  for (let i = 7; i < buf.length; i += 8) {
    if (buf[i] & 0x80) present++;
    else if (buf[i] & 0x40) swapped++;
  }
  return { sizeBytes: best.sizeBytes, residentBytes: present * 4096, swappedBytes: swapped * 4096 };
}

const PAGE_CLUSTER = '/proc/sys/vm/page-cluster';

function restorePageClusterSync() {
  if (owned.pageCluster === null) return;
  try { fs.writeFileSync(PAGE_CLUSTER, owned.pageCluster); } catch { /* leave it */ }
  owned.pageCluster = null;
}

/**
 * Runs fn with vm.page-cluster (log2 of the pages a swap-in reads ahead) at `value`; the host's value
 * comes back after, also on exit and on a signal. Needs root. null: fn runs with the host's.
 */
async function withPageCluster(value, fn) {
  if (value === null) return fn();
  if (owned.pageCluster !== null) throw new Error('withPageCluster: already changed');
  owned.pageCluster = fs.readFileSync(PAGE_CLUSTER, 'utf8').trim();
  installHandlers();
  try {
    fs.writeFileSync(PAGE_CLUSTER, String(value));
    return await fn();
  } finally {
    restorePageClusterSync();
    uninstallHandlersIfIdle();
  }
}

module.exports = {
  prepareKernelSwap, withPageCluster, runInCgroup, cgroupUsageBytes, limitCgroup, swapCounters, enterLimit, calibrateLimit, moveLimit,
  currentLimitBytes, onTarget, allocateWorkingSet, workingSetResidentBytes,
};
