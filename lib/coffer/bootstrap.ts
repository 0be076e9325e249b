// Entry of a coffer's thread: opens the coffer's own far memory, closes the side channels a tenant could
// use to reach another tenant, loads the tenant module and serves the host's calls. Everything in this
// file runs on the coffer's thread; the tenant's code runs here too, after lockdown().
import * as nodeModule from 'node:module';
// The module object itself (not an import-star copy): lockdown() replaces its exports for everyone.
import workerThreads = require('node:worker_threads');
import { FarmemError } from '../errors';
import { importModule } from '../import-module';
import { FarMemory, type AllocateOptions, type Region } from '../far-memory';
import { loadNative } from '../native';
import { COFFER_FACADE, type CofferFarMemory } from './tenant';
import { assertNothingShared, serializeError, type CofferMessage, type HostMessage } from './messages';

export interface CofferBootData {
  url: string;
  farMemory: {
    nodes: string[];
    token: string;
    localBudget: number;
    prefetch: string;
    namespaceKey: Uint8Array;
    weight: number;
  };
}

// Captured before lockdown: after it, tenant code finds neither.
const port = workerThreads.parentPort!;
const boot = workerThreads.workerData as CofferBootData;
const post = (message: CofferMessage): void => port.postMessage(message);

/** Buffers of this coffer's regions: never posted out (see assertNothingShared). */
const regionBuffers = new WeakSet<ArrayBuffer>();

function refused(what: string): never {
  throw new FarmemError('FARMEM_ISOLATION', `${what} is closed inside a coffer: tenants reach each other only through the host`);
}

/** Replaces what would let tenant code reach another thread directly. */
function lockdown(): void {
  // No userfaultfd of its own, and only its own mappings (attachRegion, raw addon calls included).
  loadNative().restrictEnv();
  const closedWorker = class Worker {
    constructor() {
      refused('starting a worker thread');
    }
  };
  const closedChannel = class BroadcastChannel {
    constructor() {
      refused('BroadcastChannel');
    }
  };
  const wt = workerThreads as unknown as Record<string, unknown>;
  for (const [name, value] of Object.entries({
    Worker: closedWorker,
    BroadcastChannel: closedChannel,
    parentPort: null,
    workerData: null,
    getEnvironmentData: (): undefined => undefined,
    setEnvironmentData: (): never => refused('setEnvironmentData'),
  })) {
    Object.defineProperty(wt, name, { value, writable: false, configurable: false, enumerable: true });
  }
  // ES module imports of node:worker_threads read the patched exports from now on.
  nodeModule.syncBuiltinESMExports();
  Object.defineProperty(globalThis, 'BroadcastChannel', { value: closedChannel, writable: false, configurable: false });
}

async function main(): Promise<void> {
  let fm: FarMemory;
  try {
    fm = await FarMemory.open(
      {
        nodes: boot.farMemory.nodes,
        token: boot.farMemory.token,
        localBudget: boot.farMemory.localBudget,
        prefetch: boot.farMemory.prefetch,
      },
      { namespaceKey: boot.farMemory.namespaceKey, weight: boot.farMemory.weight, restrictPagerTo: loadNative().envId() },
    );
  } catch (error) {
    post({ kind: 'start-failed', error: serializeError(error) });
    process.exit(1);
  }
  fm.on('policy-error', (detail: Record<string, unknown>) => {
    const error = detail.error as FarmemError | undefined;
    post({ kind: 'policy-error', detail: { ...detail, error: error ? serializeError(error) : undefined } });
  });
  fm.on('error', (error: FarmemError) => {
    // The pager thread died (a policy module killed it, say): nothing serves this coffer's memory any more.
    post({ kind: 'pager-died', error: serializeError(error) });
    process.exit(70);
  });

  const facade: CofferFarMemory = Object.freeze({
    allocate: async (size: number | string, options?: AllocateOptions): Promise<Region> => {
      const region = await fm.allocate(size, options);
      regionBuffers.add(region.buffer);
      post({ kind: 'region', id: region.id, stats: region.statsArray.buffer as SharedArrayBuffer });
      const free = region.free.bind(region);
      Object.defineProperty(region, 'free', {
        value: async () => {
          await free();
          post({ kind: 'region-freed', id: region.id });
        },
      });
      return region;
    },
    stats: () => fm.stats(),
    localBudget: fm.localBudget,
  });
  Object.defineProperty(globalThis, COFFER_FACADE, { value: facade, writable: false, configurable: false, enumerable: false });

  lockdown();

  let exports: Record<string, unknown>;
  try {
    exports = await importModule(boot.url);
  } catch (error) {
    post({ kind: 'start-failed', error: serializeError(error) });
    process.exit(1);
  }
  // A CommonJS tenant's functions arrive as properties of `default` too.
  const callable = (name: string): unknown => {
    const direct = exports[name];
    if (typeof direct === 'function') return direct;
    const fromDefault = (exports.default as Record<string, unknown> | undefined)?.[name];
    return typeof fromDefault === 'function' ? fromDefault : undefined;
  };
  const names = new Set<string>();
  for (const source of [exports, (exports.default ?? {}) as Record<string, unknown>]) {
    for (const [name, value] of Object.entries(source)) if (typeof value === 'function') names.add(name);
  }

  port.on('message', (message: HostMessage) => {
    if (message.kind === 'close') {
      // Frees this coffer's regions here and on the nodes, then ends the thread.
      void fm.close().finally(() => process.exit(0));
      return;
    }
    const fn = callable(message.name);
    if (typeof fn !== 'function' || message.name === 'main') {
      post({
        kind: 'result',
        id: message.id,
        ok: false,
        error: { name: 'FarmemError', code: 'FARMEM_INVALID_OPTION', message: `the tenant module exports no function '${message.name}'` },
      });
      return;
    }
    Promise.resolve()
      .then(() => (fn as (...args: unknown[]) => unknown)(...message.args))
      .then(
        (value) => {
          try {
            assertNothingShared(value, `the result of ${message.name}()`, regionBuffers);
            post({ kind: 'result', id: message.id, ok: true, value });
          } catch (error) {
            // DataCloneError (a function, a symbol) or FARMEM_ISOLATION: the call fails, the coffer lives.
            post({ kind: 'result', id: message.id, ok: false, error: serializeError(error) });
          }
        },
        (error) => post({ kind: 'result', id: message.id, ok: false, error: serializeError(error) }),
      );
  });

  const run = callable('main');
  post({ kind: 'ready', exports: [...names].filter((n) => n !== 'main').sort(), hasMain: typeof run === 'function' });
  if (typeof run === 'function') {
    // A coffer with a main() ends when it returns. Its throw is uncaught, and ends the coffer as 'threw'.
    const value = await (run as () => unknown)();
    try {
      assertNothingShared(value, 'the value main() returned', regionBuffers);
      post({ kind: 'main-returned', value });
    } catch {
      post({ kind: 'main-returned', value: undefined });
    }
    await fm.close();
    process.exit(0);
  }
}

void main();
