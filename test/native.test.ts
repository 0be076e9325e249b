// The native addon through lib/native.ts: real userfaultfd, real mmap, no mocks.
// A thread that touches a missing page blocks until another thread serves it, so every fault here
// is served by a pager worker (test/fixtures/native-pager.cjs) that loads dist/cjs/native.js:
// run `npx tsc -p tsconfig.json` (and `npx node-gyp rebuild`) first.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FarmemError } from '../lib/errors';
import { caught } from './helpers';
import {
  capabilities,
  COPY_DONTWAKE,
  COPY_WP,
  FAULT_FLAG_WP,
  FAULT_FLAG_WRITE,
  loadNative,
  type NativeBinding,
  type UffdHandle,
} from '../lib/native';

const ROOT = path.join(__dirname, '..');
const FIXTURES = path.join(__dirname, 'fixtures');
const PAGE = 4096;

interface Fault {
  address: number;
  flags: number;
  tid: number;
  present?: number;
}
interface Pager {
  worker: Worker;
  ready: Promise<{ fd: number }>;
  rpc(op: string, args?: Record<string, unknown>): Promise<any>;
}
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { startPager, pattern } = require('./fixtures/native-rpc.cjs') as {
  startPager(workerData?: Record<string, unknown>): Pager;
  pattern(address: number, seed: number): Uint8Array;
};

/** The kernel's id of the calling thread, as UFFD_FEATURE_THREAD_ID reports it. */
function currentTid(): number {
  return Number(fs.readlinkSync('/proc/thread-self').split('/')[2]);
}

function isMapped(address: number): boolean {
  const prefix = `${address.toString(16)}-`;
  return fs.readFileSync('/proc/self/maps', 'utf8').split('\n').some((line) => line.startsWith(prefix));
}

function turn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Stderr of a child that ended cleanly: no abort, no libuv complaint. */
function expectCleanStderr(stderr: string): void {
  expect(stderr).not.toMatch(/Assertion|uv_loop_close|FATAL ERROR|Aborted|Segmentation/);
}

const native: NativeBinding = loadNative();

beforeAll(() => {
  if (!fs.existsSync(path.join(ROOT, 'dist', 'cjs', 'native.js'))) {
    throw new Error('dist/cjs/native.js is missing: run `npx tsc -p tsconfig.json` before these tests');
  }
});

describe('probe', () => {
  it('reports what this kernel offers', () => {
    const caps = capabilities();
    expect(caps.platformSupported).toBe(true);
    expect(caps.pageSize).toBe(4096);
    expect(caps.kernelRelease).toBe(os.release());
    if (process.getuid?.() === 0) {
      expect(caps.mode).toBe('kernel');
      expect(caps.source).toBe('syscall');
      expect(caps.errno).toBe(0);
      expect(caps.reason).toBe('');
    }
    expect(caps.apiFeatures & 1).toBe(1); // UFFD_FEATURE_PAGEFAULT_FLAG_WP
    expect(caps.writeProtect).toBe(true);
    expect(caps.threadId).toBe(true);
    // WAKE, COPY, ZEROPAGE and WRITEPROTECT on anonymous memory.
    for (const bit of [2, 3, 4, 6]) expect(caps.registerIoctls & (1 << bit)).toBe(1 << bit);
    expect(caps.move).toBe((caps.apiFeatures & (1 << 16)) !== 0);
  });

  it('answers a fresh object each time', () => {
    const a = native.probe();
    const b = native.probe();
    expect(a).not.toBe(b);
    expect(a).toEqual(b);
  });
});

