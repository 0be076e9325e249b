// The application benchmark's pieces on real parts: its workloads on farmem regions a quarter of whose
// pages fit locally (real userfaultfd, a real memory node on loopback), the pager's write-around and
// passed-page eviction that those workloads lean on, and `farmem bench`'s refusal of bad options.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FrameTable } from '../lib/pager/frames';
import { farmem, MiB, ROOT, runChild, UNHURRIED_BUDGET_MS } from './helpers';

const { FarMemory, MemoryNode } = farmem;
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { WORKLOADS } = require('../bench/apps/workloads.js') as {
  WORKLOADS: Array<{
    name: string;
    bytes(quick: boolean): number;
    guide?: string;
    prepare(bytes: number, quick: boolean): unknown;
    init(buffer: ArrayBuffer, ctx: unknown): void;
    run(buffer: ArrayBuffer, ctx: unknown): number;
    verify(buffer: ArrayBuffer, ctx: unknown, result: number): void;
  }>;
};
const workload = (name: string) => WORKLOADS.find((w) => w.name === name)!;

let node: InstanceType<typeof MemoryNode>;

beforeAll(async () => {
  node = await MemoryNode.start({ host: '127.0.0.1', port: 0, capacity: 512 * MiB });
});

afterAll(async () => {
  await node?.stop();
});

describe('bench workloads on a farmem region at 25% local', () => {
  for (const [name, prefetch] of [['quicksort', 'readahead'], ['kv', 'none'], ['tree', 'none'], ['random', 'leap']] as const) {
    it(`${name} (${prefetch}) gives the all-local answer, twice, and again from the node after evict()`, async () => {
      const w = workload(name);
      const bytes = w.bytes(true);
      const fm = await FarMemory.open({ nodes: [node.address], localBudget: bytes / 4 });
      try {
        const region = await fm.allocate(bytes, { prefetch });
        if (w.guide) await region.setGuide({ module: w.guide, depth: 64, timeBudgetMs: UNHURRIED_BUDGET_MS });
        const ctx = w.prepare(bytes, true);
        w.init(region.buffer, ctx);
        for (let round = 0; round < 2; round++) w.verify(region.buffer, ctx, w.run(region.buffer, ctx));
        await region.evict();
        w.verify(region.buffer, ctx, w.run(region.buffer, ctx));
        const stats = region.stats();
        expect(stats.evictions).toBeGreaterThan(0);
        expect(stats.policyErrors).toBe(0);
        if (name === 'quicksort') {
          // The partition passes are sequential writers: write-around spared most pages their fault.
          expect(stats.writeAround).toBeGreaterThan(stats.writeFaults);
        }
        await region.free();
      } finally {
        await fm.close();
      }
      // A guard against a hang, not a speed check: kv's fill at 25% took 36 s alone and 90 s beside the
      // other test files on a 2-vCPU host.
    }, 300_000);
  }

  it('gives the same answers with the pager and the node both polling after demand work (spinMicros)', async () => {
    const spinning = await MemoryNode.start({ host: '127.0.0.1', port: 0, capacity: 64 * MiB, spinMicros: 300 });
    const w = workload('list');
    const bytes = w.bytes(true);
    const fm = await FarMemory.open({ nodes: [spinning.address], localBudget: bytes / 4, spinMicros: 300 });
    try {
      const region = await fm.allocate(bytes, { prefetch: 'none' });
      const ctx = w.prepare(bytes, true);
      w.init(region.buffer, ctx);
      await region.evict();
      w.verify(region.buffer, ctx, w.run(region.buffer, ctx));
      expect(region.stats().remoteFetches).toBeGreaterThanOrEqual(bytes / 4096);
      await region.free();
    } finally {
      await fm.close();
      await spinning.stop();
    }
  }, 60_000);

  it('verify() catches a wrong answer and a lost write', () => {
    const scan = workload('scan');
    const buffer = new ArrayBuffer(MiB);
    scan.init(buffer, {});
    const sum = scan.run(buffer, {});
    expect(() => scan.verify(buffer, {}, sum + 1)).toThrow(/scan sum/);
    const random = workload('random');
    const ctx = random.prepare(MiB, true);
    random.init(buffer, ctx);
    const result = random.run(buffer, ctx);
    new Float64Array(buffer).fill(-1);
    expect(() => random.verify(buffer, ctx, result)).toThrow(/random write lost/);
  });
});

