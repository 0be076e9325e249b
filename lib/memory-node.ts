// MemoryNode: a farmem memory node, started from JavaScript.
//
// By default the server runs on its own worker thread: a thread blocked in a page fault must never be the
// thread that would serve that page, and an application that starts a node in-process may fault on the
// thread that called start(). `inline: true` runs it on the calling thread instead — right for a process
// that is only a memory node (the `farmem node` CLI), wrong for one that also maps regions.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { FarmemError, invalidOption } from './errors';
import { checkOptionNames } from './options';
import {
  MemoryNodeServer,
  SERVER_OPTION_DEFAULTS,
  resolveServerOptions,
  type MemoryNodeServerOptions,
  type MemoryNodeStats,
  type ResolvedServerOptions,
} from './node/server';
import type { FromMemoryNodeWorker, MemoryNodeWorkerData, ToMemoryNodeWorker } from './node/worker';

export type { MemoryNodeStats } from './node/server';

/** The server's options (see MemoryNodeServerOptions; `slabPages` is internal) and where it runs. */
export interface MemoryNodeOptions extends Omit<MemoryNodeServerOptions, 'slabPages'> {
  /** Serve on the calling thread instead of a worker thread. Default false. */
  inline?: boolean;
}

const OPTION_NAMES = [...Object.keys(SERVER_OPTION_DEFAULTS).filter((name) => name !== 'slabPages'), 'inline'];
// How long stop() waits for the worker to close its sockets before terminating it.
const STOP_GRACE_MS = 5000;

/** A running memory node. Start one with `MemoryNode.start()`; clients reach it at `address`. */
export class MemoryNode {
  /** The address the node is bound to (the resolved IP when `host` was a name). */
  readonly host: string;
  readonly port: number;
  /** Capacity in bytes, rounded down to a whole number of pages. */
  readonly capacity: number;
  /** 'host:port' ('[::1]:port' for IPv6), as clients take it. */
  readonly address: string;

  private readonly backend: InlineBackend | WorkerBackend;
  private stopping: Promise<void> | null = null;

  private constructor(host: string, port: number, capacity: number, backend: InlineBackend | WorkerBackend) {
    this.host = host;
    this.port = port;
    this.capacity = capacity;
    this.address = `${host.includes(':') ? `[${host}]` : host}:${port}`;
    this.backend = backend;
  }

  /**
   * Validates the options, starts the server (on a worker thread unless `inline`) and resolves once it
   * listens. Rejects with FARMEM_INVALID_OPTION for a bad option and FARMEM_SYSCALL when it cannot listen.
   */
  static async start(options: MemoryNodeOptions = {}): Promise<MemoryNode> {
    checkOptionNames(options, OPTION_NAMES, 'MemoryNode.start()');
    const { inline = false, ...serverOptions } = options ?? {};
    if (typeof inline !== 'boolean') throw invalidOption('inline', inline, 'true or false');
    const resolved = resolveServerOptions(serverOptions);

    if (inline) {
      const server = new MemoryNodeServer(resolved);
      const { host, port } = await server.listen();
      return new MemoryNode(host, port, resolved.capacity, new InlineBackend(server));
    }
    const { backend, host, port } = await WorkerBackend.start(resolved);
    return new MemoryNode(host, port, resolved.capacity, backend);
  }

  /** Counters and usage; see MemoryNodeStats. Rejects with FARMEM_CLOSED once the node is stopped. */
  stats(): Promise<MemoryNodeStats> {
    if (this.stopping) return Promise.reject(new FarmemError('FARMEM_CLOSED', `memory node ${this.address} is stopped`));
    return this.backend.stats();
  }

  /** Closes every connection, drops every page and stops listening. Idempotent. */
  stop(): Promise<void> {
    if (!this.stopping) this.stopping = this.backend.stop();
    return this.stopping;
  }
}

class InlineBackend {
  constructor(private readonly server: MemoryNodeServer) {}

