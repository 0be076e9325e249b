// Entry of the pager thread: one per FarMemory. Everything in this file runs on the pager thread.
import { parentPort, workerData } from 'node:worker_threads';
import { FarmemError } from '../errors';
import { Pager, type Advice, type PagerOptions } from './pager';
import type { GuideSpec, PolicySpec } from './policy-host';

export type PagerRequest =
  | { op: 'addRegion'; id: number; base: number; size: number; stats: SharedArrayBuffer; prefetch: PolicySpec }
  | { op: 'setPrefetch'; id: number; prefetch: PolicySpec }
  | { op: 'setGuide'; id: number; guide: GuideSpec | null }
  | { op: 'advise'; id: number; first: number; count: number; advice: Advice }
  | { op: 'traceStart'; id: number; file: string }
  | { op: 'traceStop'; id: number }
  | { op: 'policyStats'; id: number }
  | { op: 'freeRegion'; id: number }
  | { op: 'flush'; id?: number }
  | { op: 'evict'; id: number }
  | { op: 'nodes' }
  | { op: 'close' };

export type PagerMessage =
  | { kind: 'ready' }
  | { kind: 'open-failed'; error: unknown }
  | { kind: 'reply'; seq: number; ok: boolean; value?: unknown; error?: unknown }
  | { kind: 'event'; event: string; detail: Record<string, unknown> };

const port = parentPort!;
const post = (message: PagerMessage): void => port.postMessage(message);

function toWire(error: unknown): unknown {
  if (error instanceof FarmemError) return error.toJSON();
  if (error instanceof Error) {
    const e = error as Error & { code?: string; errno?: number; syscall?: string };
    return { code: e.code && e.code.startsWith('FARMEM_') ? e.code : 'FARMEM_SYSCALL', message: e.message, errno: e.errno, syscall: e.syscall };
  }
  return { code: 'FARMEM_PAGER_DIED', message: String(error) };
}

const pager = new Pager(workerData as PagerOptions, {
  notify: (event, detail) => post({ kind: 'event', event, detail }),
});

async function handle(request: PagerRequest): Promise<unknown> {
  switch (request.op) {
    case 'addRegion':
      return pager.addRegion(request.id, request.base, request.size, new Float64Array(request.stats), request.prefetch);
    case 'setPrefetch':
      return pager.setPrefetch(request.id, request.prefetch);
    case 'setGuide':
      return pager.setGuide(request.id, request.guide);
    case 'advise':
      return pager.advise(request.id, request.first, request.count, request.advice);
    case 'traceStart':
      return pager.traceStart(request.id, request.file);
    case 'traceStop':
      return pager.traceStop(request.id);
    case 'policyStats':
      return pager.policyStats(request.id);
    case 'freeRegion':
      return pager.freeRegion(request.id);
    case 'flush':
      return pager.flush(request.id);
    case 'evict':
      return pager.evictRegion(request.id);
    case 'nodes':
      return { nodes: pager.nodeStates(), frames: pager.framesInUse() };
    case 'close':
      return pager.close();
  }
}

port.on('message', (message: { seq: number; request: PagerRequest }) => {
  handle(message.request).then(
    (value) => {
      post({ kind: 'reply', seq: message.seq, ok: true, value });
      // With the port closed and the sockets and uffd gone, the thread ends by itself.
      if (message.request.op === 'close') port.close();
    },
    (error) => post({ kind: 'reply', seq: message.seq, ok: false, error: toWire(error) }),
  );
});

pager.open().then(
  () => post({ kind: 'ready' }),
  (error) => {
    post({ kind: 'open-failed', error: toWire(error) });
    void pager.close();
  },
);
