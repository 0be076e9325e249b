// Entry of the worker thread that runs a memory node (see MemoryNode in lib/memory-node.ts).
//
// Runs on the node's own worker thread. The node is kept off the application's threads because a thread
// blocked in a page fault must never be the thread that would serve that page.
//
// Messages: the parent sends { type: 'stats', id } and { type: 'stop' }; this thread answers with
// { type: 'listening', host, port } or { type: 'error', error } once, then { type: 'stats', id, stats }
// per request and { type: 'stopped' } before it exits.

import { parentPort, workerData } from 'node:worker_threads';
import { FarmemError } from '../errors';
import { MemoryNodeServer, type MemoryNodeStats, type ResolvedServerOptions } from './server';

export interface MemoryNodeWorkerData {
  options: ResolvedServerOptions;
}

export type ToMemoryNodeWorker = { type: 'stats'; id: number } | { type: 'stop' };

export type FromMemoryNodeWorker =
  | { type: 'listening'; host: string; port: number }
  | { type: 'error'; error: Record<string, unknown> }
  | { type: 'stats'; id: number; stats: MemoryNodeStats }
  | { type: 'stopped' };

function serializeError(err: unknown): Record<string, unknown> {
  if (err instanceof FarmemError) return err.toJSON();
  return new FarmemError('FARMEM_SYSCALL', `memory node failed to start: ${(err as Error)?.message ?? String(err)}`).toJSON();
}

async function main(): Promise<void> {
  const port = parentPort;
  if (port === null) throw new Error('lib/node/worker.js must be started as a worker thread (use MemoryNode.start)');
  const post = (message: FromMemoryNodeWorker) => port.postMessage(message);
  const { options } = workerData as MemoryNodeWorkerData;

  let server: MemoryNodeServer;
  try {
    server = new MemoryNodeServer(options);
    post({ type: 'listening', ...(await server.listen()) });
  } catch (err) {
    post({ type: 'error', error: serializeError(err) });
    port.close();
    return;
  }

  port.on('message', (message: ToMemoryNodeWorker) => {
    if (message.type === 'stats') {
      post({ type: 'stats', id: message.id, stats: server.stats() });
    } else if (message.type === 'stop') {
      void server.close().then(() => {
        post({ type: 'stopped' });
        port.close(); // nothing else holds this thread's loop open: it exits
      });
    }
  });
}

void main();
