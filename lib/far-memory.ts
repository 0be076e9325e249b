// The public API on the application's side: FarMemory opens a pager thread; Region is one far-memory
// ArrayBuffer. Everything here runs on the thread that opened the FarMemory (usually the main thread);
// it never serves faults, so it may block in one like any other thread.
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { FarmemError, invalidOption } from './errors';
import { MAX_BUFFER_BYTES, capabilities, loadNative, type Capabilities } from './native';
import {
  fractionOption,
  intOption,
  parseNodeAddress,
  checkOptionNames,
  sizeOption,
  stringOption,
} from './options';
import type { PagerOptions } from './pager/pager';
import type { PagerMessage, PagerRequest } from './pager/worker';
import { BUILTIN_POLICIES, createPolicy } from './policies';
import { PAGE_SIZE } from './protocol';
import { C, REGION_STATS_FLOATS, addInto, readRegionStats, type RegionStats } from './stats';
import { formatBytes } from './units';

export interface FarMemoryOptions {
  /** Memory nodes, as 'host:port' or { host, port }. Pages are striped over them. Required. */
  nodes: Array<string | { host: string; port: number }>;
  /** The token the nodes were started with. Default ''. */
  token?: string;
  /** Bytes of local memory the regions of this FarMemory may keep resident. Default '64MiB'. */
  localBudget?: number | string;
  /** Default prefetch policy of new regions: 'readahead' or 'none'. Default 'readahead'. */
  prefetch?: string;
  /** Pages per stripe: consecutive pages on one node before the next node. Default 64 (256 KiB). */
  stripePages?: number;
  /** Most pages in one read or write request. Default 256. */
  maxRequestPages?: number;
  /** Eviction starts when this fraction of the budget is used... Default 0.95. */
  evictHighWater?: number;
  /** ...and frees frames until this fraction is used. Default 0.85. */
  evictLowWater?: number;
  /** Most of the budget that prefetches in flight may hold. Default 0.25. */
  maxPrefetchFraction?: number;
  /** Most faults read from the userfaultfd in one batch. Default 256. */
  faultBatch?: number;
  /** How long open() waits for every node. Default 5000. */
  connectTimeoutMs?: number;
  /** A node that answers no request for this long is treated as gone: reconnect and resend. Default 10000. */
  requestTimeoutMs?: number;
  /** First reconnect delay; doubles up to reconnectMaxMs. Default 50. */
  reconnectInitialMs?: number;
  /** Default 2000. */
  reconnectMaxMs?: number;
  /** Force UFFD_USER_MODE_ONLY even where kernel-mode faults could be handled. Default false. */
  userModeOnly?: boolean;
}

export interface AllocateOptions {
  /** Prefetch policy of this region. Default: the FarMemory's `prefetch`. */
  prefetch?: string;
  /** Options of the policy (readahead: { initialWindow: 16, maxWindow: 256 }). */
  prefetchOptions?: Record<string, unknown>;
}

export interface RegionHandle {
  address: number;
  size: number;
}

export interface FarMemoryStats extends RegionStats {
  regions: number;
  localBudget: number;
}

const OPTION_NAMES = [
  'nodes', 'token', 'localBudget', 'prefetch', 'stripePages', 'maxRequestPages', 'evictHighWater',
  'evictLowWater', 'maxPrefetchFraction', 'faultBatch', 'connectTimeoutMs', 'requestTimeoutMs',
  'reconnectInitialMs', 'reconnectMaxMs', 'userModeOnly',
] as const;

const MIN_BUDGET_PAGES = 64;
/** A region is one ArrayBuffer, so V8's limit on those bounds it (4 GiB on Node 20), as does the protocol's page index. */
const MAX_REGION_BYTES = Math.min(2 ** 31 * PAGE_SIZE, MAX_BUFFER_BYTES);

function validatePrefetch(name: string, value: unknown, fallback: string): string {
  const policy = stringOption(name, value, fallback);
  if (!(BUILTIN_POLICIES as readonly string[]).includes(policy)) {
    throw invalidOption(name, value, `one of ${BUILTIN_POLICIES.map((p) => `'${p}'`).join(', ')}`);
  }
  return policy;
}