describe('eviction-sim (kv under FIFO, LRU and the pager)', () => {
  it('counts misses as FIFO and LRU would, on a trace where the two differ', () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { fifoMisses, lruMisses } = require('../bench/apps/eviction-sim.js') as {
      fifoMisses(trace: number[], frames: number, pages: number): number;
      lruMisses(trace: number[], frames: number): number;
    };
    const trace = [1, 2, 3, 1, 4, 1, 5];
    // FIFO with 3 frames: 4 pushes out 1 although 1 was just used, so 1 misses again.
    expect(fifoMisses(trace, 3, 8)).toBe(6);
    // LRU keeps 1 and pushes out 2, then 3.
    expect(lruMisses(trace, 3)).toBe(5);
    expect(fifoMisses(trace, 8, 8)).toBe(5);
    expect(lruMisses(trace, 8)).toBe(5);
  });

  it('replays the pager: refault gaps keep hot pages that fill order sends away once a trip', () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { refaultGapMisses } = require('../bench/apps/eviction-sim.js') as {
      refaultGapMisses(trace: number[], frames: number, pages: number, options?: { window?: number; windowShare?: number }): number;
    };
    // 200 rounds of 8 hot pages and 4 cold ones from a pool of 100, in 32 frames: the 800 cold touches
    // and the 8 first hot ones miss under any order.
    const trace: number[] = [];
    let cold = 8;
    for (let r = 0; r < 200; r++) {
      for (let h = 0; h < 8; h++) trace.push(h);
      for (let c = 0; c < 4; c++) {
        trace.push(cold);
        cold = cold === 107 ? 8 : cold + 1;
      }
    }
    const fillOrder = refaultGapMisses(trace, 32, 108, { window: 1 }) - 808;
    const wholeQueue = refaultGapMisses(trace, 32, 108, { windowShare: 1 }) - 808;
    const pagerDefault = refaultGapMisses(trace, 32, 108) - 808;
    expect(wholeQueue).toBeGreaterThanOrEqual(0);
    // Fill order loses every hot page each trip round the 32 frames.
    expect(fillOrder).toBeGreaterThan(100);
    expect(wholeQueue).toBeLessThan(fillOrder / 5);
    // The pager looks at the oldest 35% only (so a sort keeps its newest pages): it keeps fewer.
    expect(pagerDefault).toBeLessThan(fillOrder);
    expect(pagerDefault).toBeGreaterThan(wholeQueue);
  });
});

describe('FrameTable refault gaps', () => {
  it('measures fills between eviction and a fault\'s refetch, ages skipped frames, and knows no gap for prefetches', () => {
    const frames = new FrameTable(8);
    const first = frames.take(0, 0, true);
    expect(frames.refaultGap(first, 0)).toBe(Infinity); // never evicted
    const evictedAt = frames.evictionStamp(); // page 0 leaves after 1 fill
    frames.release(first);
    const one = frames.take(0, 1, true);
    const two = frames.take(0, 2, true);
    const back = frames.take(0, 0, true); // 3 fills after it left
    expect(frames.refaultGap(back, evictedAt)).toBe(3);
    const guessed = frames.take(0, 5, false);
    expect(frames.refaultGap(guessed, evictedAt)).toBe(-1);
    // peekOldest moves nothing.
    const oldest: number[] = [];
    frames.peekOldest(8, (f) => oldest.push(f));
    expect(oldest).toEqual([one, two, back, guessed]);
    expect(frames.popOldest()).toBe(one);
    expect(frames.popOldest()).toBe(two);
    expect(frames.popOldest()).toBe(back);
    // Passed over, a frame's gap counts for more (SKIP_AGING, 1.05) and it goes to the back.
    frames.requeueSkipped(back);
    expect(frames.refaultGap(back, evictedAt)).toBeCloseTo(3 * 1.05);
    oldest.length = 0;
    frames.peekOldest(2, (f) => oldest.push(f));
    expect(oldest).toEqual([guessed, back]);
  });
});

