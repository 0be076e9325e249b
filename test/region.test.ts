// FarMemory and Region through the public API: real userfaultfd, real memory nodes on loopback.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MiB, farmem } from './helpers';

const { FarMemory, MemoryNode, FarmemError } = farmem;
type MemoryNode = InstanceType<typeof MemoryNode>;
type FarMemory = InstanceType<typeof FarMemory>;

const TOKEN = 'region-test-token';
let node: MemoryNode;
let fm: FarMemory;

beforeAll(async () => {
  node = await MemoryNode.start({ host: '127.0.0.1', port: 0, capacity: 256 * MiB, token: TOKEN });
  fm = await FarMemory.open({ nodes: [`127.0.0.1:${node.port}`], localBudget: 4 * MiB, token: TOKEN });
});

afterAll(async () => {
  await fm?.close();
  await node?.stop();
});

describe('Region', () => {
  it('is an ArrayBuffer of exactly the size asked for', async () => {
    const region = await fm.allocate(10_000, { prefetch: 'none' });
    expect(region.buffer).toBeInstanceOf(ArrayBuffer);
    expect(region.buffer.byteLength).toBe(10_000);
    expect(region.size).toBe(10_000);
    await region.free();
  });

  it('serves never-written pages as zeros without the network', async () => {
    const region = await fm.allocate(2 * MiB, { prefetch: 'none' });
    const bytes = new Uint8Array(region.buffer);
    let sum = 0;
    for (let i = 0; i < bytes.length; i += 512) sum += bytes[i];
    expect(sum).toBe(0);
    const s = region.stats();
    expect(s.zeroFills).toBe(512);
    expect(s.remoteFetches).toBe(0);
    expect(s.bytesFetched).toBe(0);
    // Zero pages take no frame of the budget.
    expect(s.residentBytes).toBe(0);
    await region.free();
  });

  it('keeps data across eviction: written, evicted, fetched back', async () => {
    const region = await fm.allocate(1 * MiB, { prefetch: 'none' });
    const words = new Uint32Array(region.buffer);
    for (let i = 0; i < words.length; i++) words[i] = i * 2654435761;
    expect(region.stats().dirtyBytes).toBe(1 * MiB);
    await region.evict();
    const afterEvict = region.stats();
    expect(afterEvict.residentBytes).toBe(0);
    expect(afterEvict.writebacks).toBe(256);
    for (let i = 0; i < words.length; i++) {
      if (words[i] !== (i * 2654435761) >>> 0) throw new Error(`word ${i}: ${words[i]}`);
    }
    const s = region.stats();
    expect(s.remoteFetches).toBe(256);
    expect(s.faultLatencyUs.count).toBe(256);
    expect(s.faultLatencyUs.p50).toBeGreaterThan(0);
    expect(s.faultLatencyUs.p99).toBeGreaterThanOrEqual(s.faultLatencyUs.p50);
    await region.free();
  });

  it('write-protects scattered dirty pages for their write-back in few calls, never across a zero page', async () => {
    const region = await fm.allocate(1 * MiB, { prefetch: 'none' });
    const words = new Uint32Array(region.buffer);
    const PAGE_WORDS = 1024;
    const written: number[] = [];
    // Pages 0, 4, ..., 124: nothing is mapped between them, so one call protects them all (and page 128).
    for (let p = 0; p < 128; p += 4) written.push(p);
    // Pages 128, 132, ..., 252, each with a zero page read two pages on: each needs a call of its own,
    // since a zero page may have been written privately by another thread.
    for (let p = 128; p < 256; p += 4) {
      written.push(p);
      expect(words[(p + 2) * PAGE_WORDS]).toBe(0);
    }
    for (const p of written) words[p * PAGE_WORDS] = p + 1;
    const before = region.stats();
    await region.flush();
    const after = region.stats();
    expect(after.dirtyBytes).toBe(0);
    expect(after.writebacks - before.writebacks).toBe(64);
    expect(after.protectCalls - before.protectCalls).toBe(1 + 31);
    // Protected, in a span and alone: the next write to each faults.
    words[64 * PAGE_WORDS + 1] = 7;
    words[200 * PAGE_WORDS + 1] = 8;
    expect(region.stats().writeFaults - after.writeFaults).toBe(2);
    await region.evict();
    for (const p of written) expect(words[p * PAGE_WORDS]).toBe(p + 1);
    expect([words[64 * PAGE_WORDS + 1], words[200 * PAGE_WORDS + 1], words[130 * PAGE_WORDS]]).toEqual([7, 8, 0]);
    await region.free();
  });

  it('installs fetched pages write-protected: the first write is seen, then the page is dirty', async () => {
    const region = await fm.allocate(64 * 1024, { prefetch: 'none' });
    const bytes = new Uint8Array(region.buffer);
    bytes.fill(7);
    await region.evict();
    expect(bytes[100]).toBe(7); // read: fetched clean
    expect(region.stats().dirtyBytes).toBe(0);
    const before = region.stats().writeFaults;
    bytes[100] = 9;
    expect(region.stats().writeFaults).toBe(before + 1);
    expect(region.stats().dirtyBytes).toBe(4096);
    await region.flush();
    expect(region.stats().dirtyBytes).toBe(0);
    await region.evict();
    expect(bytes[100]).toBe(9);
    expect(bytes[101]).toBe(7);
    await region.free();
  });

  it('stays within the local budget when the region is larger', async () => {
    const region = await fm.allocate(16 * MiB, { prefetch: 'readahead' });
    const words = new Uint32Array(region.buffer);
    let peak = 0;
    for (let i = 0; i < words.length; i += 1024) {
      words[i] = i;
      if (i % (64 * 1024) === 0) peak = Math.max(peak, region.stats().residentBytes + region.stats().inflightBytes);
    }
    const s = region.stats();
    expect(s.evictions).toBeGreaterThan(0);
    expect(s.writebacks).toBeGreaterThan(0);
    expect(peak).toBeLessThanOrEqual(4 * MiB);
    for (let i = 0; i < words.length; i += 1024) {
      if (words[i] !== i) throw new Error(`word ${i}: ${words[i]}`);
    }
    await region.free();
  });

  it('keeps pages a fault wanted back soon over pages that stayed away long (refault gaps)', async () => {
    // 64 hot pages read every round, 32 cold pages per round from a pool that takes ~125 rounds to
    // come round again. Reads of mapped pages are invisible to the pager: in fill order every hot page
    // would leave once per trip of the queue (1,024 frames) and come straight back, 6,848 fetches over
    // the second half, 448 more than its cold touches (measured before refault gaps were used).
    // Refetched within a round, hot pages now stay while cold ones go (6,374 when written).
    const region = await fm.allocate(16 * MiB, { prefetch: 'none' });
    const bytes = new Uint8Array(region.buffer);
    const PAGE = 4096;
    const pages = bytes.length / PAGE;
    for (let p = 0; p < pages; p++) bytes[p * PAGE] = p & 0xff;
    await region.evict();
    const HOT = 64;
    const COLD_PER_ROUND = 32;
    let cold = HOT;
    let sum = 0;
    const rounds = (n: number): void => {
      for (let r = 0; r < n; r++) {
        for (let h = 0; h < HOT; h++) sum += bytes[h * PAGE];
        for (let c = 0; c < COLD_PER_ROUND; c++) {
          sum += bytes[cold * PAGE];
          cold = cold + 1 === pages ? HOT : cold + 1;
        }
      }
    };
    rounds(200);
    const before = region.stats().remoteFetches;
    rounds(200);
    const fetches = region.stats().remoteFetches - before;
    // Only what the 1,024 frames hold can spare a cold touch its fetch.
    expect(fetches).toBeGreaterThan(200 * COLD_PER_ROUND - 1024);
    expect(fetches).toBeLessThan(200 * COLD_PER_ROUND + 2 * HOT);
    expect(sum).toBeGreaterThan(0);
    await region.free();
  });

  it('prefetches sequential scans with readahead and not with none', async () => {
    const scan = async (prefetch: string) => {
      const region = await fm.allocate(2 * MiB, { prefetch });
      new Uint8Array(region.buffer).fill(1);
      await region.evict();
      const bytes = new Uint8Array(region.buffer);
      let sum = 0;
      for (let i = 0; i < bytes.length; i += 4096) sum += bytes[i];
      expect(sum).toBe(512);
      const s = region.stats();
      await region.free();
      return s;
    };
    const none = await scan('none');
    const readahead = await scan('readahead');
    expect(none.prefetched).toBe(0);
    expect(none.remoteFetches).toBe(512);
    expect(readahead.prefetched).toBeGreaterThan(256);
    expect(readahead.remoteFetches).toBeLessThan(none.remoteFetches / 4);
  });

  it('fills never-written pages ahead of a sequential writer, without the network', async () => {
    const region = await fm.allocate(8 * MiB, { prefetch: 'readahead' });
    const words = new Uint32Array(region.buffer);
    for (let i = 0; i < words.length; i++) words[i] = i + 1;
    const s = region.stats();
    expect(s.zeroFills).toBe(2048);
    expect(s.faults).toBeLessThan(2048 / 8);
    expect(s.bytesFetched).toBe(0);
    await region.evict();
    for (let i = 0; i < words.length; i++) {
      if (words[i] !== i + 1) throw new Error(`word ${i}: ${words[i]}`);
    }
    await region.free();
  });

  it('detaches the buffer on free and refuses further use', async () => {
    const region = await fm.allocate(1 * MiB);
    const view = new Uint8Array(region.buffer);
    view[0] = 1;
    await region.free();
    expect(region.buffer.byteLength).toBe(0);
    expect(view.length).toBe(0);
    await expect(region.flush()).rejects.toMatchObject({ code: 'FARMEM_REGION_FREED' });
    await region.free(); // idempotent
  });

  it('returns node capacity on free', async () => {
    const before = await node.stats();
    const region = await fm.allocate(8 * MiB);
    const during = await node.stats();
    expect(during.reservedBytes - before.reservedBytes).toBe(8 * MiB);
    await region.free();
    const after = await node.stats();
    expect(after.reservedBytes).toBe(before.reservedBytes);
  });

  it('sums region counters in fm.stats()', async () => {
    const region = await fm.allocate(64 * 1024);
    new Uint8Array(region.buffer)[0] = 1;
    const s = fm.stats();
    expect(s.regions).toBeGreaterThanOrEqual(1);
    expect(s.localBudget).toBe(4 * MiB);
    expect(s.faults).toBeGreaterThan(0);
    await region.free();
  });
});

