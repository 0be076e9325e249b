// The kernel itself touches the region: write(2) reads from it in copy_from_user, read(2) writes into it.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { MiB, farmem, fillPattern } from './helpers';

const { FarMemory, MemoryNode } = farmem;
let node: InstanceType<typeof MemoryNode>;
let fm: InstanceType<typeof FarMemory>;
let dir: string;

beforeAll(async () => {
  node = await MemoryNode.start({ port: 0, capacity: 64 * MiB });
  fm = await FarMemory.open({ nodes: [node.address], localBudget: 1 * MiB });
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'farmem-kernel-'));
});
afterAll(async () => {
  await fm?.close();
  await node?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

it('fs.writeSync from a region whose pages are all remote writes the right bytes', async () => {
  expect(fm.mode).toBe('kernel');
  const size = 4 * MiB; // 4x the budget: the kernel's copy faults page after page
  const region = await fm.allocate(size, { prefetch: 'none' });
  const bytes = new Uint8Array(region.buffer);
  const expected = new Uint8Array(size);
  fillPattern(expected, 1234);
  bytes.set(expected);
  await region.evict();
  const file = path.join(dir, 'out.bin');
  const fd = fs.openSync(file, 'w');
  const written = fs.writeSync(fd, bytes);
  fs.closeSync(fd);
  expect(written).toBe(size);
  expect(Buffer.compare(fs.readFileSync(file), Buffer.from(expected))).toBe(0);
  expect(region.stats().remoteFetches).toBeGreaterThan(0);
  await region.free();
});

it('fs.readSync into a region fills remote and untouched pages', async () => {
  const size = 3 * MiB;
  const source = new Uint8Array(size);
  fillPattern(source, 99);
  const file = path.join(dir, 'in.bin');
  fs.writeFileSync(file, source);
  const region = await fm.allocate(size, { prefetch: 'none' });
  const bytes = new Uint8Array(region.buffer);
  // Half the region has been written and evicted (remote), half never touched.
  bytes.fill(0xee, 0, size / 2);
  await region.evict();
  const fd = fs.openSync(file, 'r');
  let done = 0;
  while (done < size) done += fs.readSync(fd, bytes, done, size - done, done);
  fs.closeSync(fd);
  await region.evict();
  expect(Buffer.compare(Buffer.from(bytes), Buffer.from(source))).toBe(0);
  await region.free();
});