describe('FrameTable passed stack', () => {
  it('gives back passed frames newest first, once each, and forgets frames released or retaken', () => {
    const frames = new FrameTable(8);
    const f = [0, 1, 2, 3].map((page) => frames.take(0, page, false));
    frames.pushPassed(f[0]);
    frames.pushPassed(f[1]);
    frames.pushPassed(f[2]);
    frames.pushPassed(f[1]); // already on the stack: no second entry
    frames.release(f[2]);
    const retaken = frames.take(0, 9, false); // the released frame again, for another page
    expect(retaken).toBe(f[2]);
    expect(frames.popPassed()).toBe(f[1]);
    expect(frames.popPassed()).toBe(f[0]);
    expect(frames.popPassed()).toBe(-1); // f[2]'s entry went stale with its first owner
    // The ring still holds every frame in use, oldest first, whatever the stack did.
    expect(frames.popOldest()).toBe(f[0]);
  });

  it('keeps only live entries when the stack fills with stale ones', () => {
    const frames = new FrameTable(2);
    const keep = frames.take(0, 0, false);
    frames.pushPassed(keep);
    for (let i = 0; i < 10; i++) {
      const f = frames.take(0, 1 + i, false);
      frames.pushPassed(f);
      frames.release(f);
    }
    expect(frames.popPassed()).toBe(keep);
    expect(frames.popPassed()).toBe(-1);
  });
});

// Where transparent huge pages are "always", the last touch can bring in a whole 2 MiB page, plus the
// page malloc puts its header on.
const HUGE_PAGE_SLACK = 2 * MiB + 4096;