describe('bad input', () => {
  it('rejects bad options with FARMEM_INVALID_OPTION and a message saying what is expected', async () => {
    const nodes = [`127.0.0.1:${node.port}`];
    await expect(FarMemory.open({ nodes: [] })).rejects.toMatchObject({ code: 'FARMEM_INVALID_OPTION' });
    await expect(FarMemory.open({ nodes: ['nohost'] })).rejects.toThrow(/host:port/);
    await expect(FarMemory.open({ nodes, localBudget: '12XB' })).rejects.toThrow(/256MiB|size/);
    await expect(FarMemory.open({ nodes, localBudget: 4096 })).rejects.toThrow(/at least/);
    await expect(FarMemory.open({ nodes, localBuget: '1MiB' } as never)).rejects.toThrow(/did you mean 'localBudget'/);
    await expect(FarMemory.open({ nodes, prefetch: 'psychic' })).rejects.toThrow(/readahead/);
    await expect(FarMemory.open({ nodes, evictHighWater: 0.5, evictLowWater: 0.9 })).rejects.toMatchObject({ code: 'FARMEM_INVALID_OPTION' });
    await expect(FarMemory.open({ nodes, spinMicros: -1 })).rejects.toThrow(/spinMicros: expected an integer from 0 to 10000/);
    await expect(MemoryNode.start({ spinMicros: 1.5 })).rejects.toThrow(/spinMicros/);
    await expect(fm.allocate(0)).rejects.toMatchObject({ code: 'FARMEM_INVALID_OPTION' });
    await expect(fm.allocate(-1)).rejects.toMatchObject({ code: 'FARMEM_INVALID_OPTION' });
    await expect(fm.allocate('1MiB', { prefech: 'none' } as never)).rejects.toThrow(/did you mean 'prefetch'/);
    await expect(fm.allocate('1MiB', { prefetchOptions: 5 } as never)).rejects.toThrow(/prefetchOptions: expected an object/);
    await expect(fm.allocate('1MiB', { prefetchOptions: { maxWindow: -5 } })).rejects.toThrow(/maxWindow: expected an integer from 1/);
    await expect(fm.allocate('1MiB', { prefetchOptions: { maxWindo: 8 } })).rejects.toThrow(/did you mean 'maxWindow'/);
    await expect(fm.allocate('1MiB', { prefetch: 'none', prefetchOptions: { window: 8 } })).rejects.toThrow(/unknown option 'window'/);
    const error = await FarMemory.open({ nodes: [] }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(FarmemError);
  });

  it('refuses a region larger than one ArrayBuffer can be, with a clear error instead of a crash', async () => {
    const { constants } = await import('node:buffer');
    const tooBig = constants.MAX_LENGTH + 4096;
    await expect(fm.allocate(tooBig)).rejects.toMatchObject({
      code: 'FARMEM_INVALID_OPTION',
      message: expect.stringMatching(/one ArrayBuffer.*allocate several regions/),
    });
    const reserved = (await node.stats()).reservedBytes;
    const region = await fm.allocate(MiB); // and the FarMemory carries on
    expect((await node.stats()).reservedBytes).toBe(reserved + MiB);
    await region.free();
  });

  it('accepts sizes with units', async () => {
    const region = await fm.allocate('1MiB');
    expect(region.size).toBe(MiB);
    await region.free();
  });

  it('fails open with FARMEM_AUTH on a wrong token', async () => {
    await expect(
      FarMemory.open({ nodes: [`127.0.0.1:${node.port}`], token: 'wrong' }),
    ).rejects.toMatchObject({ code: 'FARMEM_AUTH', message: expect.stringMatching(/token/) });
  });

  it('fails open with FARMEM_NODE_UNREACHABLE when nothing listens', async () => {
    const probe = await MemoryNode.start({ port: 0 });
    const port = probe.port;
    await probe.stop();
    await expect(
      FarMemory.open({ nodes: [`127.0.0.1:${port}`], connectTimeoutMs: 500 }),
    ).rejects.toMatchObject({ code: 'FARMEM_NODE_UNREACHABLE', message: expect.stringMatching(/farmem node/) });
  });

  it('fails allocate with FARMEM_CAPACITY when the node is full, and loses nothing already there', async () => {
    const small = await MemoryNode.start({ port: 0, capacity: 4 * MiB });
    const client = await FarMemory.open({ nodes: [small.address], localBudget: 1 * MiB });
    try {
      const first = await client.allocate(3 * MiB, { prefetch: 'none' });
      new Uint8Array(first.buffer).fill(42);
      await first.evict();
      await expect(client.allocate(2 * MiB)).rejects.toMatchObject({
        code: 'FARMEM_CAPACITY',
        message: expect.stringMatching(/capacity/),
      });
      const bytes = new Uint8Array(first.buffer);
      expect(bytes.every((b) => b === 42)).toBe(true);
      await first.free();
      const second = await client.allocate(2 * MiB);
      await second.free();
    } finally {
      await client.close();
      await small.stop();
    }
  });

  it('refuses use after close with FARMEM_CLOSED', async () => {
    const client = await FarMemory.open({ nodes: [`127.0.0.1:${node.port}`], token: TOKEN, localBudget: 1 * MiB });
    const region = await client.allocate(MiB);
    await client.close();
    expect(region.buffer.byteLength).toBe(0);
    await expect(client.allocate(MiB)).rejects.toMatchObject({ code: 'FARMEM_CLOSED' });
    await client.close();
  });
});

describe('striping over several nodes', () => {
  it('spreads pages over every node and reads them all back', async () => {
    const extra = await Promise.all([0, 1].map(() => MemoryNode.start({ port: 0, capacity: 64 * MiB })));
    const client = await FarMemory.open({ nodes: extra.map((n) => n.address), localBudget: 1 * MiB, stripePages: 16 });
    try {
      const region = await client.allocate(8 * MiB, { prefetch: 'readahead' });
      const words = new Int32Array(region.buffer);
      for (let i = 0; i < words.length; i++) words[i] = i ^ 0x5a5a5a5a;
      await region.flush();
      const stored = await Promise.all(extra.map((n) => n.stats()));
      for (const s of stored) expect(s.storedBytes).toBeGreaterThan(2 * MiB);
      await region.evict();
      for (let i = 0; i < words.length; i++) {
        if (words[i] !== (i ^ 0x5a5a5a5a)) throw new Error(`word ${i}`);
      }
      await region.free();
    } finally {
      await client.close();
      await Promise.all(extra.map((n) => n.stop()));
    }
  });
});