describe('faults served from a pager worker', () => {
  let pager: Pager;
  const tid = currentTid();

  beforeAll(async () => {
    pager = startPager({ writeProtect: true });
    await pager.ready;
  });

  afterAll(async () => {
    await pager.rpc('close');
    await pager.worker.terminate();
  });

  /** A fresh region registered (missing + WP) with the pager, served by `plan`. */
  async function region(pages: number, plan: Record<string, unknown> = { missing: 'copy', seed: 1 }) {
    const { address, buffer } = native.mapCreate(pages * PAGE);
    const ioctls = await pager.rpc('register', { address, length: pages * PAGE, wp: true });
    await pager.rpc('plan', { plan });
    return { address, buffer, view: new Uint8Array(buffer), ioctls: ioctls as number };
  }

  const page = (view: Uint8Array, index: number) => view.subarray(index * PAGE, (index + 1) * PAGE);

  it('serves missing pages by copy() and reports each fault once, with address, flags and thread', async () => {
    const r = await region(16);
    expect(r.ioctls & (1 << 3)).toBe(1 << 3); // UFFDIO_COPY
    expect(page(r.view, 0)).toEqual(pattern(r.address, 1));
    expect(page(r.view, 3)).toEqual(pattern(r.address + 3 * PAGE, 1));
    expect(page(r.view, 3)).toEqual(pattern(r.address + 3 * PAGE, 1)); // resident now: no fault
    const log: Fault[] = await pager.rpc('log');
    expect(log).toEqual([
      { address: r.address, flags: 0, tid, present: 0 },
      { address: r.address + 3 * PAGE, flags: 0, tid, present: 0 },
    ]);
  });

  it('reports a write to a missing page with FAULT_FLAG_WRITE', async () => {
    const r = await region(4);
    r.view[2 * PAGE + 10] = 0xab;
    const expected = pattern(r.address + 2 * PAGE, 1);
    expected[10] = 0xab;
    expect(page(r.view, 2)).toEqual(expected);
    const log: Fault[] = await pager.rpc('log');
    expect(log).toHaveLength(1);
    expect(log[0].flags & FAULT_FLAG_WRITE).toBe(FAULT_FLAG_WRITE);
    expect(log[0].flags & FAULT_FLAG_WP).toBe(0);
  });

  it('installs pages write-protected with COPY_WP: the first write faults with FAULT_FLAG_WP', async () => {
    const r = await region(4, { missing: 'copy-wp', seed: 2 });
    expect(page(r.view, 1)).toEqual(pattern(r.address + PAGE, 2));
    expect(await pager.rpc('log')).toEqual([{ address: r.address + PAGE, flags: 0, tid, present: 0 }]);
    r.view[PAGE + 7] = 1; // the pager answers writeProtect(..., false, false)
    r.view[PAGE + 8] = 2; // writable now: no fault
    expect(await pager.rpc('log')).toEqual([
      { address: r.address + PAGE, flags: FAULT_FLAG_WRITE | FAULT_FLAG_WP, tid },
    ]);
    expect([r.view[PAGE + 7], r.view[PAGE + 8], r.view[PAGE + 9]]).toEqual([1, 2, pattern(r.address + PAGE, 2)[9]]);
  });

  it('copies with COPY_DONTWAKE and wakes with wake()', async () => {
    const r = await region(2, { missing: 'copy-dontwake', seed: 3 });
    expect(page(r.view, 1)).toEqual(pattern(r.address + PAGE, 3));
    expect(await pager.rpc('log')).toEqual([{ address: r.address + PAGE, flags: 0, tid, present: 0 }]);
  });

  it('serves zeros with zeropage()', async () => {
    const r = await region(2, { missing: 'zero' });
    expect(page(r.view, 1).every((b) => b === 0)).toBe(true);
    expect(await pager.rpc('log')).toEqual([{ address: r.address + PAGE, flags: 0, tid, present: 0 }]);
  });

  it('write-protects the zero page: zeropage(dontWake) + writeProtect(protect) + wake, then a write faults WP', async () => {
    const r = await region(2, { missing: 'zero-wp' });
    expect(r.view[5]).toBe(0);
    r.view[5] = 9;
    expect(r.view[5]).toBe(9);
    expect(r.view[6]).toBe(0);
    expect(await pager.rpc('log')).toEqual([
      { address: r.address, flags: 0, tid },
      { address: r.address, flags: FAULT_FLAG_WRITE | FAULT_FLAG_WP, tid },
    ]);
  });

  it('faults again after dropRange()', async () => {
    const r = await region(2, { missing: 'copy', seed: 4 });
    expect(r.view[PAGE + 1]).toBe(pattern(r.address + PAGE, 4)[1]);
    expect(native.dropRange(r.address + PAGE, PAGE)).toBe(true);
    await pager.rpc('plan', { plan: { missing: 'copy', seed: 5 } });
    expect(page(r.view, 1)).toEqual(pattern(r.address + PAGE, 5));
    const log: Fault[] = await pager.rpc('log');
    expect(log.map((f) => f.address)).toEqual([r.address + PAGE, r.address + PAGE]);
  });

  it('drops several ranges in one dropRanges() call, and only those fault again', async () => {
    const r = await region(8, { missing: 'copy', seed: 11 });
    for (let p = 0; p < 8; p++) expect(r.view[p * PAGE]).toBe(pattern(r.address + p * PAGE, 11)[0]);
    expect((await pager.rpc('log')).length).toBe(8);
    // Pages 1, 3-4 and 6; the last pair is not counted.
    const list = new Float64Array([r.address + PAGE, PAGE, r.address + 3 * PAGE, 2 * PAGE, r.address + 6 * PAGE, PAGE, r.address, PAGE]);
    expect(native.dropRanges(list, 3)).toBe(3);
    await pager.rpc('plan', { plan: { missing: 'copy', seed: 12 } });
    for (let p = 0; p < 8; p++) {
      const seed = [1, 3, 4, 6].includes(p) ? 12 : 11;
      expect(page(r.view, p)).toEqual(pattern(r.address + p * PAGE, seed));
    }
    const log: Fault[] = await pager.rpc('log');
    expect(log.map((f) => (f.address - r.address) / PAGE)).toEqual([1, 3, 4, 6]);
    expect(native.dropRanges(list, 0)).toBe(0);
  });

  it('refuses a bad dropRanges() list with a typed error, dropping nothing', async () => {
    const r = await region(4, { missing: 'copy', seed: 13 });
    expect(r.view[0] + r.view[PAGE]).toBe(pattern(r.address, 13)[0] + pattern(r.address + PAGE, 13)[0]);
    expect((await pager.rpc('log')).length).toBe(2);
    const list = (...values: number[]) => new Float64Array(values);
    expect(caught(() => native.dropRanges([r.address, PAGE] as unknown as Float64Array, 1))).toBeInstanceOf(TypeError);
    expect(caught(() => native.dropRanges(list(r.address, PAGE), 2))).toBeInstanceOf(RangeError);
    // A bad pair after a good one: the good one is not dropped either.
    expect(caught(() => native.dropRanges(list(r.address, PAGE, r.address + PAGE + 8, PAGE), 2))).toBeInstanceOf(RangeError);
    expect(caught(() => native.dropRanges(list(r.address, PAGE, r.address + PAGE, 0), 2))).toBeInstanceOf(RangeError);
    expect(caught(() => native.dropRanges(list(r.address, 5 * PAGE), 1))).toBeInstanceOf(RangeError); // past the end
    expect(r.view[0] + r.view[PAGE]).toBe(pattern(r.address, 13)[0] + pattern(r.address + PAGE, 13)[0]);
    expect(await pager.rpc('log')).toEqual([]);
  });

  it('reads resident pages out with readOut(), on the pager thread and here', async () => {
    const r = await region(3, { missing: 'copy', seed: 6 });
    r.view[PAGE] = 77; // faults, then writes
    const expected = pattern(r.address + PAGE, 6);
    expected[0] = 77;
    expect(new Uint8Array(await pager.rpc('readOut', { address: r.address + PAGE, length: PAGE }))).toEqual(expected);
    const dst = new Uint8Array(PAGE + 16);
    native.readOut(r.address + PAGE + 8, 100, dst, 16);
    expect(dst.subarray(16, 116)).toEqual(expected.subarray(8, 108));
    expect(await pager.rpc('log')).toHaveLength(1); // readOut of resident pages faults nothing
  });

  it('copy() and zeropage() onto present pages return the bytes already there and throw nothing', async () => {
    const r = await region(4, { missing: 'copy', seed: 7 });
    expect(r.view[PAGE]).toBe(pattern(r.address + PAGE, 7)[0]); // page 1 resident
    expect(await pager.rpc('log')).toHaveLength(1);
    // One page, present.
    expect(await pager.rpc('copy', { dst: r.address + PAGE, length: PAGE, seed: 8, flags: 0 })).toBe(PAGE);
    expect(await pager.rpc('zeropage', { dst: r.address + PAGE, length: PAGE, dontWake: false })).toBe(PAGE);
    // Pages 0..2, with page 1 present in the middle: 0 and 2 are filled, 1 is kept.
    expect(await pager.rpc('copy', { dst: r.address, length: 3 * PAGE, seed: 9, flags: 0 })).toBe(PAGE);
    expect(page(r.view, 0)).toEqual(pattern(r.address, 9));
    expect(page(r.view, 1)).toEqual(pattern(r.address + PAGE, 7));
    expect(page(r.view, 2)).toEqual(pattern(r.address + 2 * PAGE, 9));
    expect(await pager.rpc('log')).toEqual([]);
  });

  it('wakes the waiting thread when copy() or zeropage() meets a page that is already present', async () => {
    // The pager installs the page with DONTWAKE, then copies again: EEXIST, and this thread must wake.
    const r = await region(2, { missing: 'copy-twice', seed: 10 });
    expect(page(r.view, 0)).toEqual(pattern(r.address, 10));
    expect(await pager.rpc('log')).toEqual([{ address: r.address, flags: 0, tid, present: PAGE }]);
    await pager.rpc('plan', { plan: { missing: 'zero-twice' } });
    expect(page(r.view, 1).every((b) => b === 0)).toBe(true);
    expect(await pager.rpc('log')).toEqual([{ address: r.address + PAGE, flags: 0, tid, present: PAGE }]);
  });

  it('serves faults the kernel takes inside write(2) and read(2)', async () => {
    const r = await region(4, { missing: 'copy', seed: 11 });
    const file = path.join(os.tmpdir(), `farmem-native-test-${process.pid}`);
    const fd = fs.openSync(file, 'w+');
    try {
      expect(fs.writeSync(fd, r.view)).toBe(4 * PAGE); // copy_from_user faults on each page
      const written = fs.readFileSync(file);
      for (let i = 0; i < 4; i++) {
        expect(new Uint8Array(written.subarray(i * PAGE, (i + 1) * PAGE))).toEqual(pattern(r.address + i * PAGE, 11));
      }
      const reads: Fault[] = await pager.rpc('log');
      expect(reads.map((f) => [f.address - r.address, f.flags, f.tid])).toEqual(
        [0, 1, 2, 3].map((i) => [i * PAGE, 0, tid]),
      );

      const into = await region(2, { missing: 'copy', seed: 12 });
      expect(fs.readSync(fd, into.view, 0, 2 * PAGE, PAGE)).toBe(2 * PAGE); // copy_to_user faults too
      expect(into.view).toEqual(new Uint8Array(written.subarray(PAGE, 3 * PAGE)));
      const writes: Fault[] = await pager.rpc('log');
      expect(writes).toHaveLength(2);
      for (const f of writes) expect(f.flags & FAULT_FLAG_WRITE).toBe(FAULT_FLAG_WRITE);
    } finally {
      fs.closeSync(fd);
      fs.rmSync(file, { force: true });
    }
  });

  it('delivers faults from several threads, more than one batch holds', async () => {
    const small = startPager({ writeProtect: false, batch: 1 });
    await small.ready;
    try {
      const pages = 6;
      const { address } = native.mapCreate(pages * PAGE);
      await small.rpc('register', { address, length: pages * PAGE, wp: false });
      await small.rpc('plan', { plan: { missing: 'copy', seed: 14 } });
      const values = await Promise.all(
        Array.from({ length: pages }, (_, i) => {
          const toucher = new Worker(path.join(FIXTURES, 'native-toucher.cjs'), {
            workerData: { address, offset: i * PAGE + 5 },
          });
          return new Promise<number>((resolve, reject) => {
            toucher.on('message', (m: { type: string; value: number }) => m.type === 'value' && resolve(m.value));
            toucher.once('error', reject);
          });
        }),
      );
      expect(values).toEqual(Array.from({ length: pages }, (_, i) => pattern(address + i * PAGE, 14)[5]));
      const log: Fault[] = await small.rpc('log');
      expect(log.map((f) => f.address).sort((a, b) => a - b)).toEqual(
        Array.from({ length: pages }, (_, i) => address + i * PAGE),
      );
      expect(new Set(log.map((f) => f.tid)).size).toBe(pages);
      expect(log.some((f) => f.tid === tid)).toBe(false);
    } finally {
      await small.rpc('close');
      await small.worker.terminate();
    }
  });

  it('leaves plain anonymous memory after unregister()', async () => {
    const r = await region(2, { missing: 'copy', seed: 13 });
    expect(r.view[0]).toBe(pattern(r.address, 13)[0]);
    await pager.rpc('unregister', { address: r.address, length: 2 * PAGE });
    expect(page(r.view, 1).every((b) => b === 0)).toBe(true);
    expect(await pager.rpc('log')).toHaveLength(1);
  });
});

