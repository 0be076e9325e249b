// Whole 2 MiB blocks landed as one transparent huge page (the hugePages option): the addon's moveIn on a
// real userfaultfd, then the pager on a real memory node. Skipped, with the reason, where the kernel lacks
// UFFDIO_MOVE (Linux 6.8) or transparent huge pages.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COPY_DONTWAKE, COPY_WP, capabilities, loadNative, type UffdHandle } from '../lib/native';
import { FIXTURES, MiB, UNHURRIED_BUDGET_MS, caught, farmem, fillPattern } from './helpers';

const { FarMemory, MemoryNode } = farmem;
const PAGE = 4096;
const BLOCK = 2 * MiB;
const caps = capabilities();
const offered = caps.move && (caps.transparentHugepages === 'always' || caps.transparentHugepages === 'madvise');
if (!offered) console.log(`huge-pages tests skipped: UFFDIO_MOVE ${caps.move}, transparent huge pages '${caps.transparentHugepages}'`);
const native = loadNative();

/** pagemap entries of `pages` pages from `address`: [present (bit 63), uffd-wp (bit 57)] per page. */
function pagemap(address: number, pages: number): Array<[boolean, boolean]> {
  const fd = fs.openSync('/proc/self/pagemap', 'r');
  try {
    const entries = Buffer.alloc(8 * pages);
    fs.readSync(fd, entries, 0, entries.length, (address / PAGE) * 8);
    return Array.from({ length: pages }, (_, i) => {
      const high = entries.readUInt32LE(8 * i + 4);
      return [(high & (1 << 31)) !== 0, (high & (1 << 25)) !== 0];
    });
  } finally {
    fs.closeSync(fd);
  }
}

/** AnonHugePages of the mapping that starts at `address`, in bytes. */
function hugeBytesAt(address: number): number {
  const lines = fs.readFileSync('/proc/self/smaps', 'utf8').split('\n');
  const start = lines.findIndex((line) => line.startsWith(`${address.toString(16)}-`));
  expect(start).toBeGreaterThanOrEqual(0);
  for (let i = start + 1; i < lines.length && !/^[0-9a-f]+-/.test(lines[i]); i++) {
    const match = /^AnonHugePages:\s+(\d+) kB/.exec(lines[i]);
    if (match) return Number(match[1]) * 1024;
  }
  return 0;
}

