// The public API on the application's side: FarMemory opens a pager thread; Region is one far-memory
// ArrayBuffer. Everything here runs on the thread that opened the FarMemory (usually the main thread);
// it never serves faults, so it may block in one like any other thread.
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
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
import type { Advice, PagerOptions, PolicyReport } from './pager/pager';
import type { GuideSpec, PolicySpec } from './pager/policy-host';
import type { PagerMessage, PagerRequest } from './pager/worker';
import { BUILTIN_POLICIES, createPolicy } from './policies';
import { PAGE_SIZE } from './protocol';
import { REGION_STATS_FLOATS, StatsLedger, readRegionStats, type RegionStats } from './stats';
import { formatBytes } from './units';

export interface FarMemoryOptions {
  /** Memory nodes, as 'host:port' or { host, port }. Pages are striped over them. Required. */
  nodes: Array<string | { host: string; port: number }>;
  /** The token the nodes were started with. Default ''. */
  token?: string;
  /** Bytes of local memory the regions of this FarMemory may keep resident. Default '64MiB'. */
  localBudget?: number | string;
  /** Default prefetch policy of new regions: a built-in name ('none', 'readahead', 'stride', 'leap', 'history'). Default 'readahead'. */
  prefetch?: string;
  /**
   * Share of prefetched pages held unmapped until their first touch (a local fault, no network), so that
   * their use is seen and accuracy and coverage can be estimated. 0 to 1. Default 1/8192 (one page in 32 MiB
   * prefetched: each held page costs its first touch a local fault). While a region
   * records a trace, all of its prefetched pages are held.
   */
  prefetchSample?: number;
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
  /**
   * After demand work (a fetch a thread waits on, or a waiter woken), the pager thread's event loop keeps
   * polling its sockets and userfaultfd for up to this many µs instead of sleeping. 0 (default): never. It trades
   * CPU for latency where waking an idle CPU is slow, as in VMs (docs/benchmark-log.md, "Polling").
   */
  spinMicros?: number;
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
  /**
   * Whole 2 MiB blocks that a prefetch brings in land as one transparent huge page (UFFDIO_MOVE): no
   * page-by-page allocation, and the application's first touch of each page costs far less. 'auto'
   * (default): where the kernel offers it (Linux 6.8 and later, transparent huge pages not 'never');
   * true: required (FARMEM_FEATURE_MISSING if not offered); false: every page lands on its own.
   * `fm.hugePages` says which applies.
   */
  hugePages?: boolean | 'auto';
}

export interface AllocateOptions {
  /** Prefetch policy of this region: a built-in name or a policy module. Default: the FarMemory's `prefetch`. */
  prefetch?: string | PolicyModule;
  /** Options of a built-in policy (see docs/policies.md). Default {}. */
  prefetchOptions?: Record<string, unknown>;
}

/** A prefetch policy written by the application: a module exporting createPolicy(options, context) or a default factory. */
export interface PolicyModule {
  /** The module: a file: URL (`new URL('./my-policy.js', import.meta.url)`) or a file path. */
  module: URL | string;
  /** Passed to the factory. Default {}. */
  options?: Record<string, unknown>;
  /** Longest one call may run; a call past it is interrupted and the region falls back to 'none'. Default 5. */
  timeBudgetMs?: number;
}

/** A guide: a module whose function receives each fetched page's bytes and returns byte offsets to fetch next. */
export interface GuideModule {
  /** The module: exports guide(page, info), a default function, or createGuide(options). */
  module: URL | string;
  /** Passed to createGuide(). Default {}. */
  options?: Record<string, unknown>;
  /** Hops a chain of guided fetches may run ahead of the application's last known position. Default 16. */
  depth?: number;
  /** Longest one call may run. Default 5. */
  timeBudgetMs?: number;
}

export type { Advice, PolicyReport };

export interface RegionHandle {
  address: number;
  size: number;
}

export interface FarMemoryStats extends RegionStats {
  regions: number;
  localBudget: number;
}

const OPTION_NAMES = [
  'nodes', 'token', 'localBudget', 'prefetch', 'prefetchSample', 'stripePages', 'maxRequestPages', 'evictHighWater',
  'evictLowWater', 'maxPrefetchFraction', 'faultBatch', 'spinMicros', 'connectTimeoutMs', 'requestTimeoutMs',
  'reconnectInitialMs', 'reconnectMaxMs', 'userModeOnly', 'hugePages',
] as const;