describe('errors', () => {
  let uffd: UffdHandle;
  let plain: UffdHandle;
  // A Uffd on this thread is fine as long as nothing faults on its regions here.
  beforeAll(() => {
    const onFaults = () => {};
    uffd = new native.Uffd({ userModeOnly: false, writeProtect: true, events: new Float64Array(48), onFaults });
    plain = new native.Uffd({ userModeOnly: false, writeProtect: false, events: new Float64Array(3), onFaults });
  });
  afterAll(() => {
    uffd.close();
    plain.close();
  });

  it('rejects bad arguments with TypeError or RangeError', () => {
    const { address } = native.mapCreate(4 * PAGE);
    const src = new Uint8Array(2 * PAGE);
    expect(caught(() => uffd.copy(address + 1, src, 0, PAGE, 0))).toBeInstanceOf(RangeError);
    expect(caught(() => uffd.copy(address, src, 0, PAGE + 1, 0))).toBeInstanceOf(RangeError);
    expect(caught(() => uffd.copy(address, src, 0, 0, 0))).toBeInstanceOf(RangeError);
    expect(caught(() => uffd.copy(address, src, PAGE + 1, PAGE, 0))).toBeInstanceOf(RangeError);
    expect(caught(() => uffd.copy(address, src, 0, PAGE, 4))).toBeInstanceOf(RangeError);
    expect(caught(() => uffd.copy(-PAGE, src, 0, PAGE, 0))).toBeInstanceOf(RangeError);
    expect(caught(() => uffd.copy(address + 0.5, src, 0, PAGE, 0))).toBeInstanceOf(RangeError);
    expect(caught(() => uffd.copy(String(address) as unknown as number, src, 0, PAGE, 0))).toBeInstanceOf(TypeError);
    expect(caught(() => uffd.copy(address, [1, 2] as unknown as Uint8Array, 0, PAGE, 0))).toBeInstanceOf(TypeError);
    expect(caught(() => uffd.register(address, 3, false))).toBeInstanceOf(RangeError);
    expect(caught(() => uffd.zeropage(address, PAGE, 1 as unknown as boolean))).toBeInstanceOf(TypeError);
    expect(caught(() => native.dropRange(address + 8, PAGE))).toBeInstanceOf(RangeError);
    expect(caught(() => native.dropRange(address, 5 * PAGE))).toBeInstanceOf(RangeError); // past the end
    expect(caught(() => native.readOut(address, 16, new Uint8Array(8), 0))).toBeInstanceOf(RangeError);
    expect(caught(() => native.mapCreate(0))).toBeInstanceOf(RangeError);
    expect(caught(() => native.mapCreate(1.5))).toBeInstanceOf(RangeError);
    expect(caught(() => native.mapCreate('1' as unknown as number))).toBeInstanceOf(TypeError);
    const make = (options: unknown) => () => new native.Uffd(options as never);
    expect(caught(make(undefined))).toBeInstanceOf(TypeError);
    const base = { userModeOnly: false, writeProtect: false, events: new Float64Array(3), onFaults() {} };
    expect(caught(make({ ...base, events: new Float32Array(3) }))).toBeInstanceOf(TypeError);
    expect(caught(make({ ...base, events: new Float64Array(2) }))).toBeInstanceOf(RangeError);
    expect(caught(make({ ...base, onFaults: undefined }))).toBeInstanceOf(TypeError);
    expect(caught(make({ ...base, writeProtect: 'yes' }))).toBeInstanceOf(TypeError);
  });

  it('refuses write protection on a Uffd created without it', () => {
    const { address } = native.mapCreate(PAGE);
    expect(caught(() => plain.register(address, PAGE, true))).toBeInstanceOf(TypeError);
    expect(caught(() => plain.copy(address, new Uint8Array(PAGE), 0, PAGE, COPY_WP))).toBeInstanceOf(TypeError);
    expect(caught(() => plain.writeProtect(address, PAGE, true, false))).toBeInstanceOf(TypeError);
    expect(plain.register(address, PAGE, false) & (1 << 3)).toBe(1 << 3);
    plain.unregister(address, PAGE);
  });

  it('turns a failing ioctl into FARMEM_SYSCALL with errno and syscall', () => {
    const { address } = native.mapCreate(PAGE); // never registered: UFFDIO_COPY answers ENOENT
    const error = caught(() => uffd.copy(address, new Uint8Array(PAGE), 0, PAGE, COPY_DONTWAKE));
    expect(error).toBeInstanceOf(FarmemError);
    expect(error.code).toBe('FARMEM_SYSCALL');
    expect(error.errno).toBe(os.constants.errno.ENOENT);
    expect(error.syscall).toBe('ioctl(UFFDIO_COPY)');
    expect(error.cause.code).toBe('ENOENT');
    expect(error.message).toMatch(/^cannot copy into the 4096 bytes at 0x[0-9a-f]+: ioctl\(UFFDIO_COPY\) failed: No such file or directory \(ENOENT\)$/);
  });

  it('answers EBADF on a closed Uffd, and close() is idempotent', () => {
    const closing = new native.Uffd({
      userModeOnly: false,
      writeProtect: true,
      events: new Float64Array(3),
      onFaults() {},
    });
    expect(closing.fd).toBeGreaterThan(2);
    closing.close();
    closing.close();
    expect(closing.fd).toBe(-1);
    const { address } = native.mapCreate(PAGE);
    for (const call of [
      () => closing.copy(address, new Uint8Array(PAGE), 0, PAGE, 0),
      () => closing.register(address, PAGE, true),
      () => closing.wake(address, PAGE),
    ]) {
      const error = caught(call);
      expect(error).toBeInstanceOf(FarmemError);
      expect(error.code).toBe('FARMEM_SYSCALL');
      expect(error.errno).toBe(os.constants.errno.EBADF);
      expect(error.syscall).toMatch(/^ioctl\(UFFDIO_(COPY|REGISTER|WAKE)\)$/);
      expect(error.cause.code).toBe('EBADF');
      expect(error.message).toMatch(/closed/);
    }
  });
});