  stats(): Promise<MemoryNodeStats> {
    return Promise.resolve(this.server.stats());
  }

  stop(): Promise<void> {
    return this.server.close();
  }
}

/** Finds the compiled worker entry: next to this file in dist/, or in dist/ when this file runs from lib/. */
function workerEntry(): string {
  const candidates = [
    path.join(__dirname, 'node', 'worker.js'),
    path.join(__dirname, '..', 'dist', 'cjs', 'node', 'worker.js'),
  ];
  for (const candidate of candidates) if (fs.existsSync(candidate)) return candidate;
  throw new FarmemError(
    'FARMEM_UNSUPPORTED_PLATFORM',
    `cannot find the memory node worker (looked for ${candidates.join(' and ')}): ` +
      "build farmem with 'npm run build:ts', or start the node with inline: true",
  );
}

class WorkerBackend {
  private readonly worker: Worker;
  private readonly pending = new Map<number, { resolve: (s: MemoryNodeStats) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private exited = false;
  private readonly exitPromise: Promise<void>;
  private exitError: Error | null = null;

  private constructor(worker: Worker) {
    this.worker = worker;
    this.exitPromise = new Promise((resolve) => {
      worker.once('exit', (code) => {
        this.exited = true;
        const error =
          this.exitError ??
          new FarmemError('FARMEM_CLOSED', `the memory node worker exited (code ${code})`);
        for (const { reject } of this.pending.values()) reject(error);
        this.pending.clear();
        resolve();
      });
    });
    worker.on('error', (err) => {
      this.exitError = new FarmemError('FARMEM_CLOSED', `the memory node worker failed: ${err.message}`, { cause: err });
    });
    worker.on('message', (message: FromMemoryNodeWorker) => {
      if (message.type !== 'stats') return;
      const waiter = this.pending.get(message.id);
      this.pending.delete(message.id);
      waiter?.resolve(message.stats);
    });
  }

  static start(options: ResolvedServerOptions): Promise<{ backend: WorkerBackend; host: string; port: number }> {
    const workerData: MemoryNodeWorkerData = { options };
    const worker = new Worker(workerEntry(), { workerData, name: 'farmem memory node' });
    const backend = new WorkerBackend(worker);
    return new Promise((resolve, reject) => {
      const onMessage = (message: FromMemoryNodeWorker) => {
        if (message.type === 'listening') {
          cleanup();
          resolve({ backend, host: message.host, port: message.port });
        } else if (message.type === 'error') {
          cleanup();
          reject(FarmemError.fromJSON(message.error));
        }
      };
      const onError = (err: Error) => {
        cleanup();
        reject(new FarmemError('FARMEM_SYSCALL', `the memory node worker failed to start: ${err.message}`, { cause: err }));
      };
      const onExit = (code: number) => {
        cleanup();
        reject(new FarmemError('FARMEM_SYSCALL', `the memory node worker exited during start-up (code ${code})`));
      };
      const cleanup = () => {
        worker.off('message', onMessage);
        worker.off('error', onError);
        worker.off('exit', onExit);
      };
      worker.on('message', onMessage);
      worker.on('error', onError);
      worker.on('exit', onExit);
    });
  }

  stats(): Promise<MemoryNodeStats> {
    if (this.exited) {
      return Promise.reject(this.exitError ?? new FarmemError('FARMEM_CLOSED', 'the memory node worker has exited'));
    }
    return new Promise((resolve, reject) => {
      const id = this.nextId++;
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ type: 'stats', id } satisfies ToMemoryNodeWorker);
    });
  }

  async stop(): Promise<void> {
    if (!this.exited) {
      this.worker.postMessage({ type: 'stop' } satisfies ToMemoryNodeWorker);
      const grace = setTimeout(() => void this.worker.terminate(), STOP_GRACE_MS);
      await this.exitPromise;
      clearTimeout(grace);
    }
  }
}