function resolveOptions(options: FarMemoryOptions, caps: Capabilities): PagerOptions & { prefetch: string } {
  if (!options || typeof options !== 'object') throw invalidOption('options', options, 'an object with at least { nodes }');
  checkOptionNames(options, OPTION_NAMES, 'FarMemory.open()');
  if (!Array.isArray(options.nodes) || options.nodes.length === 0) {
    throw invalidOption('nodes', options.nodes, "a non-empty array of 'host:port' strings");
  }
  const nodes = options.nodes.map((n) => parseNodeAddress(n));
  const localBudget = sizeOption('localBudget', options.localBudget, 64 * 1024 * 1024, MIN_BUDGET_PAGES * PAGE_SIZE);
  const evictHighWater = fractionOption('evictHighWater', options.evictHighWater, 0.95);
  const evictLowWater = fractionOption('evictLowWater', options.evictLowWater, 0.85);
  if (evictLowWater > evictHighWater) {
    throw invalidOption('evictLowWater', evictLowWater, `at most evictHighWater (${evictHighWater})`);
  }
  if (options.userModeOnly !== undefined && typeof options.userModeOnly !== 'boolean') {
    throw invalidOption('userModeOnly', options.userModeOnly, 'a boolean');
  }
  return {
    nodes,
    token: stringOption('token', options.token, ''),
    namespaceKey: randomBytes(16),
    localBudget,
    prefetch: validatePrefetch('prefetch', options.prefetch, 'readahead'),
    stripePages: intOption('stripePages', options.stripePages, 64, 1, 1 << 20),
    maxRequestPages: intOption('maxRequestPages', options.maxRequestPages, 256, 1, 1024),
    evictHighWater,
    evictLowWater,
    maxPrefetchFraction: fractionOption('maxPrefetchFraction', options.maxPrefetchFraction, 0.25),
    faultBatch: intOption('faultBatch', options.faultBatch, 256, 1, 65536),
    connectTimeoutMs: intOption('connectTimeoutMs', options.connectTimeoutMs, 5000, 1, 3_600_000),
    requestTimeoutMs: intOption('requestTimeoutMs', options.requestTimeoutMs, 10_000, 0, 3_600_000),
    reconnectInitialMs: intOption('reconnectInitialMs', options.reconnectInitialMs, 50, 1, 3_600_000),
    reconnectMaxMs: intOption('reconnectMaxMs', options.reconnectMaxMs, 2000, 1, 3_600_000),
    userModeOnly: options.userModeOnly === true || caps.mode === 'user-only',
  };
}

/** Throws the error that says why far memory cannot work here, if it cannot. */
function requireUserfaultfd(): Capabilities {
  const caps = capabilities();
  if (!caps.platformSupported) {
    throw new FarmemError('FARMEM_UNSUPPORTED_PLATFORM', 'farmem regions need Linux with userfaultfd (memory nodes run anywhere)');
  }
  if (caps.mode === 'unavailable') {
    throw new FarmemError('FARMEM_UFFD_UNAVAILABLE', `userfaultfd is not available: ${caps.reason}`, { errno: caps.errno });
  }
  if (!caps.writeProtect) {
    // Without it a write racing an eviction or a flush would be lost, so there is no degraded mode.
    throw new FarmemError(
      'FARMEM_FEATURE_MISSING',
      `this kernel (${caps.kernelRelease}) does not offer userfaultfd write-protection of anonymous memory ` +
        `(UFFD_FEATURE_PAGEFAULT_FLAG_WP, Linux 5.7 and later), which farmem needs to see writes: run on a newer kernel`,
      { feature: 'UFFD_FEATURE_PAGEFAULT_FLAG_WP' },
    );
  }
  return caps;
}

export class FarMemory extends EventEmitter {
  readonly localBudget: number;
  /** 'kernel': faults from kernel-mode accesses are served too; 'user-only': they fail with EFAULT. */
  readonly mode: 'kernel' | 'user-only';
  private readonly worker: Worker;
  private readonly regions = new Map<number, Region>();
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private readonly defaultPrefetch: string;
  private seq = 0;
  private nextRegionId = 1;
  private closing: Promise<void> | null = null;
  private dead: FarmemError | null = null;
  private readonly freedTotals = new Float64Array(REGION_STATS_FLOATS);

  private constructor(worker: Worker, options: PagerOptions & { prefetch: string }, mode: 'kernel' | 'user-only') {
    super();
    this.worker = worker;
    this.localBudget = options.localBudget;
    this.defaultPrefetch = options.prefetch;
    this.mode = mode;
    worker.on('message', (message: PagerMessage) => this.onMessage(message));
    worker.on('error', (error) => this.onPagerGone(error));
    worker.on('exit', (code) => {
      if (!this.closing) this.onPagerGone(new Error(`pager thread exited with code ${code}`));
    });
  }