describe('mappings across threads', () => {
  it('shares bytes with a worker, detaches on release and unmaps when the last buffer goes', async () => {
    const size = 3 * PAGE + 100; // not a page multiple: byteLength is what was asked
    const { address, buffer } = native.mapCreate(size);
    expect(buffer.byteLength).toBe(size);
    const view = new Uint8Array(buffer);
    view.set([1, 2, 3, 4, 5, 6, 7, 8]);
    const other = startPager({ writeProtect: false });
    await other.ready;
    try {
      expect(await other.rpc('attach', { address })).toEqual({ byteLength: size, first: [1, 2, 3, 4, 5, 6, 7, 8] });
      await other.rpc('attachedWrite', { address, offset: 3 * PAGE + 99, value: 42 });
      expect(view[3 * PAGE + 99]).toBe(42);

      native.mapRelease(address, buffer);
      expect(buffer.byteLength).toBe(0);
      expect(view.length).toBe(0);
      native.mapRelease(address); // again: harmless
      const error = caught(() => native.mapAttach(address));
      expect(error).toBeInstanceOf(FarmemError);
      expect(error.code).toBe('FARMEM_REGION_FREED');
      await expect(other.rpc('attach', { address })).rejects.toMatchObject({ code: 'FARMEM_REGION_FREED' });

      // The worker's buffer still holds the mapping.
      expect(await other.rpc('attachedRead', { address, offset: 3 * PAGE + 99 })).toBe(42);
      await turn();
      expect(isMapped(address)).toBe(true);
      expect(native.dropRange(address, PAGE)).toBe(true);
    } finally {
      await other.rpc('close');
      await other.worker.terminate();
    }
    // The worker's teardown finalized its buffer: nothing holds the mapping any more.
    await turn();
    await turn();
    expect(isMapped(address)).toBe(false);
    expect(native.dropRange(address, PAGE)).toBe(false);
    expect(native.dropRanges(new Float64Array([address, PAGE]), 1)).toBe(0);
    const error = caught(() => native.readOut(address, 1, new Uint8Array(1), 0));
    expect(error.code).toBe('FARMEM_REGION_FREED');
  });

  it('keeps several ArrayBuffers over one mapping in one isolate without aborting, and unmaps after GC', () => {
    const child = spawnSync(process.execPath, ['--expose-gc', path.join(FIXTURES, 'native-buffers.cjs')], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    expectCleanStderr(child.stderr);
    expect(child.signal).toBe(null);
    expect(child.status).toBe(0);
    expect(JSON.parse(child.stdout)).toEqual({ shared: [42, 42], before: true, after: false });
  });
});

describe('teardown with an open Uffd (child processes)', () => {
  function run(scenario: string) {
    const child = spawnSync(process.execPath, [path.join(FIXTURES, 'native-teardown.cjs'), scenario], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    expectCleanStderr(child.stderr);
    expect(child.signal).toBe(null);
    return { status: child.status, out: JSON.parse(child.stdout.trim().split('\n').pop() ?? 'null') };
  }

  it('wakes the faulting main thread when the pager worker calls process.exit() in onFaults', () => {
    expect(run('exit-in-fault')).toEqual({ status: 0, out: { value: 0, code: 0 } });
  });

  it('wakes the faulting main thread when onFaults throws and the worker dies', () => {
    expect(run('throw-in-fault')).toEqual({
      status: 0,
      out: { value: 0, error: 'onFaults failed on purpose', code: 1 },
    });
  });

  it('wakes a faulting worker when the pager worker is terminate()d', () => {
    expect(run('terminate')).toEqual({ status: 0, out: { value: 0, code: 1 } });
  });

  it('exits normally on process.exit() with live regions and open Uffds', () => {
    const { status, out } = run('process-exit');
    expect(status).toBe(7);
    expect(typeof out.value).toBe('number');
  });

  it('exits normally when the main thread ends while a pager worker holds an open Uffd', () => {
    const { status } = run('natural-exit');
    expect(status).toBe(0);
  });
});

describe('unprivileged', () => {
  const root = process.getuid?.() === 0;
  let copy: string;

  // The child runs as nobody, who may not read this checkout: give it a world-readable copy.
  beforeAll(() => {
    if (!root) return;
    copy = fs.mkdtempSync(path.join(os.tmpdir(), 'farmem-native-'));
    const files = [
      'dist/cjs/native.js',
      'dist/cjs/errors.js',
      'build/Release/farmem_native.node',
      'test/fixtures/native-rpc.cjs',
      'test/fixtures/native-pager.cjs',
      'test/fixtures/native-unprivileged.cjs',
    ];
    for (const file of files) {
      fs.mkdirSync(path.join(copy, path.dirname(file)), { recursive: true });
      fs.copyFileSync(path.join(ROOT, file), path.join(copy, file));
    }
    const open = (dir: string) => {
      fs.chmodSync(dir, 0o755);
      for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
        const full = path.join(dir, entry.name);
        if (entry.isDirectory()) open(full);
        else fs.chmodSync(full, 0o644);
      }
    };
    open(copy);
  });

  afterAll(() => {
    if (copy) fs.rmSync(copy, { recursive: true, force: true });
  });

  function parse(child: ReturnType<typeof spawnSync>) {
    expectCleanStderr(String(child.stderr));
    expect(child.signal).toBe(null);
    expect(child.status).toBe(0);
    return JSON.parse(String(child.stdout));
  }

  it.skipIf(!root)('falls back to user-mode-only faults, where a system call on a missing page fails with EFAULT', () => {
    const script = path.join(copy, 'test', 'fixtures', 'native-unprivileged.cjs');
    const out = parse(
      spawnSync(process.execPath, [script, copy], { uid: 65534, gid: 65534, cwd: '/', encoding: 'utf8', timeout: 60_000 }),
    );
    expect(out.uid).toBe(65534);
    expect(out.jsRead).toEqual(out.expected);
    const sysctl = fs.readFileSync('/proc/sys/vm/unprivileged_userfaultfd', 'utf8').trim();
    if (sysctl === '0') {
      expect(out.caps.mode).toBe('user-only');
      expect(out.caps.source).toBe('syscall');
      expect(out.caps.errno).toBe(0);
      expect(out.caps.reason).toMatch(/vm\.unprivileged_userfaultfd=1/);
      expect(out.caps.reason).toMatch(/\/dev\/userfaultfd/);
      expect(out.kernelWrite).toEqual({ code: 'EFAULT' });
      expect(out.faults).toHaveLength(1); // only the JS read reached the pager
    } else {
      expect(out.caps.mode).toBe('kernel');
      expect(out.kernelWrite).toEqual({ bytes: PAGE });
    }
  });

  // In a private mount namespace, a world-accessible device node (on a fresh tmpfs, which allows
  // devices) is bind-mounted over /dev/userfaultfd for the child only; the system's is untouched.
  const tools = ['/usr/bin/unshare', '/usr/bin/setpriv'].every((tool) => fs.existsSync(tool));
  it.skipIf(!root || !tools)('uses /dev/userfaultfd for kernel-mode faults when the user may open it', () => {
    const dev = path.join(copy, 'dev');
    const script = path.join(copy, 'test', 'fixtures', 'native-unprivileged.cjs');
    const shell =
      `mkdir -p ${dev} && mount -t tmpfs -o mode=755 farmem-test ${dev} && ` +
      `mknod ${dev}/userfaultfd c 10 257 && chmod 666 ${dev}/userfaultfd && ` +
      `mount --bind ${dev}/userfaultfd /dev/userfaultfd && ` +
      `exec setpriv --reuid=65534 --regid=65534 --clear-groups ${process.execPath} ${script} ${copy}`;
    const out = parse(
      spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', shell], {
        cwd: '/',
        encoding: 'utf8',
        timeout: 60_000,
      }),
    );
    expect(out.uid).toBe(65534);
    expect(out.caps.mode).toBe('kernel');
    expect(out.caps.source).toBe('dev-userfaultfd');
    expect(out.kernelWrite).toEqual({ bytes: PAGE });
    expect(out.jsRead).toEqual(out.expected);
  });
});