describe('farmem bench', () => {
  const cli = path.join(ROOT, 'bin', 'farmem.js');

  it('skips kernel swap for an unprivileged user with a reason that says how to include it', async (context) => {
    if (process.getuid?.() !== 0) context.skip();
    // A copy the unprivileged user can read: the checkout may sit in root's home.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'farmem-swap-unpriv-'));
    try {
      fs.copyFileSync(path.join(ROOT, 'bench/apps/kernel-swap.js'), path.join(dir, 'kernel-swap.js'));
      fs.writeFileSync(
        path.join(dir, 'probe.cjs'),
        "require('./kernel-swap.js').prepareKernelSwap({ swapBytes: 1 << 20 }).then((r) => console.log(JSON.stringify(r)));\n",
      );
      fs.chmodSync(dir, 0o755);
      const result = await runChild(path.join(dir, 'probe.cjs'), [], { uid: 65534, gid: 65534, cwd: dir });
      expect(result.code).toBe(0);
      const prepared = JSON.parse(result.stdout.trim().split('\n').pop()!);
      expect(prepared.available).toBe(false);
      expect(prepared.reason).toMatch(/needs root/);
      expect(prepared.reason).toMatch(/sudo npx farmem bench/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("sets vm.page-cluster for a swap cell's retry and puts the host's back, also when the run dies of a signal", async (context) => {
    if (process.getuid?.() !== 0) context.skip();
    const PAGE_CLUSTER = '/proc/sys/vm/page-cluster';
    const host = fs.readFileSync(PAGE_CLUSTER, 'utf8').trim();
    const other = host === '0' ? '1' : '0';
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { withPageCluster } = require('../bench/apps/kernel-swap.js') as {
      withPageCluster<T>(value: number | null, fn: () => Promise<T>): Promise<T>;
    };
    const read = () => fs.readFileSync(PAGE_CLUSTER, 'utf8').trim();
    expect(await withPageCluster(Number(other), async () => read())).toBe(other);
    expect(read()).toBe(host);
    await expect(withPageCluster(Number(other), async () => { throw new Error('cell failed'); })).rejects.toThrow('cell failed');
    expect(read()).toBe(host);
    expect(await withPageCluster(null, async () => read())).toBe(host);

    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'farmem-page-cluster-'));
    try {
      const script = path.join(dir, 'die.cjs');
      fs.writeFileSync(
        script,
        `const { withPageCluster } = require(${JSON.stringify(path.join(ROOT, 'bench/apps/kernel-swap.js'))});\n` +
          `setInterval(() => {}, 1000);\n` +
          `withPageCluster(${other}, () => { console.log(require('fs').readFileSync('${PAGE_CLUSTER}', 'utf8').trim()); process.kill(process.pid, 'SIGTERM'); return new Promise(() => {}); });\n`,
      );
      const result = await runChild(script);
      expect(result.stdout.trim()).toBe(other);
      expect(result.signal).toBe('SIGTERM');
      expect(read()).toBe(host);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('wakes a swap cell stalled at its cgroup v1 limit instead of letting the OOM killer end it', async (context) => {
    if (process.getuid?.() !== 0) context.skip();
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const kernelSwap = require('../bench/apps/kernel-swap.js') as {
      prepareKernelSwap(o: { swapBytes: number; swapFile: string }): Promise<{ available: boolean; cgroupVersion?: string; cleanup(): Promise<void> }>;
      runInCgroup(
        prepared: unknown,
        o: { budgetBytes: number; argv: string[]; timeoutMs: number },
      ): Promise<{ code: number | null; stdout: string; oomKilled: boolean; oomRescue: { rescues: number; maxRaiseBytes: number } | null }>;
    };
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'farmem-oom-rescue-'));
    const prepared = await kernelSwap.prepareKernelSwap({ swapBytes: 16 * MiB, swapFile: path.join(dir, 'swap') });
    try {
      if (!prepared.available || prepared.cgroupVersion !== 'v1') context.skip();
      // With swappiness 0 the cgroup cannot swap anything out, so every charge past the limit fails the
      // way a thrashing cell's does when reclaim gives up: without the rescue the kernel kills the child.
      const script = path.join(dir, 'grow.cjs');
      fs.writeFileSync(
        script,
        `const ks = require(${JSON.stringify(path.join(ROOT, 'bench/apps/kernel-swap.js'))});\n` +
          `ks.enterLimit();\n` +
          `require('fs').writeFileSync(require('path').join(process.env.FARMEM_BENCH_CGROUP, 'memory.swappiness'), '0');\n` +
          `const view = new Uint8Array(24 * 1024 * 1024);\n` +
          `for (let i = 0; i < view.length; i += 4096) view[i] = 1;\n` +
          // Exit status 7: every page was touched. Exiting asks the kernel for no memory; a write to
          // stdout could, at a limit the cgroup sits at.
          `process.exit(7);\n`,
      );
      // --jitless: no compiler thread asking for memory while the child sits at its limit.
      const r = await kernelSwap.runInCgroup(prepared, { budgetBytes: 4 * MiB, argv: ['--jitless', script], timeoutMs: 60_000 });
      expect(r.oomKilled, JSON.stringify(r)).toBe(false);
      expect(r.code, JSON.stringify(r)).toBe(7);
      expect(r.oomRescue!.rescues).toBeGreaterThan(0);
      expect(r.oomRescue!.maxRaiseBytes).toBeGreaterThan(0);
    } finally {
      if (prepared.available) await prepared.cleanup();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('measures how much of a buffer is resident, which the swap harness steers its cgroup limit by', () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { workingSetResidentBytes } = require('../bench/apps/kernel-swap.js') as {
      workingSetResidentBytes(bytes: number): { sizeBytes: number; residentBytes: number } | null;
    };
    const bytes = 40 * MiB + 12 * 1024; // a size no other mapping of this process is likely to have
    const buffer = new ArrayBuffer(bytes);
    const view = new Uint8Array(buffer);
    const before = workingSetResidentBytes(bytes)!;
    expect(before.sizeBytes).toBeGreaterThanOrEqual(bytes);
    expect(before.residentBytes).toBeLessThan(MiB); // fresh anonymous memory: nothing touched yet
    for (let i = 0; i < 10 * MiB; i += 4096) view[i] = 1;
    const quarter = workingSetResidentBytes(bytes)!;
    expect(quarter.residentBytes).toBeGreaterThanOrEqual(10 * MiB);
    expect(quarter.residentBytes).toBeLessThanOrEqual(10 * MiB + HUGE_PAGE_SLACK);
    for (let i = 0; i < bytes; i += 4096) view[i] = 1;
    expect(workingSetResidentBytes(bytes)!.residentBytes).toBeGreaterThanOrEqual(40 * MiB);
  });

  it('finds where a working set went as it is allocated, and measures that range', () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { allocateWorkingSet, workingSetResidentBytes } = require('../bench/apps/kernel-swap.js') as {
      allocateWorkingSet(bytes: number): { buffer: ArrayBuffer; range: { start: number; sizeBytes: number } | null };
      workingSetResidentBytes(bytes: number, range?: { start: number; sizeBytes: number } | null): { residentBytes: number } | null;
    };
    const bytes = 36 * MiB + 20 * 1024; // over glibc's largest mmap threshold (32 MiB): always an mmap of its own
    const { buffer, range } = allocateWorkingSet(bytes);
    expect(buffer.byteLength).toBe(bytes);
    expect(range).not.toBeNull();
    expect(range!.sizeBytes).toBeGreaterThanOrEqual(bytes);
    expect(range!.sizeBytes).toBeLessThanOrEqual(bytes + 2 * MiB);
    expect(range!.start % 4096).toBe(0);
    const view = new Uint8Array(buffer);
    expect(workingSetResidentBytes(bytes, range)!.residentBytes).toBeLessThan(MiB);
    for (let i = 0; i < 6 * MiB; i += 4096) view[i] = 1;
    const touched = workingSetResidentBytes(bytes, range)!.residentBytes;
    expect(touched).toBeGreaterThanOrEqual(6 * MiB);
    expect(touched).toBeLessThanOrEqual(6 * MiB + HUGE_PAGE_SLACK);
  });

  it('measures the loopback stream to its last byte, reading into one preallocated buffer', async () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { loopbackStreamGBps } = require('../bench/apps/tcp-stream.js') as {
      loopbackStreamGBps(o: object): Promise<{ gbPerSec: number; trials: number[]; writeBytes: number; readBufferBytes: number }>;
    };
    // Not a multiple of the write size, so the sender's last write is a short one; the trial rejects
    // unless every byte arrives.
    const stream = await loopbackStreamGBps({ bytes: 8 * MiB + 1000, trials: 2, warmupBytes: 0, chunkBytes: 64 * 1024 });
    expect(stream.trials).toHaveLength(2);
    for (const rate of stream.trials) expect(rate).toBeGreaterThan(0);
    expect(stream.gbPerSec).toBeGreaterThanOrEqual(Math.min(...stream.trials));
    expect(stream.gbPerSec).toBeLessThanOrEqual(Math.max(...stream.trials));
    expect(stream).toMatchObject({ writeBytes: 64 * 1024, readBufferBytes: MiB });
  });

  for (const [args, pattern] of [
    [['--budgets', '2'], /--budgets: 2 is not a share in \(0, 1\]/],
    [['--workloads', 'fibonacci'], /no workload 'fibonacci' \(scan, random, quicksort, columns, kv, list, tree\)/],
    [['--policies', 'psychic'], /no policy 'psychic'/],
    [['--samples', '0'], /--samples: 0 is not a count/],
    [['--sample-seconds', 'soon'], /--sample-seconds: soon is not a number of seconds from 0 to 60/],
    [['--pin', 'sometimes'], /--pin: 'sometimes' is neither auto nor off/],
    [['--bogus'], /Unknown option '--bogus'/],
    [['--report', '--bogus'], /Unknown option '--bogus'/],
  ] as const) {
    it(`refuses ${args.join(' ')} with FARMEM_INVALID_OPTION and exit status 2, before measuring anything`, () => {
      const r = spawnSync(process.execPath, [cli, 'bench', ...args], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(pattern);
      expect(r.stderr).toMatch(/\[FARMEM_INVALID_OPTION\]/);
      expect(r.stderr).not.toMatch(/loopback TCP/);
    });
  }
});