  /** Opens far memory on the given nodes: starts the pager thread and connects to every node. */
  static async open(options: FarMemoryOptions): Promise<FarMemory> {
    const caps = requireUserfaultfd();
    const resolved = resolveOptions(options, caps);
    const { prefetch: _prefetch, ...pagerOptions } = resolved;
    const worker = new Worker(path.join(__dirname, 'pager', 'worker.js'), { workerData: pagerOptions });
    await new Promise<void>((resolve, reject) => {
      const onMessage = (message: PagerMessage): void => {
        if (message.kind === 'ready') {
          cleanup();
          resolve();
        } else if (message.kind === 'open-failed') {
          cleanup();
          void worker.terminate();
          reject(FarmemError.fromJSON(message.error));
        }
      };
      const onError = (error: Error): void => {
        cleanup();
        reject(new FarmemError('FARMEM_PAGER_DIED', `pager thread failed to start: ${error.message}`, { cause: error }));
      };
      const cleanup = (): void => {
        worker.off('message', onMessage);
        worker.off('error', onError);
      };
      worker.on('message', onMessage);
      worker.on('error', onError);
    });
    const fm = new FarMemory(worker, resolved, caps.mode === 'user-only' || resolved.userModeOnly ? 'user-only' : 'kernel');
    worker.unref();
    return fm;
  }

  /** Allocates a region of `size` bytes (a number or a string like '512MiB'). */
  async allocate(size: number | string, options: AllocateOptions = {}): Promise<Region> {
    this.assertOpen();
    checkOptionNames(options, ['prefetch', 'prefetchOptions'], 'allocate()');
    const bytes = sizeOption('size', size, 0, 1);
    if (bytes > MAX_REGION_BYTES) {
      throw invalidOption(
        'size',
        size,
        `at most ${formatBytes(MAX_REGION_BYTES)}: a region is one ArrayBuffer, and this Node.js (${process.version}) ` +
          `makes none larger; allocate several regions`,
      );
    }
    const prefetch = validatePrefetch('prefetch', options.prefetch, this.defaultPrefetch);
    const prefetchOptions = options.prefetchOptions ?? {};
    // Policies are pure: building one here checks its options with clear errors, before the pager sees them.
    createPolicy(prefetch, prefetchOptions);
    const id = this.nextRegionId++;
    const stats = new SharedArrayBuffer(REGION_STATS_FLOATS * 8);
    const native = loadNative();
    const mapping = native.mapCreate(bytes);
    try {
      await this.request({ op: 'addRegion', id, base: mapping.address, size: bytes, stats, prefetch, prefetchOptions });
    } catch (error) {
      native.mapRelease(mapping.address, mapping.buffer);
      throw error;
    }
    const region = new Region(this, id, mapping.address, bytes, mapping.buffer, new Float64Array(stats));
    this.regions.set(id, region);
    return region;
  }

  /** Counters summed over every region this FarMemory has had. Synchronous. */
  stats(): FarMemoryStats {
    const sum = new Float64Array(this.freedTotals);
    for (const region of this.regions.values()) addInto(sum, region.statsArray);
    // Gauges count live regions only.
    for (const gauge of [C.residentPages, C.dirtyPages, C.inflightPages]) {
      sum[gauge] = 0;
      for (const region of this.regions.values()) sum[gauge] += region.statsArray[gauge];
    }
    return { ...readRegionStats(sum, PAGE_SIZE), regions: this.regions.size, localBudget: this.localBudget };
  }

  /** The state of each node's connections, and the local frames in use. */
  nodes(): Promise<{ nodes: Array<{ node: string; up: boolean; lost: boolean; inflight: number }>; frames: { used: number; total: number } }> {
    return this.request({ op: 'nodes' }) as never;
  }

  /** Writes back every dirty page of every region. */
  async flush(): Promise<void> {
    await this.request({ op: 'flush' });
  }

  /** Frees every region, says goodbye to the nodes and ends the pager thread. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      // The pager unregisters and drops the ranges first; only then may a mapping go away.
      if (!this.dead) {
        const exited = new Promise((resolve) => this.worker.once('exit', resolve));
        await this.request({ op: 'close' }, true).catch(() => undefined);
        await exited;
      }
      for (const region of [...this.regions.values()]) region.detach();
      this.regions.clear();
      for (const { reject } of this.pending.values()) reject(new FarmemError('FARMEM_CLOSED', 'FarMemory was closed'));
      this.pending.clear();
    })();
    return this.closing;
  }

  /** @internal */
  request(request: PagerRequest, duringClose = false): Promise<unknown> {
    if (this.dead) return Promise.reject(this.dead);
    if (this.closing && !duringClose) return Promise.reject(new FarmemError('FARMEM_CLOSED', 'FarMemory is closed'));
    const seq = ++this.seq;
    // Keep the process alive while an answer is owed; otherwise the pager thread doesn't hold it open.
    if (this.pending.size === 0) this.worker.ref();
    return new Promise((resolve, reject) => {
      this.pending.set(seq, { resolve, reject });
      this.worker.postMessage({ seq, request });
    });
  }