describe('callWithDeadline', () => {
  const TIMED_OUT = Symbol('timed out');

  it('returns what the function returns, and lets its throw through unchanged', () => {
    const native = loadNative();
    expect(native.callWithDeadline(50, TIMED_OUT, (a: number, b: number) => a + b, null, 2, 3)).toBe(5);
    const self = { k: 7, get(this: { k: number }) { return this.k; } };
    expect(native.callWithDeadline(50, TIMED_OUT, self.get, self)).toBe(7);
    expect(() => native.callWithDeadline(50, TIMED_OUT, () => { throw new RangeError('mine'); }, null)).toThrow(RangeError);
  });

  it('interrupts an endless loop and leaves the thread usable, even right after a call with a longer deadline', () => {
    const native = loadNative();
    expect(native.callWithDeadline(2000, TIMED_OUT, () => 1, null)).toBe(1);
    expect(native.callWithDeadline(20, TIMED_OUT, () => { for (;;); }, null)).toBe(TIMED_OUT);
    // No termination is left pending: ordinary JS and further calls run.
    expect([1, 2, 3].map((x) => x * 2)).toEqual([2, 4, 6]);
    expect(native.callWithDeadline(20, TIMED_OUT, () => 'after', null)).toBe('after');
    expect(() => native.callWithDeadline(0, TIMED_OUT, () => 1, null)).toThrow(RangeError);
  });
});