const MIN_BUDGET_PAGES = 64;
/** A region is one ArrayBuffer, so V8's limit on those bounds it (4 GiB on Node 20), as does the protocol's page index. */
const MAX_REGION_BYTES = Math.min(2 ** 31 * PAGE_SIZE, MAX_BUFFER_BYTES);

/** @internal Also used by `farmem demo`, to refuse a bad `--prefetch` before it starts anything. */
export function validatePrefetch(name: string, value: unknown, fallback: string): string {
  const policy = stringOption(name, value, fallback);
  if (!(BUILTIN_POLICIES as readonly string[]).includes(policy)) {
    throw invalidOption(name, value, `one of ${BUILTIN_POLICIES.map((p) => `'${p}'`).join(', ')}`);
  }
  return policy;
}

/** @internal What a coffer's host decides for the coffer's far memory, beyond the user's options. */
export interface HostGrants {
  /** The namespace on every node: derived by the host, so that it can free it if the coffer dies. */
  namespaceKey?: Uint8Array;
  /** This client's share of each node's bandwidth against other clients (HELLO weight). Default 1. */
  weight?: number;
  /** Restrict the pager thread, once open, to the mappings of the thread with this addon id (restrictEnv). */
  restrictPagerTo?: number;
}

function resolveOptions(options: FarMemoryOptions, caps: Capabilities, grants: HostGrants = {}): PagerOptions & { prefetch: string } {
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
    namespaceKey: grants.namespaceKey ?? randomBytes(16),
    weight: grants.weight ?? 1,
    restrictTo: grants.restrictPagerTo ?? 0,
    localBudget,
    prefetch: validatePrefetch('prefetch', options.prefetch, 'readahead'),
    stripePages: intOption('stripePages', options.stripePages, 64, 1, 1 << 20),
    maxRequestPages: intOption('maxRequestPages', options.maxRequestPages, 256, 1, 1024),
    evictHighWater,
    evictLowWater,
    maxPrefetchFraction: fractionOption('maxPrefetchFraction', options.maxPrefetchFraction, 0.25),
    prefetchSample: sampleOption(options.prefetchSample),
    faultBatch: intOption('faultBatch', options.faultBatch, 256, 1, 65536),
    spinMicros: intOption('spinMicros', options.spinMicros, 0, 0, 10_000),
    connectTimeoutMs: intOption('connectTimeoutMs', options.connectTimeoutMs, 5000, 1, 3_600_000),
    requestTimeoutMs: intOption('requestTimeoutMs', options.requestTimeoutMs, 10_000, 0, 3_600_000),
    reconnectInitialMs: intOption('reconnectInitialMs', options.reconnectInitialMs, 50, 1, 3_600_000),
    reconnectMaxMs: intOption('reconnectMaxMs', options.reconnectMaxMs, 2000, 1, 3_600_000),
    userModeOnly: options.userModeOnly === true || caps.mode === 'user-only',
    hugePages: hugePagesOption(options.hugePages, caps),
  };
}

/** Whether whole blocks land as huge pages: 'auto' where the kernel offers it, true only if it does. */
function hugePagesOption(value: unknown, caps: Capabilities): boolean {
  if (value !== undefined && value !== 'auto' && typeof value !== 'boolean') {
    throw invalidOption('hugePages', value, "true, false or 'auto'");
  }
  const thp = caps.transparentHugepages === 'always' || caps.transparentHugepages === 'madvise';
  const offered = caps.move && thp;
  if (value === true && !offered) {
    const missing = !caps.move
      ? `UFFDIO_MOVE (Linux 6.8 and later; this is ${caps.kernelRelease})`
      : `transparent huge pages (/sys/kernel/mm/transparent_hugepage/enabled is '${caps.transparentHugepages || 'absent'}'; ` +
        "set it to 'madvise')";
    throw new FarmemError('FARMEM_FEATURE_MISSING', `hugePages: true needs ${missing}: upgrade, or use hugePages: 'auto'`, {
      feature: caps.move ? 'transparent_hugepage' : 'UFFDIO_MOVE',
    });
  }
  return value !== false && offered;
}

