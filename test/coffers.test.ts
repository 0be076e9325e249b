// Coffers: tenants on worker threads, each with its own heap, pager and far memory. Real userfaultfd, a
// real memory node on loopback, real failures. Every containment case checks that another coffer's data
// still verifies byte for byte afterwards.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FIXTURES, MiB, farmem } from './helpers';

const { Coffer, MemoryNode } = farmem;
type Coffer = InstanceType<typeof Coffer>;
type MemoryNode = InstanceType<typeof MemoryNode>;

const TENANT = path.join(FIXTURES, 'coffers', 'tenant.mjs');
const TOKEN = 'coffer-test-token';
let node: MemoryNode;
let nodes: string[];

beforeAll(async () => {
  node = await MemoryNode.start({ host: '127.0.0.1', port: 0, capacity: 512 * MiB, token: TOKEN });
  nodes = [`127.0.0.1:${node.port}`];
});

afterAll(async () => {
  await node?.stop();
});

function spawn(options: Record<string, unknown> = {}, module = TENANT): Promise<Coffer> {
  return Coffer.spawn(module, { nodes, token: TOKEN, heapMb: 64, localBudget: '2MiB', ...options });
}

/** A coffer holding 8 MiB of far memory (4x its budget, so most of it lives on the node) stamped with `seed`. */
async function victim(seed: number): Promise<Coffer> {
  const coffer = await spawn();
  await coffer.call('fill', seed, 8 * MiB);
  return coffer;
}

async function expectIntact(coffer: Coffer, seed: number): Promise<void> {
  expect(await coffer.call('verify', seed)).toBe(0);
  expect(await coffer.call('evictAndVerify', seed)).toBe(0);
  expect(coffer.stats().state).toBe('running');
}

describe('calls', () => {
  it('calls exported functions with copies and answers with copies; stats count them', async () => {
    const coffer = await spawn();
    expect(await coffer.call('fill', 1, 4 * MiB)).toEqual({ size: 4 * MiB, budget: 2 * MiB });
    expect(await coffer.call('verify', 1)).toBe(0);
    expect(await coffer.call('verify', 2)).toBe(1024);
    const stats = coffer.stats();
    expect(stats.calls).toEqual({ started: 3, succeeded: 3, failed: 0, pending: 0 });
    expect(stats.farMemory.regions).toBe(1);
    // The budget is hard: 4 MiB written through a 2 MiB budget never holds more than 2 MiB locally.
    expect(stats.farMemory.residentBytes + stats.farMemory.inflightBytes).toBeLessThanOrEqual(2 * MiB);
    expect(stats.farMemory.evictions).toBeGreaterThan(0);
    expect(stats.farMemory.remoteFetches + stats.farMemory.zeroFills).toBeGreaterThan(0);
    await expect(coffer.call('throwNow', 'on purpose')).rejects.toThrow(/on purpose/);
    await expect(coffer.call('noSuchFunction')).rejects.toThrow(/exports no function 'noSuchFunction'/);
    // A throw in a call rejects that call; the coffer and its memory go on.
    await expectIntact(coffer, 1);
    const exit = await coffer.terminate();
    expect(exit.reason).toBe('terminated');
    await expect(coffer.call('verify', 1)).rejects.toMatchObject({ code: 'FARMEM_COFFER_EXITED' });
  });

  it("a coffer with main() ends 'returned' with its value", async () => {
    const coffer = await spawn({}, path.join(FIXTURES, 'coffers', 'main-returns.mjs'));
    const exit = await coffer.exited();
    expect(exit.reason).toBe('returned');
    expect(exit.value).toEqual({ sum: 7 * MiB });
  });

  it('refuses bad options with clear errors', async () => {
    await expect(Coffer.spawn(TENANT, { nodes, heapMb: 1 })).rejects.toMatchObject({ code: 'FARMEM_INVALID_OPTION' });
    await expect(Coffer.spawn(TENANT, { nodes, heapMB: 64 } as never)).rejects.toThrow(/did you mean 'heapMb'/);
    await expect(Coffer.spawn('some-package', { nodes })).rejects.toMatchObject({ code: 'FARMEM_INVALID_OPTION' });
    await expect(Coffer.spawn(TENANT, { nodes: [] })).rejects.toMatchObject({ code: 'FARMEM_INVALID_OPTION' });
    await expect(Coffer.spawn(path.join(FIXTURES, 'coffers', 'missing.mjs'), { nodes, token: TOKEN })).rejects.toThrow(/could not start/);
    await expect(Coffer.spawn(TENANT, { nodes, token: 'wrong' })).rejects.toThrow(/token/);
  });
});