  /** @internal */
  forget(region: Region): void {
    addInto(this.freedTotals, region.statsArray);
    for (const gauge of [C.residentPages, C.dirtyPages, C.inflightPages]) this.freedTotals[gauge] = 0;
    this.regions.delete(region.id);
  }

  private assertOpen(): void {
    if (this.dead) throw this.dead;
    if (this.closing) throw new FarmemError('FARMEM_CLOSED', 'FarMemory is closed: open a new one');
  }

  private onMessage(message: PagerMessage): void {
    if (message.kind === 'reply') {
      const waiter = this.pending.get(message.seq);
      if (!waiter) return;
      this.pending.delete(message.seq);
      // While closing, the thread stays referenced until it has exited: close() waits for that.
      if (this.pending.size === 0 && !this.closing) this.worker.unref();
      if (message.ok) waiter.resolve(message.value);
      else waiter.reject(FarmemError.fromJSON(message.error));
    } else if (message.kind === 'event') {
      const detail = { ...message.detail };
      if (detail.error) detail.error = FarmemError.fromJSON(detail.error);
      this.emit(message.event, detail);
    }
  }

  private onPagerGone(cause: Error): void {
    if (this.dead) return;
    this.dead = new FarmemError('FARMEM_PAGER_DIED', `the pager thread died: ${cause.message}; regions of this FarMemory are gone`, { cause });
    // Detach every buffer: JS sees empty buffers rather than memory nobody serves.
    for (const region of this.regions.values()) region.detach();
    this.regions.clear();
    for (const { reject } of this.pending.values()) reject(this.dead);
    this.pending.clear();
    if (this.listenerCount('error') > 0) this.emit('error', this.dead);
  }
}

export class Region {
  /** @internal */
  readonly statsArray: Float64Array;
  private freed: Promise<void> | null = null;
  private detached = false;
  private liveBuffer: ArrayBuffer;

  /** @internal */
  constructor(
    private readonly owner: FarMemory,
    /** @internal */ readonly id: number,
    /** Address of the mapping in this process. */
    readonly address: number,
    /** Bytes, exactly as allocated. */
    readonly size: number,
    buffer: ArrayBuffer,
    stats: Float64Array,
  ) {
    this.liveBuffer = buffer;
    this.statsArray = stats;
  }

  /** The region's memory. After free() it is detached (byteLength 0). */
  get buffer(): ArrayBuffer {
    return this.liveBuffer;
  }

  stats(): RegionStats {
    return readRegionStats(this.statsArray, PAGE_SIZE);
  }

  /** Writes every dirty page back to the nodes; resolves once they all acknowledged. */
  async flush(): Promise<void> {
    this.assertLive();
    await this.owner.request({ op: 'flush', id: this.id });
  }

  /** Writes dirty pages back and drops every resident page: the next access of any page faults. */
  async evict(): Promise<void> {
    this.assertLive();
    await this.owner.request({ op: 'evict', id: this.id });
  }

  /** What another thread needs to reach this region: pass it to attachRegion() in a worker. */
  handle(): RegionHandle {
    this.assertLive();
    return { address: this.address, size: this.size };
  }

  /** Frees the region locally and on the nodes. The buffer is detached. Idempotent. */
  free(): Promise<void> {
    this.freed ??= this.owner.request({ op: 'freeRegion', id: this.id }).then(
      () => this.detach(),
      (error: FarmemError) => {
        this.detach();
        if (error.code !== 'FARMEM_CLOSED' && error.code !== 'FARMEM_REGION_FREED') throw error;
      },
    );
    return this.freed;
  }

  /** @internal Detaches the buffer and lets the mapping go once no thread holds a view. */
  detach(): void {
    if (this.detached) return;
    this.detached = true;
    this.freed ??= Promise.resolve();
    loadNative().mapRelease(this.address, this.liveBuffer);
    this.owner.forget(this);
  }

  private assertLive(): void {
    if (this.freed) throw new FarmemError('FARMEM_REGION_FREED', 'this region was freed: allocate a new one');
  }
}

/** In a worker thread: an ArrayBuffer over a region another thread allocated (from region.handle()). */
export function attachRegion(handle: RegionHandle): ArrayBuffer {
  if (!handle || typeof handle.address !== 'number' || typeof handle.size !== 'number') {
    throw invalidOption('handle', handle, 'the { address, size } object region.handle() returned');
  }
  return loadNative().mapAttach(handle.address);
}
