// Real failures: a silent node, a node killed mid-transfer, connections cut mid-frame, garbage on the wire.
import { spawn, type ChildProcess } from 'node:child_process';
import * as net from 'node:net';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterEach, expect, it } from 'vitest';
import { FIXTURES, MiB, farmem } from './helpers';

const { FarMemory } = farmem;
const children: ChildProcess[] = [];

function startChild(script: string, args: string[]): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [path.join(FIXTURES, script), ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  return new Promise((resolve, reject) => {
    child.stdout!.once('data', (d) => resolve({ child, port: JSON.parse(String(d)).port }));
    child.once('exit', (code) => reject(new Error(`${script} exited with ${code}`)));
  });
}

afterEach(() => {
  for (const child of children.splice(0)) {
    child.kill('SIGCONT');
    child.kill('SIGKILL');
  }
});

function touchInWorker(handle: unknown, rounds = 1): { started: Promise<void>; done: Promise<number>; worker: Worker } {
  const worker = new Worker(path.join(FIXTURES, 'touch-worker.cjs'), { workerData: { handle, rounds } });
  let started!: () => void;
  const startedP = new Promise<void>((r) => (started = r));
  const done = new Promise<number>((resolve, reject) => {
    worker.on('message', (m: { started?: boolean; sum?: number }) => (m.started ? started() : resolve(m.sum!)));
    worker.once('error', reject);
  });
  return { started: startedP, done, worker };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

it('a silent node: faults wait, then are served with the right data once it answers again', async () => {
  const { child, port } = await startChild('node-process.cjs', ['0']);
  const fm = await FarMemory.open({ nodes: [`127.0.0.1:${port}`], localBudget: 1 * MiB, requestTimeoutMs: 300, reconnectMaxMs: 200 });
  const downs: unknown[] = [];
  fm.on('node-down', (e) => downs.push(e));
  try {
    const region = await fm.allocate(2 * MiB, { prefetch: 'none' });
    new Uint8Array(region.buffer).fill(3);
    await region.evict();
    child.kill('SIGSTOP');
    const touch = touchInWorker(region.handle());
    await touch.started;
    let finished = false;
    void touch.done.then(() => (finished = true));
    await sleep(1000);
    expect(finished).toBe(false); // waiting, not answered with zeros
    child.kill('SIGCONT');
    expect(await touch.done).toBe(3 * 512);
    expect(downs.length).toBeGreaterThan(0); // the watchdog noticed the silence
    await touch.worker.terminate();
    await region.free();
  } finally {
    await fm.close();
  }
});

it('connections cut mid-frame: requests are resent and every byte arrives', async () => {
  const { port: nodePort } = await startChild('node-process.cjs', ['0']);
  // Cut the first 6 connections after 300 KB of replies: inside READ_OK frames.
  const { port: proxyPort } = await startChild('cutting-proxy.cjs', [String(nodePort), '300000', '6']);
  const fm = await FarMemory.open({ nodes: [`127.0.0.1:${proxyPort}`], localBudget: 1 * MiB, reconnectInitialMs: 10 });
  try {
    const region = await fm.allocate(8 * MiB, { prefetch: 'readahead' });
    const words = new Uint32Array(region.buffer);
    for (let i = 0; i < words.length; i++) words[i] = Math.imul(i, 0x9e3779b1);
    await region.evict();
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < words.length; i++) {
        if (words[i] !== Math.imul(i, 0x9e3779b1) >>> 0) throw new Error(`round ${round}: word ${i} is ${words[i]}`);
      }
      await region.evict();
    }
    await region.free();
  } finally {
    await fm.close();
  }
});

it('a node killed mid-transfer and restarted: the loss is reported and no zeros are served for lost pages', async () => {
  const first = await startChild('node-process.cjs', ['0']);
  const fm = await FarMemory.open({ nodes: [`127.0.0.1:${first.port}`], localBudget: 1 * MiB, reconnectInitialMs: 20, reconnectMaxMs: 100 });
  const lost = new Promise<{ node: string; error: { code: string } }>((resolve) => fm.once('node-lost', resolve));
  try {
    const region = await fm.allocate(4 * MiB, { prefetch: 'readahead' });
    new Uint8Array(region.buffer).fill(5);
    await region.evict();
    const touch = touchInWorker(region.handle(), 1000);
    await touch.started;
    await sleep(50);
    first.child.kill('SIGKILL');
    await startChild('node-process.cjs', [String(first.port)]);
    const event = await lost;
    expect(event.error.code).toBe('FARMEM_NODE_LOST');
    let finished = false;
    void touch.done.then(() => (finished = true));
    await sleep(300);
    expect(finished).toBe(false);
    await region.free(); // unregistering lets the waiting thread go
    await touch.worker.terminate();
  } finally {
    await fm.close();
  }
});

it('garbage on the wire: open fails with a clear error and the process lives on', async () => {
  const garbage = net.createServer((socket) => {
    socket.on('error', () => undefined);
    socket.write(Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\nthis is not a memory node at all, sorry'));
  });
  await new Promise<void>((r) => garbage.listen(0, '127.0.0.1', r));
  const port = (garbage.address() as net.AddressInfo).port;
  try {
    const error = await FarMemory.open({ nodes: [`127.0.0.1:${port}`], connectTimeoutMs: 800 }).catch((e) => e);
    expect(error.code).toBe('FARMEM_NODE_UNREACHABLE');
    expect(error.message).toMatch(new RegExp(String(port)));
    expect(error.message).toMatch(/does not answer HELLO as a farmem memory node does/);
  } finally {
    garbage.close();
  }
});