describe('fault containment: one coffer fails, another keeps its data', () => {
  const cases: Array<[string, (c: Coffer) => Promise<unknown>, string, Record<string, unknown>?]> = [
    ['throws where no one catches it', (c) => c.call('throwLater'), 'threw'],
    ['runs out of heap', (c) => c.call('exhaustHeap'), 'out-of-memory', { heapMb: 16 }],
    ['loops forever', (c) => c.call('loopForever'), 'timeout', { timeoutMs: 500 }],
    ['calls process.exit', (c) => c.call('exit', 9), 'exited'],
    ['installs a policy that kills its pager thread', (c) => c.call('killingPolicy', path.join(FIXTURES, 'coffers', 'killing-policy.mjs')), 'pager-died'],
    ['is terminated by the host', (c) => c.terminate(), 'terminated'],
  ];
  for (const [what, fail, reason, options] of cases) {
    it(`a tenant that ${what} ends alone ('${reason}'), its pages freed on the node`, async () => {
      const bystander = await victim(11);
      const before = await node.stats();
      const failing = await spawn(options);
      await failing.call('fill', 22, 8 * MiB);
      expect((await node.stats()).reservedBytes).toBe(before.reservedBytes + 8 * MiB);
      const exits: unknown[] = [];
      failing.on('exit', (info) => exits.push(info));
      await fail(failing).catch(() => undefined);
      const exit = await failing.exited();
      expect(exit.reason).toBe(reason);
      expect(exits).toHaveLength(1);
      // Its namespace is gone from the node: capacity returned.
      expect((await node.stats()).reservedBytes).toBe(before.reservedBytes);
      expect((await node.stats()).namespaces).toBe(before.namespaces);
      expect(failing.stats().state).toBe('exited');
      await expect(failing.call('verify', 22)).rejects.toMatchObject({ code: 'FARMEM_COFFER_EXITED' });
      // The other coffer's far memory is untouched.
      await expectIntact(bystander, 11);
      await bystander.terminate();
    });
  }

  it('a policy that throws is contained inside the coffer: the coffer and its data go on', async () => {
    const coffer = await spawn();
    await coffer.call('fill', 0, 4 * MiB);
    const events: unknown[] = [];
    coffer.on('policy-error', (e) => events.push(e));
    const result = (await coffer.call('throwingPolicy', path.join(FIXTURES, 'policies', 'throws.mjs'))) as { bad: number; policyErrors: number };
    expect(result).toEqual({ bad: 0, policyErrors: 1 });
    // The event travels pager thread -> coffer thread -> host: let it arrive.
    for (let i = 0; i < 200 && events.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(events).toHaveLength(1);
    await expectIntact(coffer, 0);
    await coffer.terminate();
  });
});

describe('isolation', () => {
  it("a region's buffer, views of it, SharedArrayBuffers and MessagePorts never leave a coffer; copies do", async () => {
    const coffer = await spawn();
    await coffer.call('fill', 5, 1 * MiB);
    await expect(coffer.call('regionBuffer')).rejects.toMatchObject({ code: 'FARMEM_ISOLATION' });
    await expect(coffer.call('regionView')).rejects.toThrow(/view of a far-memory region's buffer at value.nested.0/);
    await expect(coffer.call('sharedBuffer')).rejects.toThrow(/SharedArrayBuffer/);
    await expect(coffer.call('messagePort')).rejects.toThrow(/MessagePort/);
    const copy = (await coffer.call('regionCopy')) as Uint8Array;
    expect(copy).toBeInstanceOf(Uint8Array);
    expect(copy.length).toBe(16);
    // Nor may the host hand shared memory in.
    await expect(coffer.call('verify', new SharedArrayBuffer(8))).rejects.toMatchObject({ code: 'FARMEM_ISOLATION' });
    await expectIntact(coffer, 5);
    await coffer.terminate();
  });

  it('closes workers, SHARE_ENV, BroadcastChannel, parentPort, workerData and environment data; env is its own', async () => {
    const coffer = await spawn({ env: { ONLY_THIS: '1' } });
    const result = (await coffer.call('sideChannels')) as Record<string, unknown>;
    expect(result).toEqual({
      workerEsm: 'FARMEM_ISOLATION',
      workerCjs: 'FARMEM_ISOLATION',
      workerNamespace: 'FARMEM_ISOLATION',
      shareEnv: 'FARMEM_ISOLATION',
      broadcastGlobal: 'FARMEM_ISOLATION',
      broadcastModule: 'FARMEM_ISOLATION',
      parentPort: true,
      workerData: true,
      environmentData: true,
      env: ['ONLY_THIS'],
    });
    expect(await coffer.call('openFarMemory', nodes)).toBe('FARMEM_ISOLATION');
    await coffer.terminate();
  });

  it("cannot reach another coffer's region, even knowing its address", async () => {
    const owner = await victim(33);
    const intruder = await victim(44);
    const { address, size } = (await owner.call('handle')) as { address: number; size: number };
    expect(await intruder.call('attachOther', address, size)).toBe('FARMEM_ISOLATION');
    expect(await intruder.call('rawAddon', address)).toEqual({
      readOut: 'FARMEM_ISOLATION',
      dropRange: 'FARMEM_ISOLATION',
      dropRanges: 'FARMEM_ISOLATION',
      mapAttach: 'FARMEM_ISOLATION',
      mapRelease: 'FARMEM_ISOLATION',
      uffd: 'FARMEM_ISOLATION',
    });
    await expectIntact(owner, 33);
    await expectIntact(intruder, 44);
    await owner.terminate();
    await intruder.terminate();
  });

  it("a coffer's credentials open its own namespace on the node and no other", async () => {
    const a = await victim(55);
    const b = await victim(66);
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { readNamespace } = require(path.join(FIXTURES, 'coffers', 'raw-client.cjs'));
    const keyOf = (c: Coffer) => (c as unknown as { namespaceKey: Buffer }).namespaceKey;
    const credentialOf = (c: Coffer) => (c as unknown as { credential: string }).credential;
    // B's credential with B's key reads B's region 1: B's data.
    const own = await readNamespace(node.port, keyOf(b), credentialOf(b), 1, 0);
    expect(own.ok).toBe(true);
    // B's credential with A's key: refused by the node, whatever B asks.
    const stolen = await readNamespace(node.port, keyOf(a), credentialOf(b), 1, 0);
    expect(stolen).toMatchObject({ ok: false, error: expect.stringMatching(/credential/) });
    // A made-up credential: refused.
    const forged = await readNamespace(node.port, keyOf(a), `farmem-ns1.0.${'0'.repeat(64)}`, 1, 0);
    expect(forged).toMatchObject({ ok: false });
    await expectIntact(a, 55);
    await a.terminate();
    await b.terminate();
  });
});

describe('many coffers', () => {
  it('spawns, runs and tears down 16 coffers three times without leaking mappings, fds or node capacity', async () => {
    const REGION = 5 * MiB + 7 * 4096;
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const native = (require('../dist/cjs/native.js') as typeof import('../lib/native')).loadNative();
    // Every mapping farmem made in this process that is still mapped, whichever thread made it.
    const mappings = () => native.mappingCounts().mapped;
    const fds = () => fs.readdirSync('/proc/self/fd').length;
    const baseline = { mappings: mappings(), fds: fds(), node: await node.stats() };
    for (let round = 0; round < 3; round++) {
      const coffers = await Promise.all(Array.from({ length: 16 }, () => spawn({ localBudget: '1MiB' })));
      await Promise.all(coffers.map((c, i) => c.call('fill', 100 + i, REGION)));
      expect(mappings()).toBe(baseline.mappings + 16);
      const bad = await Promise.all(coffers.map((c, i) => c.call('evictAndVerify', 100 + i)));
      expect(bad).toEqual(new Array(16).fill(0));
      // Half end themselves badly, half are terminated.
      await Promise.all(coffers.map((c, i) => (i % 2 === 0 ? c.terminate() : c.call('exit', 1).catch(() => c.exited()))));
      await Promise.all(coffers.map((c) => c.exited()));
    }
    // A killed coffer's buffers are finalized with its heap; give that a moment on a busy machine.
    for (let i = 0; i < 100 && mappings() > baseline.mappings; i++) await new Promise((r) => setTimeout(r, 20));
    expect(mappings()).toBe(baseline.mappings);
    // Sockets and the ended threads' userfaultfds close asynchronously too.
    for (let i = 0; i < 100 && fds() > baseline.fds; i++) await new Promise((r) => setTimeout(r, 20));
    expect(fds()).toBeLessThanOrEqual(baseline.fds + 2);
    const after = await node.stats();
    expect(after.reservedBytes).toBe(baseline.node.reservedBytes);
    expect(after.namespaces).toBe(baseline.node.namespaces);
    expect(after.storedBytes).toBe(baseline.node.storedBytes);
  }, 120_000);
});