function sampleOption(value: unknown): number {
  if (value === undefined) return 1 / 8192;
  if (typeof value !== 'number' || !(value >= 0 && value <= 1)) {
    throw invalidOption('prefetchSample', value, 'a number from 0 (measure nothing) to 1 (hold every prefetched page until touched)');
  }
  return value;
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
  /** Whether whole 2 MiB blocks land as transparent huge pages (the hugePages option, resolved). */
  readonly hugePages: boolean;
  private readonly worker: Worker;
  private readonly regions = new Map<number, Region>();
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private readonly defaultPrefetch: string;
  private seq = 0;
  private nextRegionId = 1;
  private closing: Promise<void> | null = null;
  private dead: FarmemError | null = null;
  private readonly ledger = new StatsLedger();

  private constructor(worker: Worker, options: PagerOptions & { prefetch: string }, mode: 'kernel' | 'user-only') {
    super();
    this.worker = worker;
    this.localBudget = options.localBudget;
    this.defaultPrefetch = options.prefetch;
    this.mode = mode;
    this.hugePages = options.hugePages;
    worker.on('message', (message: PagerMessage) => this.onMessage(message));
    worker.on('error', (error) => this.onPagerGone(error));
    worker.on('exit', (code) => {
      if (!this.closing) this.onPagerGone(new Error(`pager thread exited with code ${code}`));
    });
  }

  /** Opens far memory on the given nodes: starts the pager thread and connects to every node. */
  static async open(options: FarMemoryOptions, /** @internal */ grants?: HostGrants): Promise<FarMemory> {
    const caps = requireUserfaultfd();
    const resolved = resolveOptions(options, caps, grants);
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
    if (options === null || typeof options !== 'object') throw invalidOption('options', options, 'an object');
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
    if (typeof options.prefetch === 'object' && options.prefetchOptions !== undefined) {
      throw invalidOption('prefetchOptions', options.prefetchOptions, 'nothing: a policy module takes its options in prefetch.options');
    }
    const prefetch = policySpec(options.prefetch ?? this.defaultPrefetch, options.prefetchOptions, 'prefetch');
    const id = this.nextRegionId++;
    const stats = new SharedArrayBuffer(REGION_STATS_FLOATS * 8);
    const native = loadNative();
    const mapping = native.mapCreate(bytes);
    try {
      await this.request({ op: 'addRegion', id, base: mapping.address, size: bytes, stats, prefetch });
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
    const sum = this.ledger.total([...this.regions.values()].map((region) => region.statsArray));
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
    this.ledger.retire(region.statsArray);
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
      // Events about one region reach that region's listeners too.
      if (typeof detail.region === 'number') this.regions.get(detail.region)?.emit(message.event, detail);
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

export class Region extends EventEmitter {
  /** @internal */
  readonly statsArray: Float64Array;
  /** Records this region's faults to a file, for `farmem replay`. */
  readonly trace: RegionTrace;
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
    super();
    this.liveBuffer = buffer;
    this.statsArray = stats;
    this.trace = {
      start: async (file: string) => {
        this.assertLive();
        if (typeof file !== 'string' || file === '') throw invalidOption('file', file, 'a file path');
        await this.owner.request({ op: 'traceStart', id: this.id, file: path.resolve(file) });
      },
      stop: async () => {
        this.assertLive();
        return (await this.owner.request({ op: 'traceStop', id: this.id })) as { file: string; faults: number };
      },
    };
  }

  /**
   * Switches the region's prefetch policy while the application keeps faulting: a built-in name with its
   * options, or a policy module. Resolves once the new policy is in charge.
   */
  async setPrefetch(policy: string | PolicyModule, options?: Record<string, unknown>): Promise<void> {
    this.assertLive();
    if (typeof policy === 'object' && options !== undefined) {
      throw invalidOption('options', options, 'nothing: a policy module takes its options in { module, options }');
    }
    await this.owner.request({ op: 'setPrefetch', id: this.id, prefetch: policySpec(policy, options, 'policy') });
  }

  /** Sets the region's guide, or removes it with null. */
  async setGuide(guide: GuideModule | URL | string | null): Promise<void> {
    this.assertLive();
    await this.owner.request({ op: 'setGuide', id: this.id, guide: guide === null ? null : guideSpec(guide) });
  }

  /**
   * The application's hint for bytes [offset, offset + length): 'sequential' (prefetch far ahead there),
   * 'random' (no prefetch there), 'normal' (undo both), 'willneed' (fetch it now, into free local memory),
   * 'dontneed' (write back and drop its local pages; the data stays). Resolves with the pages affected.
   */
  async advise(offset: number, length: number, advice: Advice): Promise<{ pages: number }> {
    this.assertLive();
    const start = intOption('offset', offset, 0, 0, this.size);
    const bytes = intOption('length', length, 0, 0, this.size - start);
    if (!ADVICE.includes(advice)) throw invalidOption('advice', advice, `one of ${ADVICE.map((a) => `'${a}'`).join(', ')}`);
    const first = Math.floor(start / PAGE_SIZE);
    const end = Math.ceil((start + bytes) / PAGE_SIZE);
    if (end <= first) return { pages: 0 };
    return (await this.owner.request({ op: 'advise', id: this.id, first, count: end - first, advice })) as { pages: number };
  }

  /** What each policy, guide and advice of this region did, oldest first: prefetches, use, accuracy, coverage. */
  async policyStats(): Promise<PolicyReport[]> {
    this.assertLive();
    return (await this.owner.request({ op: 'policyStats', id: this.id })) as PolicyReport[];
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

export interface RegionTrace {
  /** Starts recording every fault of the region to `file` (overwritten). While it records, every prefetched page is held until touched, so the trace misses no page the application reached. */
  start(file: string): Promise<void>;
  /** Stops, writes what is left and closes the file. */
  stop(): Promise<{ file: string; faults: number }>;
}

const ADVICE: readonly Advice[] = ['normal', 'sequential', 'random', 'willneed', 'dontneed'];
const MODULE_OPTIONS = ['module', 'options', 'timeBudgetMs'];

/** @internal A module reference as the pager thread or a coffer can import it: a file: URL string. */
export function moduleUrl(name: string, value: unknown): string {
  if (value instanceof URL) {
    if (value.protocol !== 'file:') throw invalidOption(name, value.href, 'a file: URL');
    return value.href;
  }
  if (typeof value === 'string' && value !== '') {
    if (value.startsWith('file:')) return value;
    if (value.startsWith('.') || path.isAbsolute(value)) return pathToFileURL(path.resolve(value)).href;
  }
  throw invalidOption(
    name,
    value,
    "a file: URL or a file path (new URL('./my-policy.js', import.meta.url), or require.resolve('pkg/policy') for a package)",
  );
}

function optionsObject(name: string, value: unknown): Record<string, unknown> {
  if (value === undefined) return {};
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw invalidOption(name, value, 'an object');
  return value as Record<string, unknown>;
}

function policySpec(policy: unknown, options: unknown, name: string): PolicySpec {
  if (typeof policy === 'string') {
    if (!(BUILTIN_POLICIES as readonly string[]).includes(policy)) {
      throw invalidOption(name, policy, `one of ${BUILTIN_POLICIES.map((p) => `'${p}'`).join(', ')}, or { module } for your own`);
    }
    const builtinOptions = optionsObject(`${name}Options`, options);
    // Built-ins are pure: building one here checks its options with clear errors, before the pager sees them.
    createPolicy(policy, builtinOptions);
    return { kind: 'builtin', name: policy, options: builtinOptions };
  }
  if (policy === null || typeof policy !== 'object') {
    throw invalidOption(name, policy, "a built-in policy name or { module, options?, timeBudgetMs? }");
  }
  checkOptionNames(policy, MODULE_OPTIONS, `the ${name} module`);
  const spec = policy as PolicyModule;
  return {
    kind: 'module',
    url: moduleUrl(`${name}.module`, spec.module),
    options: optionsObject(`${name}.options`, spec.options),
    timeBudgetMs: intOption(`${name}.timeBudgetMs`, spec.timeBudgetMs, 5, 1, 60_000),
  };
}

function guideSpec(guide: unknown): GuideSpec {
  const spec: GuideModule = guide instanceof URL || typeof guide === 'string' ? { module: guide } : (guide as GuideModule);
  if (spec === null || typeof spec !== 'object') throw invalidOption('guide', guide, '{ module, options?, depth?, timeBudgetMs? } or null');
  checkOptionNames(spec, ['module', 'options', 'depth', 'timeBudgetMs'], 'the guide');
  return {
    url: moduleUrl('guide.module', spec.module),
    options: optionsObject('guide.options', spec.options),
    depth: intOption('guide.depth', spec.depth, 16, 1, 4096),
    timeBudgetMs: intOption('guide.timeBudgetMs', spec.timeBudgetMs, 5, 1, 60_000),
  };
}

/** In a worker thread: an ArrayBuffer over a region another thread allocated (from region.handle()). */
export function attachRegion(handle: RegionHandle): ArrayBuffer {
  if (!handle || typeof handle.address !== 'number' || typeof handle.size !== 'number') {
    throw invalidOption('handle', handle, 'the { address, size } object region.handle() returned');
  }
  return loadNative().mapAttach(handle.address);
}