describe.skipIf(caps.transparentHugepages !== 'always' && caps.transparentHugepages !== 'madvise')('storageCreate', () => {
  /** AnonHugePages of this process, in bytes. */
  const hugeBytes = () => Number(/AnonHugePages:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/smaps_rollup', 'utf8'))![1]) * 1024;

  it('gives a memory node zeroed storage that huge pages back, and checks its size', () => {
    const storage = native.storageCreate(4 * MiB + 100);
    expect(storage.byteLength).toBe(4 * MiB + 100);
    const bytes = new Uint8Array(storage);
    const before = hugeBytes();
    bytes.fill(0xa5, 0, 4 * MiB);
    // Aligned to 2 MiB, so its first 4 MiB are two huge pages. First in this file (its own process), so
    // no other mapping of it gains or loses a huge page meanwhile.
    expect(hugeBytes() - before).toBeGreaterThanOrEqual(4 * MiB);
    expect(bytes[4 * MiB - 1]).toBe(0xa5);
    expect(bytes.subarray(4 * MiB).every((b) => b === 0)).toBe(true);
    expect(caught(() => native.storageCreate(0))).toBeInstanceOf(RangeError);
  });
});

describe.skipIf(!offered)('moveIn', () => {
  // Served by nobody: these tests never touch a missing page of the mapping, and never write a landed one.
  let mapping: { address: number; buffer: ArrayBuffer };
  let uffd: UffdHandle;
  const data = Buffer.alloc(BLOCK);
  fillPattern(data, 7);

  beforeAll(() => {
    mapping = native.mapCreate(8 * MiB);
    uffd = new native.Uffd({ userModeOnly: false, writeProtect: true, events: new Float64Array(3 * 64), onFaults: () => {} });
    uffd.register(mapping.address, 8 * MiB, true);
  });

  afterAll(() => {
    uffd?.close();
    native.mapRelease(mapping.address, mapping.buffer);
  });

  it('maps regions of 2 MiB or more on a 2 MiB boundary', () => {
    expect(mapping.address % BLOCK).toBe(0);
    const other = native.mapCreate(2 * MiB + PAGE);
    expect(other.address % BLOCK).toBe(0);
    native.mapRelease(other.address, other.buffer);
  });

  it('lands 2 MiB as one huge page, every page present and write-protected', () => {
    const written = new Uint8Array(512).fill(9);
    expect(uffd.moveIn(mapping.address, data, 0, BLOCK, written)).toBe(BLOCK);
    expect(written.every((w) => w === 0)).toBe(true);
    expect(Buffer.from(mapping.buffer, 0, BLOCK).equals(data)).toBe(true);
    const entries = pagemap(mapping.address, 512);
    expect(entries.every(([present, wp]) => present && wp)).toBe(true);
    expect(hugeBytesAt(mapping.address)).toBeGreaterThanOrEqual(BLOCK);
    expect(native.dropRange(mapping.address, BLOCK)).toBe(true);
    expect(pagemap(mapping.address, 512).some(([present]) => present)).toBe(false);
  });

  it('reports a page written between the move and the write protection', () => {
    const written = new Uint8Array(512);
    const at = 3 * PAGE + 5;
    native.setMoveWindowWriteForTest(at);
    expect(uffd.moveIn(mapping.address + BLOCK, data, 0, BLOCK, written)).toBe(BLOCK);
    expect([...written.keys()].filter((i) => written[i] === 1)).toEqual([3]);
    const landed = new Uint8Array(mapping.buffer, BLOCK, BLOCK);
    expect(landed[at]).toBe(data[at] ^ 0xff);
    // The hook fires once.
    native.dropRange(mapping.address + BLOCK, BLOCK);
    expect(uffd.moveIn(mapping.address + BLOCK, data, 0, BLOCK, written)).toBe(BLOCK);
    expect(written.every((w) => w === 0)).toBe(true);
    native.dropRange(mapping.address + BLOCK, BLOCK);
  });

  it('refuses a destination that already holds a page, and loses nothing', () => {
    const page = Buffer.alloc(PAGE, 0x5a);
    const dst = mapping.address + 2 * BLOCK;
    uffd.copy(dst + 10 * PAGE, page, 0, PAGE, 0);
    const error = caught(() => uffd.moveIn(dst, data, 0, BLOCK, new Uint8Array(512)));
    expect(error.code).toBe('FARMEM_SYSCALL');
    expect(error.errno).toBe(17); // EEXIST
    expect(error.message).toMatch(/already holds pages/);
    expect(Buffer.from(mapping.buffer, 2 * BLOCK + 10 * PAGE, PAGE).equals(page)).toBe(true);
    native.dropRange(dst, BLOCK);
  });

  it('checks its arguments', () => {
    const written = new Uint8Array(512);
    expect(caught(() => uffd.moveIn(mapping.address, Buffer.alloc(2 * BLOCK), 0, 2 * BLOCK, new Uint8Array(1024)))).toBeInstanceOf(RangeError);
    expect(caught(() => uffd.moveIn(mapping.address, data, 0, BLOCK, new Uint8Array(511)))).toBeInstanceOf(RangeError);
    expect(caught(() => uffd.moveIn(mapping.address + 1, data, 0, PAGE, written))).toBeInstanceOf(RangeError);
    expect(caught(() => uffd.moveIn(mapping.address, data, BLOCK - PAGE, 2 * PAGE, written))).toBeInstanceOf(RangeError);
    expect(pagemap(mapping.address, 512).some(([present]) => present)).toBe(false);
  });

  it('lands less than a block, aligned or not, page by page', () => {
    const written = new Uint8Array(512);
    const dst = mapping.address + 3 * BLOCK + 7 * PAGE;
    expect(uffd.moveIn(dst, data, PAGE, 16 * PAGE, written)).toBe(16 * PAGE);
    expect(Buffer.from(mapping.buffer, 3 * BLOCK + 7 * PAGE, 16 * PAGE).equals(data.subarray(PAGE, 17 * PAGE))).toBe(true);
    expect(pagemap(dst, 16).every(([present, wp]) => present && wp)).toBe(true);
    native.dropRange(dst, 16 * PAGE);
  });

  it('protects and compares the pages of a move the kernel stopped part way, counted or not', () => {
    const dst = mapping.address + 2 * BLOCK;
    for (const counted of [true, false]) {
      const written = new Uint8Array(512).fill(9);
      // The move takes 7 pages and stops, reporting them or (as seen on Linux 6.18) nothing; a racing
      // write hits one of them before the protection.
      native.setPartialMoveForTest(7 * PAGE, counted);
      native.setMoveWindowWriteForTest(4 * PAGE + 1);
      try {
        const moved = uffd.moveIn(dst, data, 0, BLOCK, written);
        expect(moved).toBe(counted ? 7 * PAGE : 0);
        const entries = pagemap(dst, 512);
        expect(entries.slice(0, 7).every(([present, wp]) => present && wp)).toBe(true);
        expect(entries.slice(7).some(([present]) => present)).toBe(false);
        // Every entry set: 1 for the page written, 0 for the others, mapped or not.
        expect([...written.keys()].filter((i) => written[i] !== 0)).toEqual([4]);
        expect(written[4]).toBe(1);
        // The caller copies the rest; the copy steps over the pages already there.
        expect(uffd.copy(dst + moved, data, moved, BLOCK - moved, COPY_WP | COPY_DONTWAKE)).toBe(7 * PAGE - moved);
        expect(pagemap(dst, 512).every(([present, wp]) => present && wp)).toBe(true);
        const want = Buffer.from(data);
        want[4 * PAGE + 1] ^= 0xff;
        expect(Buffer.from(mapping.buffer, 2 * BLOCK, BLOCK).equals(want)).toBe(true);
      } finally {
        native.setPartialMoveForTest(-1, true);
        native.setMoveWindowWriteForTest(-1);
        native.dropRange(dst, BLOCK);
      }
    }
  });

  it('zeroBlockIn maps an aligned block of zeros as one writable huge page', () => {
    const dst = mapping.address + 2 * BLOCK;
    expect(uffd.zeroBlockIn(dst)).toBe(BLOCK);
    expect(pagemap(dst, 512).every(([present, wp]) => present && !wp)).toBe(true);
    expect(hugeBytesAt(mapping.address)).toBeGreaterThanOrEqual(BLOCK);
    const landed = new Uint8Array(mapping.buffer, 2 * BLOCK, BLOCK);
    expect(landed.every((b) => b === 0)).toBe(true);
    // Writable: a write-protected page would fault here, and nobody serves this mapping's faults.
    landed[BLOCK - 1] = 7;
    expect(landed[BLOCK - 1]).toBe(7);
    native.dropRange(dst, BLOCK);
  });

  it('zeroBlockIn leaves the zeros a move stopped part way mapped, writable, counted or not', () => {
    const dst = mapping.address + 2 * BLOCK;
    for (const counted of [true, false]) {
      native.setPartialMoveForTest(5 * PAGE, counted);
      try {
        expect(uffd.zeroBlockIn(dst)).toBe(counted ? 5 * PAGE : 0);
        const entries = pagemap(dst, 512);
        expect(entries.slice(0, 5).every(([present, wp]) => present && !wp)).toBe(true);
        expect(entries.slice(5).some(([present]) => present)).toBe(false);
        // The caller copies zeros over the rest, stepping over the pages already there.
        expect(uffd.copy(dst, Buffer.alloc(BLOCK), 0, BLOCK, 0)).toBe(5 * PAGE);
        expect(new Uint8Array(mapping.buffer, 2 * BLOCK, BLOCK).every((b) => b === 0)).toBe(true);
      } finally {
        native.setPartialMoveForTest(-1, true);
        native.dropRange(dst, BLOCK);
      }
    }
  });

  it('zeroBlockIn refuses an unaligned block, or one that holds a page, and loses nothing', () => {
    expect(caught(() => uffd.zeroBlockIn(mapping.address + PAGE))).toBeInstanceOf(RangeError);
    const page = Buffer.alloc(PAGE, 0x5a);
    const dst = mapping.address + 2 * BLOCK;
    uffd.copy(dst + 10 * PAGE, page, 0, PAGE, 0);
    const error = caught(() => uffd.zeroBlockIn(dst));
    expect(error.code).toBe('FARMEM_SYSCALL');
    expect(error.errno).toBe(17); // EEXIST
    expect(Buffer.from(mapping.buffer, 2 * BLOCK + 10 * PAGE, PAGE).equals(page)).toBe(true);
    expect(pagemap(dst, 512).filter(([present]) => present).length).toBe(1);
    native.dropRange(dst, BLOCK);
  });
});

describe.skipIf(!offered)('regions with hugePages', () => {
  let node: InstanceType<typeof MemoryNode>;

  beforeAll(async () => {
    node = await MemoryNode.start({ host: '127.0.0.1', port: 0, capacity: 512 * MiB });
  });

  afterAll(async () => {
    await node?.stop();
  });

  /** A 64 MiB region, every page written and then evicted, under a 16 MiB budget (room for two blocks in flight). */
  async function remoteRegion(options: Record<string, unknown> = {}) {
    const fm = await FarMemory.open({ nodes: [node.address], localBudget: 16 * MiB, ...options });
    const region = await fm.allocate(64 * MiB, { prefetch: 'readahead' });
    const expected = Buffer.alloc(64 * MiB);
    fillPattern(expected, 11);
    new Uint8Array(region.buffer).set(expected);
    await region.evict();
    return { fm, region, expected };
  }

  /** A region of `size`, every page written and then evicted, whose policy asks for the next `ahead` pages. */
  async function nextPageRegion(options: Record<string, unknown>, size: number, ahead: number, seed: number) {
    const fm = await FarMemory.open({ nodes: [node.address], ...options });
    const region = await fm.allocate(size, {
      prefetch: { module: path.join(FIXTURES, 'policies', 'next-page.mjs'), options: { ahead }, timeBudgetMs: UNHURRIED_BUDGET_MS },
    });
    const expected = Buffer.alloc(size);
    fillPattern(expected, seed);
    const bytes = new Uint8Array(region.buffer);
    bytes.set(expected);
    await region.evict();
    return { fm, region, expected, bytes };
  }

  it('lands whole blocks of a scan as huge pages, and every byte is right, pass after pass', async () => {
    const { fm, region, expected } = await remoteRegion();
    try {
      expect(fm.hugePages).toBe(true);
      const bytes = Buffer.from(region.buffer);
      for (let pass = 0; pass < 3; pass++) expect(bytes.equals(expected)).toBe(true);
      const stats = region.stats();
      expect(stats.hugeBlocks).toBeGreaterThan(0);
      expect(stats.residentBytes).toBeLessThanOrEqual(16 * MiB);
    } finally {
      await region.free();
      await fm.close();
    }
  });

  it('keeps writes to pages that landed in a huge page, through eviction', async () => {
    const { fm, region, expected } = await remoteRegion();
    try {
      const bytes = Buffer.from(region.buffer);
      expect(bytes.subarray(0, 16 * MiB).equals(expected.subarray(0, 16 * MiB))).toBe(true);
      expect(region.stats().hugeBlocks).toBeGreaterThan(0);
      // One byte in every 64th page of the first 16 MiB, many of them in blocks that landed whole.
      for (let at = 100; at < 16 * MiB; at += 64 * PAGE) {
        bytes[at] ^= 0x55;
        expected[at] ^= 0x55;
      }
      await region.evict();
      expect(bytes.equals(expected)).toBe(true);
      expect(region.stats().writebacks).toBeGreaterThan(0);
    } finally {
      await region.free();
      await fm.close();
    }
  });

  it('keeps a write that lands between a block’s move and its write protection', async () => {
    const { fm, region, expected } = await remoteRegion();
    try {
      const at = 5 * PAGE + 123;
      const bytes = Buffer.from(region.buffer);
      const before = region.stats().writebacks;
      // The first block to land gets one byte flipped between its move and its protection, as a racing
      // writer could do; reading the region lands blocks.
      native.setMoveWindowWriteForTest(at);
      Buffer.from(bytes);
      native.setMoveWindowWriteForTest(-1);
      expect(region.stats().hugeBlocks).toBeGreaterThan(0);
      // Written, so dirty: it must go back to the node before its page is dropped (now, or earlier in the
      // pass), and come back from there. Nothing else was written.
      await region.evict();
      expect(region.stats().writebacks - before).toBe(1);
      const after = Buffer.from(bytes);
      const differ = [...Array(after.length / BLOCK).keys()].filter(
        (b) => !after.subarray(b * BLOCK, (b + 1) * BLOCK).equals(expected.subarray(b * BLOCK, (b + 1) * BLOCK)),
      );
      expect(differ).toHaveLength(1);
      const flipped = differ[0] * BLOCK + at;
      expect(after[flipped]).toBe(expected[flipped] ^ 0xff);
      expected[flipped] ^= 0xff;
      expect(after.equals(expected)).toBe(true);
    } finally {
      native.setMoveWindowWriteForTest(-1);
      await region.free();
      await fm.close();
    }
  });

  it('keeps writes to a block whose move the kernel stopped part way, counted or not', async () => {
    for (const counted of [true, false]) {
      const { fm, region, expected, bytes } = await nextPageRegion({ localBudget: 16 * MiB }, 8 * MiB, 511, 13);
      try {
        const before = region.stats();
        // Block 1 lands as one move (its first page's answer asks for the rest), which stops after 7 pages.
        native.setPartialMoveForTest(7 * PAGE, counted);
        expect(bytes[BLOCK + 7]).toBe(expected[BLOCK + 7]);
        native.setPartialMoveForTest(-1, true);
        const after = region.stats();
        expect(after.remoteFetches - before.remoteFetches).toBe(1);
        expect(after.prefetched - before.prefetched).toBe(511);
        expect(after.hugeBlocks).toBe(before.hugeBlocks);
        expect(Buffer.from(region.buffer, BLOCK, BLOCK).equals(expected.subarray(BLOCK, 2 * BLOCK))).toBe(true);
        // A page the move took and one the copy after it brought: protected both, so both writes fault and
        // go back to the node. A page left writable would count as clean, and its write be dropped.
        for (const at of [BLOCK + 3 * PAGE + 1, BLOCK + 100 * PAGE + 1]) {
          bytes[at] ^= 0x55;
          expected[at] ^= 0x55;
        }
        await region.evict();
        expect(region.stats().writebacks - after.writebacks).toBe(2);
        expect(Buffer.from(region.buffer).equals(expected)).toBe(true);
      } finally {
        native.setPartialMoveForTest(-1, true);
        await region.free();
        await fm.close();
      }
    }
  });

  it('keeps every write a second thread makes while scans land and evict whole blocks', async () => {
    const fm = await FarMemory.open({ nodes: [node.address], localBudget: 16 * MiB });
    const region = await fm.allocate(64 * MiB, { prefetch: 'readahead' });
    try {
      const words = new Uint32Array(region.buffer);
      for (let i = 0; i < words.length; i++) words[i] = i;
      await region.evict();
      // The worker writes random odd words (lane 1 of 2) and records them over the initial values.
      const expected = new Uint32Array(new SharedArrayBuffer(words.length * 2));
      for (let slot = 0; slot < expected.length; slot++) expected[slot] = 2 * slot + 1;
      const worker = new Worker(path.join(FIXTURES, 'random-writer.cjs'), {
        workerData: { handle: region.handle(), expected: expected.buffer, lane: 1, lanes: 2, writes: 20_000, seed: 99 },
      });
      const done = new Promise((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
      });
      let scans = 0;
      let finished = false;
      void done.then(() => (finished = true));
      while (!finished || scans < 3) {
        let even = 0;
        for (let i = 0; i < words.length; i += 2) even += words[i] === i ? 0 : 1;
        expect(even).toBe(0);
        scans++;
        await new Promise((r) => setImmediate(r));
      }
      await done;
      await worker.terminate();
      expect(region.stats().hugeBlocks).toBeGreaterThan(0);
      await region.evict();
      let bad = 0;
      for (let i = 0; i < words.length; i++) if (words[i] !== (i % 2 === 0 ? i : expected[(i - 1) / 2])) bad++;
      expect(bad).toBe(0);
    } finally {
      await region.free();
      await fm.close();
    }
  });

  it('lands the block a read fault starts whole, when the policy asks for the rest of it', async () => {
    const { fm, region, expected, bytes } = await nextPageRegion({ localBudget: 16 * MiB }, 8 * MiB, 511, 5);
    try {
      const before = region.stats();
      // Block 1's first page: the answer asks for the other 511, so the reader waits for all 512 and they
      // land as one move. Its first read after that faults on nothing.
      expect(bytes[BLOCK + 7]).toBe(expected[BLOCK + 7]);
      const after = region.stats();
      expect(after.hugeBlocks - before.hugeBlocks).toBe(1);
      expect(after.remoteFetches - before.remoteFetches).toBe(1);
      expect(after.prefetched - before.prefetched).toBe(511);
      expect(Buffer.from(region.buffer, BLOCK, BLOCK).equals(expected.subarray(BLOCK, 2 * BLOCK))).toBe(true);
      expect(region.stats().faults).toBe(after.faults);
      // Mid-block, the answer leaves the block's head out: that page comes alone, its followers page by page.
      const mid = 2 * BLOCK + 100 * PAGE;
      expect(bytes[mid]).toBe(expected[mid]);
      // A write to a block all remote (block 0) is not kept waiting for the block: it could not stay
      // whole. A store alone, since `^=` would read first, and that read may bring the block.
      expected[3] = expected[3] ^ 0x5a;
      bytes[3] = expected[3];
      await region.evict();
      expect(region.stats().hugeBlocks).toBe(after.hugeBlocks);
      expect(Buffer.from(region.buffer).equals(expected)).toBe(true);
    } finally {
      await region.free();
      await fm.close();
    }
  });

  it('keeps a block it has no room for whole for a later read, unless writes split the region’s blocks', async () => {
    // Room for 768 pages of prefetch and one assembly: a read fault's block takes it, and the next block
    // the answer asks for finds none.
    const { fm, region, expected, bytes } = await nextPageRegion({ localBudget: 32 * MiB, maxPrefetchFraction: 768 / 8192 }, 12 * BLOCK, 3 * 512 - 1, 9);
    try {
      /** Reads a byte of every page of blocks [first, first + count); returns the whole blocks that landed. */
      const readBlocks = (first: number, count: number) => {
        const before = region.stats().hugeBlocks;
        for (let at = first * BLOCK; at < (first + count) * BLOCK; at += PAGE) expect(bytes[at + 1]).toBe(expected[at + 1]);
        return region.stats().hugeBlocks - before;
      };
      // Blocks 0–2, as a reader sees them. The answer to block 0's first fault asks for blocks 1 and 2 too,
      // with no room for them: they wait, all remote, and each comes whole with its own first read fault.
      expect(readBlocks(0, 3)).toBe(3);
      // Blocks 3–8 land whole and a write splits each: the region's blocks do not stay whole.
      for (let block = 3; block < 9; block++) {
        expect(readBlocks(block, 1)).toBe(1);
        expected[block * BLOCK + 5 * PAGE] ^= 0x5a;
        bytes[block * BLOCK + 5 * PAGE] = expected[block * BLOCK + 5 * PAGE];
      }
      // Now the block with no room is fetched page by page, as far as the room goes: block 10 cannot land whole.
      expect(readBlocks(9, 3)).toBeLessThan(3);
      await region.evict();
      expect(Buffer.from(region.buffer).equals(expected)).toBe(true);
    } finally {
      await region.free();
      await fm.close();
    }
  });

  it('loses nothing when connections are cut while whole blocks are received in place', async () => {
    // The proxy cuts each of its first 6 connections after 1.5 MiB of replies: inside a block's pages,
    // which the socket reads straight into the block's buffer. The rest is asked for again.
    const proxy = spawn(process.execPath, [path.join(FIXTURES, 'cutting-proxy.cjs'), String(node.port), String(1.5 * MiB), '6'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      const proxyPort = await new Promise<number>((resolve, reject) => {
        proxy.stdout!.once('data', (d) => resolve(JSON.parse(String(d)).port));
        proxy.once('exit', (code) => reject(new Error(`cutting-proxy exited with ${code}`)));
      });
      const fm = await FarMemory.open({ nodes: [`127.0.0.1:${proxyPort}`], localBudget: 16 * MiB, reconnectInitialMs: 10 });
      try {
        const region = await fm.allocate(32 * MiB, { prefetch: 'readahead' });
        const expected = Buffer.alloc(32 * MiB);
        fillPattern(expected, 13);
        new Uint8Array(region.buffer).set(expected);
        await region.evict();
        for (let pass = 0; pass < 2; pass++) {
          expect(Buffer.from(region.buffer).equals(expected)).toBe(true);
          await region.evict();
        }
        expect(region.stats().hugeBlocks).toBeGreaterThan(0);
        await region.free();
      } finally {
        await fm.close();
      }
    } finally {
      proxy.kill('SIGKILL');
    }
  });

  it('maps the never-written blocks a sequential writer fills as zero huge pages, and writes every page back', async () => {
    // remoteRegion fills all 64 MiB in one pass from the start: every block after the first is ahead of it.
    const { fm, region, expected } = await remoteRegion();
    try {
      const filled = region.stats();
      expect(filled.zeroBlocks).toBeGreaterThan(0);
      expect(filled.zeroFills).toBe(64 * MiB / PAGE);
      // Dirty from the start: every page went to the node (one may go twice, if the writer came back to it).
      expect(filled.writebacks).toBeGreaterThanOrEqual(64 * MiB / PAGE);
      expect(Buffer.from(region.buffer).equals(expected)).toBe(true);
    } finally {
      await region.free();
      await fm.close();
    }
  });

  it('lands every page on its own with hugePages: false', async () => {
    const { fm, region, expected } = await remoteRegion({ hugePages: false });
    try {
      expect(fm.hugePages).toBe(false);
      expect(region.stats().zeroBlocks).toBe(0);
      expect(Buffer.from(region.buffer).equals(expected)).toBe(true);
      expect(region.stats().hugeBlocks).toBe(0);
    } finally {
      await region.free();
      await fm.close();
    }
  });
});

describe('the hugePages option', () => {
  it('refuses what is not true, false or auto', async () => {
    const error = await FarMemory.open({ nodes: ['127.0.0.1:1'], hugePages: 'yes' as never }).catch((e: unknown) => e);
    expect((error as { code: string }).code).toBe('FARMEM_INVALID_OPTION');
    expect((error as Error).message).toMatch(/hugePages: expected true, false or 'auto'/);
  });

  it('says whether the kernel offers it', () => {
    expect(['always', 'madvise', 'never', '']).toContain(caps.transparentHugepages);
  });
});
