// The pager: resolves userfaultfd faults from memory nodes, prefetches, keeps resident pages under the
// local budget and writes dirty pages back before dropping them.
//
// Runs on the pager thread (a worker of its own, see worker.ts), and only there: every method below
// runs on that thread's event loop. It must never touch a non-resident page of its own regions, or it
// would wait for itself; it reads region memory only through readOut() of pages it has just
// write-protected, which are resident.
import * as fs from 'node:fs';
import * as os from 'node:os';
import { FarmemError } from '../errors';
import { formatBytes } from '../units';
import { COPY_DONTWAKE, COPY_WP, FAULT_FLAG_WP, FAULT_FLAG_WRITE, loadNative, type NativeBinding, type UffdHandle } from '../native';
import { PAGE_SIZE } from '../protocol';
import { NoPrefetch } from '../policies';
import { checkAnswer } from '../policies/check-answer';
import { C, HISTOGRAM_OFFSET, bucketOf, prefetchAccounting, type PrefetchAccounting } from '../stats';
import { DropBatch } from './drop-batch';
import { TraceRecorder } from './trace-recorder';
import { Transport, type NodeAddress } from '../transport/transport';
import { LoopSpinner } from '../loop-spinner';
import { FrameTable } from './frames';
import { PageState, PageTable } from './page-table';
import {
  TIMED_OUT,
  callGuide,
  callPolicy,
  guidePages,
  loadGuide,
  loadPolicy,
  type ActiveGuide,
  type ActivePolicy,
  type GuideSpec,
  type PolicySpec,
} from './policy-host';

export interface PagerOptions {
  nodes: NodeAddress[];
  token: string;
  namespaceKey: Uint8Array;
  localBudget: number;
  stripePages: number;
  maxRequestPages: number;
  evictHighWater: number;
  evictLowWater: number;
  maxPrefetchFraction: number;
  faultBatch: number;
  /** Keep the event loop polling (LoopSpinner) this long after demand work, rather than sleep; 0: never. */
  spinMicros: number;
  /** Share of prefetched pages held unmapped until first touch, to measure accuracy. */
  prefetchSample: number;
  /** This client's weight in each node's fair queueing (HELLO). */
  weight: number;
  /** Nonzero in a coffer: once open, this thread may reach only the mappings of that thread (restrictEnv). */
  restrictTo: number;
  connectTimeoutMs: number;
  requestTimeoutMs: number;
  reconnectInitialMs: number;
  reconnectMaxMs: number;
  userModeOnly: boolean;
  /** Whole blocks a prefetch covers land as one huge page (moveIn); resolved against the kernel by FarMemory. */
  hugePages: boolean;
}

export interface PagerEvents {
  /** Something the application should hear about: a node went down, came back, was lost, a write failed. */
  notify(event: string, detail: Record<string, unknown>): void;
}

/** A page that was handed back to the node: the pager keeps this copy until the node acknowledges it. */
interface WriteCopy {
  data: Buffer;
  offset: number;
}

/** What one policy (or a guide, or the region's advice) did while it was in charge. */
export interface PolicyRecord {
  name: string;
  kind: 'policy' | 'guide' | 'advice';
  /** Date.now() when it took over, and when it was replaced (null while active). */
  since: number;
  until: number | null;
  /** Why it stopped, when it misbehaved. */
  error: string | null;
  /** Faults it was asked about. */
  calls: number;
  /** Pages fetched because a fault found them missing while it was in charge. */
  demandFetches: number;
  prefetched: number;
  used: number;
  sampled: number;
  sampledUsed: number;
  sampledUnused: number;
}

export type PolicyReport = Omit<PolicyRecord, 'sampledUsed' | 'sampledUnused'> & PrefetchAccounting;

export type Advice = 'normal' | 'sequential' | 'random' | 'willneed' | 'dontneed';

const enum AdviceKind {
  Sequential = 1,
  Random = 2,
}

interface AdviceRange {
  first: number;
  end: number;
  kind: AdviceKind;
}

interface RegionGuide extends ActiveGuide {
  record: number;
  /** Pages whose hop is below this are followed; it moves to hop + depth when the application reaches a guided page. */
  limit: number;
  /** Resident guided pages not followed yet (they were at the limit): [page, hop] pairs. */
  frontier: number[];
}

/** Pages ahead of a fault in a range advised 'sequential'. */
const SEQUENTIAL_ADVICE_WINDOW = 512;
/** Most frontier pages a guide keeps to resume from. */
const MAX_GUIDE_FRONTIER = 256;
/** Streams per region whose passed pages are tracked, and how far apart two of a stream's hits may be. */
const PASS_STREAMS = 8;
const PASS_SPAN = 2048;
/** Clean pages made writable at once ahead of a sequential writer (see onWriteProtectFault). */
const WRITE_AROUND_PAGES = 64;
/** How far apart (in pages) two dirty pages of one write-back may lie and still be protected by one call. */
const MAX_PROTECT_GAP = 64;
/**
 * Eviction compares this many of the oldest frames for each frame it frees (FrameTable.refaultGap), and
 * at most this share of the frames in use. Reaching further keeps more hot pages and costs pages still
 * in use: on kv at 25% local, 13% fewer demand fetches with no share limit, 8% at 0.35, 4% at 0.25;
 * quicksort with no prefetch took 16%, 6% and 0% more (docs/benchmark-log.md, 2026-12-04, late night).
 */
const EVICTION_WINDOW = 8;
const EVICTION_WINDOW_SHARE = 0.35;
/** A block: the aligned 2 MiB that one transparent huge page maps (hugePages). Regions are 2 MiB aligned. */
const BLOCK_SHIFT = 9;
const BLOCK_PAGES = 1 << BLOCK_SHIFT;
const BLOCK_MASK = BLOCK_PAGES - 1;
/** Above this share of whole blocks split by writes, no block is waited for (PagerRegion.writtenBlocksShare). */
const WRITTEN_BLOCKS_SHARE = 0.5;
const BLOCK_BYTES = BLOCK_PAGES * PAGE_SIZE;
/** Most blocks assembling at once, each in a BLOCK_BYTES buffer of the pager's. */
const MAX_ASSEMBLIES = 16;

/** What a region's block is doing (hugePages). Correctness never depends on it: it only says whether a
 *  block can be brought in, and later dropped, as one huge page. */
const enum BlockState {
  /** Its pages come and go one by one. */
  Pages = 0,
  /** Every page is being fetched into one assembly buffer, to land together by moveIn. */
  Assembling = 1,
  /** Landed by moveIn and untouched page by page since: every page is Clean, and it leaves whole. */
  Whole = 2,
}

/** What claimBlock made of a block. */
const enum Claim {
  Taken,
  /** A page of it is not remote (or blocks cannot land whole here): its pages go one by one. */
  NotWhole,
  /** Every page is remote, but frames, the prefetch limit or assembly buffers are short for now. */
  NoRoom,
}

/** A block's pages as they arrive, until all have. */
interface Assembly {
  data: Buffer;
  arrived: number;
}

interface PagerRegion {
  id: number;
  base: number;
  size: number;
  pages: number;
  table: PageTable;
  stats: Float64Array;
  policy: ActivePolicy;
  /** Index in records of the active policy. */
  policyRecord: number;
  /** Its prefetched pages known used since it was last called. */
  usedSinceCall: number;
  /** Last prefetch hit of each sequential stream seen, for eviction of the pages streams pass. */
  passPositions: number[];
  /** BlockState per whole block, or null when this region's blocks never land whole (hugePages off). */
  blocks: Uint8Array | null;
  /** The blocks Assembling, by block index. */
  assemblies: Map<number, Assembly>;
  /**
   * Moving share of whole blocks that a write split, of those that ended (split by a write, or evicted
   * whole): each end moves it 1/8 of the way to 1 or to 0. Above WRITTEN_BLOCKS_SHARE, a block asked for
   * whole is not worth waiting for (see prefetchRanges).
   */
  writtenBlocksShare: number;
  records: PolicyRecord[];
  adviceRecord: number;
  advice: AdviceRange[];
  guide: RegionGuide | null;
  sampleRate: number;
  /** Accumulates sampleRate per prefetched page; a page is sampled each time it passes 1. */
  sampleCredit: number;
  trace: TraceRecorder | null;
  nodeIds: number[];
  writesInFlight: number;
  flushWaiters: Array<{ resolve: () => void; reject: (e: Error) => void }>;
  writeError: FarmemError | null;
  freed: boolean;
}

const enum Deferred {
  ReadMissing = 0,
  WriteMissing = 1,
  WriteProtect = 2,
}

const KEY_SPAN = 2 ** 31;

const enum Landing {
  Clean = 0,
  Writable = 1,
  Held = 2,
}

export class Pager {
  private readonly native: NativeBinding;
  /** Evictions drop their pages in one call (drop-batch.ts). */
  private readonly drops: DropBatch;
  private uffd: UffdHandle | null = null;
  private readonly events: Float64Array;
  private readonly frames: FrameTable;
  private readonly transport: Transport;
  private readonly regions = new Map<number, PagerRegion>();
  /** Regions sorted by base address, for the fault path's lookup. */
  private sorted: PagerRegion[] = [];
  private lastHit: PagerRegion | null = null;
  private readonly writeCopies = new Map<number, WriteCopy>();
  /** Data of Held pages, by frame. */
  private readonly heldData = new Map<number, Buffer>();
  private readonly highFrames: number;
  private readonly lowFrames: number;
  private readonly maxPrefetchPages: number;
  private prefetchInflight = 0;
  /** Zeros to copy from: one request's worth of pages. */
  private readonly zeros: Buffer;
  /** /proc/self/pagemap, to tell a zero-mapped page from one a racing writer made private; -1 if unreadable. */
  private readonly pagemap: number;
  /** Faults that found no free frame (every frame in flight); retried when fetches land. */
  private deferred: number[] = [];
  // Per fault batch: pages to fetch, as keys region*2^31+page.
  private demand: number[] = [];
  private prefetch: number[] = [];
  private closed = false;
  /** Polls rather than sleeps after demand work (spinMicros). */
  private readonly spinner: LoopSpinner;
  /** Frames a thread waits on (faultAt set): the spin after a served waiter ends when none is left, on one CPU. */
  private waiting = 0;
  /**
   * The process may run on one CPU only (its affinity, as `taskset -c 0` sets it). Then a thread just
   * woken needs that CPU, which a spin would share with it, and its next fault hands the CPU straight
   * back to this thread: there is no idle CPU to wake. So on one CPU the spin lasts while threads wait.
   */
  private readonly oneCpu = os.availableParallelism() === 1;
  /** Assembly buffers not in use, and how many may be in use at once (0: blocks never land whole). */
  private readonly spareAssemblies: Buffer[] = [];
  /**
   * Write-back buffers (maxRequestPages pages each) whose write a node acknowledged, kept for the next
   * write-backs: a fresh one costs a page fault a page on first use. At most maxSpareWriteBuffers.
   */
  private readonly spareWriteBuffers: ArrayBuffer[] = [];
  private readonly maxSpareWriteBuffers: number;
  private assembliesInUse = 0;
  private readonly maxAssemblies: number;
  /** moveIn's answer: which pages of the block were written before they were write-protected. */
  private readonly movedWritten = new Uint8Array(BLOCK_PAGES);

  constructor(
    private readonly options: PagerOptions,
    private readonly listener: PagerEvents,
  ) {
    this.native = loadNative();
    this.drops = new DropBatch(this.native);
    this.events = new Float64Array(options.faultBatch * 3);
    const frameCount = Math.floor(options.localBudget / PAGE_SIZE);
    this.frames = new FrameTable(frameCount);
    this.highFrames = Math.max(1, Math.floor(frameCount * options.evictHighWater));
    this.spinner = new LoopSpinner(options.spinMicros);
    this.lowFrames = Math.max(0, Math.floor(frameCount * options.evictLowWater));
    this.maxPrefetchPages = Math.max(0, Math.floor(frameCount * options.maxPrefetchFraction));
    this.maxAssemblies = options.hugePages ? Math.min(MAX_ASSEMBLIES, Math.floor(this.maxPrefetchPages / BLOCK_PAGES)) : 0;
    this.zeros = Buffer.alloc(options.maxRequestPages * PAGE_SIZE);
    // An eighth of the budget at most: a write-back burst's worth, without keeping much idle memory.
    this.maxSpareWriteBuffers = Math.max(2, Math.min(64, Math.floor(options.localBudget / 8 / this.zeros.length)));
    let pagemap = -1;
    try {
      pagemap = fs.openSync('/proc/self/pagemap', 'r');
    } catch {
      // Without it, evict() writes every zero-mapped page back rather than guess (see privatelyWritten).
    }
    this.pagemap = pagemap;
    this.transport = new Transport(
      {
        nodes: options.nodes,
        token: options.token,
        namespaceKey: Buffer.from(options.namespaceKey),
        weight: options.weight,
        stripePages: options.stripePages,
        connectTimeoutMs: options.connectTimeoutMs,
        requestTimeoutMs: options.requestTimeoutMs,
        reconnectInitialMs: options.reconnectInitialMs,
        reconnectMaxMs: options.reconnectMaxMs,
      },
      {
        onNodeDown: (node, error) => listener.notify('node-down', { node, error: error.toJSON() }),
        onNodeUp: (node) => listener.notify('node-up', { node }),
        onNodeLost: (node, error) => listener.notify('node-lost', { node, error: error.toJSON() }),
      },
    );
  }

  async open(): Promise<void> {
    await this.transport.open();
    this.uffd = new this.native.Uffd({
      userModeOnly: this.options.userModeOnly,
      // Required (FarMemory.open checks): without it no eviction or flush could be made safe.
      writeProtect: true,
      events: this.events,
      onFaults: (count) => this.onFaults(count),
    });
    // A coffer's policy modules run on this thread: from here on, it reaches its coffer's regions only.
    if (this.options.restrictTo !== 0) this.native.restrictEnv(this.options.restrictTo);
  }

  // ---- regions -------------------------------------------------------------------------------

  async addRegion(id: number, base: number, size: number, stats: Float64Array, prefetch: PolicySpec): Promise<void> {
    const pages = Math.ceil(size / PAGE_SIZE);
    const policy = await loadPolicy(this.native, prefetch, pages, this.frames.size);
    let table: PageTable;
    try {
      table = new PageTable(id, pages);
    } catch (error) {
      throw new FarmemError(
        'FARMEM_INVALID_OPTION',
        `a region of ${pages} pages needs ${formatBytes(pages * PageTable.BYTES_PER_PAGE)} of page table in the ` +
          `pager thread, which could not be allocated: allocate smaller regions`,
        { option: 'size', cause: error },
      );
    }
    const nodeIds = await this.transport.alloc(pages);
    const region: PagerRegion = {
      id,
      base,
      size,
      pages,
      table,
      stats,
      policy,
      policyRecord: 0,
      usedSinceCall: 0,
      passPositions: [],
      // Block i must be pages [512 i, 512 i + 512) of a 2 MiB-aligned mapping (mapCreate aligns regions that large).
      blocks: this.maxAssemblies > 0 && base % BLOCK_BYTES === 0 && pages >= BLOCK_PAGES ? new Uint8Array(pages >> BLOCK_SHIFT) : null,
      assemblies: new Map(),
      writtenBlocksShare: 0,
      records: [newRecord(policy.name, 'policy')],
      adviceRecord: -1,
      advice: [],
      guide: null,
      sampleRate: this.options.prefetchSample,
      sampleCredit: 0,
      trace: null,
      nodeIds,
      writesInFlight: 0,
      flushWaiters: [],
      writeError: null,
      freed: false,
    };
    try {
      this.uffd!.register(base, pages * PAGE_SIZE, true);
    } catch (error) {
      await this.transport.free(nodeIds).catch(() => undefined);
      throw error;
    }
    this.regions.set(id, region);
    this.sorted = [...this.regions.values()].sort((a, b) => a.base - b.base);
  }

  /** Frees the region here and, unless `remote` is false, on the nodes (bounded by requestTimeoutMs). */
  async freeRegion(id: number, remote = true): Promise<void> {
    const region = this.mustRegion(id);
    region.freed = true;
    this.regions.delete(id);
    this.sorted = this.sorted.filter((r) => r !== region);
    if (this.lastHit === region) this.lastHit = null;
    // Unregistering wakes any thread still waiting on the range (it then sees plain zero-filled memory).
    // The allocating thread detaches its buffer only after this returns, so the mapping is still there.
    this.uffd!.unregister(region.base, region.pages * PAGE_SIZE);
    this.native.dropRange(region.base, region.pages * PAGE_SIZE);
    // A socket may still be receiving into these buffers (assemblyView): they are not reused.
    this.assembliesInUse -= region.assemblies.size;
    region.assemblies.clear();
    const frames = this.frames;
    for (let f = 0; f < frames.size; f++) {
      if (frames.region[f] === id) {
        if (region.table.get(frames.page[f]) === PageState.Fetching && frames.prefetched[f]) {
          this.prefetchInflight--;
        }
        if (frames.faultAt[f] > 0) this.waiting--;
        this.heldData.delete(f);
        frames.release(f);
      }
    }
    for (const key of this.writeCopies.keys()) {
      if (Math.floor(key / KEY_SPAN) === id) this.writeCopies.delete(key);
    }
    const kept: number[] = [];
    for (let i = 0; i < this.deferred.length; i += 3) {
      if (this.deferred[i] !== id) kept.push(this.deferred[i], this.deferred[i + 1], this.deferred[i + 2]);
    }
    this.deferred = kept;
    for (const waiter of region.flushWaiters) waiter.resolve();
    region.flushWaiters = [];
    this.publish(region);
    if (region.trace) await region.trace.stop().catch(() => undefined);
    region.trace = null;
    if (!remote) return;
    // A node that is down frees the namespace itself after its orphan timeout; don't wait forever.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.transport.free(region.nodeIds).catch(() => undefined),
      new Promise<void>((resolve) => (timer = setTimeout(resolve, this.options.requestTimeoutMs))),
    ]);
    clearTimeout(timer);
  }

  /** Writes back every dirty page of the region (or of all regions) and waits for the nodes to acknowledge. */
  flush(id?: number): Promise<void> {
    const targets = id === undefined ? [...this.regions.values()] : [this.mustRegion(id)];
    for (const region of targets) {
      const pages = this.pagesInState(region, PageState.Dirty);
      this.writeBack(region, pages, false);
      this.publish(region);
    }
    return Promise.all(targets.map((region) => this.whenWritten(region))).then(() => undefined);
  }

  /** Writes back dirty pages and drops every local page of the region (or of [first, end)): the next access faults. */
  async evictRegion(id: number, first = 0, end = Infinity): Promise<void> {
    const region = this.mustRegion(id);
    const inRange = (p: number): boolean => p >= first && p < end;
    this.drops.begin();
    try {
      this.writeBack(region, this.pagesInState(region, PageState.Dirty).filter(inRange), true);
      this.dropClean(region, this.pagesInState(region, PageState.Clean).filter(inRange));
      this.dropHeld(region, this.pagesInState(region, PageState.Held).filter(inRange));
      const zeroMapped = this.pagesInState(region, PageState.ZeroMapped).filter(inRange);
      const written = this.privatelyWritten(region, zeroMapped);
      this.writeBack(region, zeroMapped.filter((_, i) => written[i] === 1), true);
      forEachRun(zeroMapped.filter((_, i) => written[i] === 0), Infinity, Infinity, (first, count) => {
        for (let p = first; p < first + count; p++) region.table.move(p, PageState.Untouched);
        this.drops.drop(region.base + first * PAGE_SIZE, count * PAGE_SIZE);
      });
    } finally {
      this.drops.end();
    }
    this.publish(region);
    await this.whenWritten(region);
  }

  /**
   * Replaces the region's policy. The module (if any) is loaded first; the switch itself happens between
   * two fault batches, so no fault sees half of it. Pages in flight keep their issuer's accounting.
   */
  async setPrefetch(id: number, spec: PolicySpec): Promise<void> {
    const region = this.mustRegion(id);
    const policy = await loadPolicy(this.native, spec, region.pages, this.frames.size);
    if (region.freed) throw new FarmemError('FARMEM_REGION_FREED', `region ${id} was freed`);
    this.installPolicy(region, policy);
  }

  /** Sets (or with null removes) the region's guide. */
  async setGuide(id: number, spec: GuideSpec | null): Promise<void> {
    const region = this.mustRegion(id);
    const guide = spec === null ? null : await loadGuide(this.native, spec);
    if (region.freed) throw new FarmemError('FARMEM_REGION_FREED', `region ${id} was freed`);
    if (region.guide) region.records[region.guide.record].until = Date.now();
    if (guide === null) {
      region.guide = null;
      return;
    }
    region.records.push(newRecord(`guide ${guide.name}`, 'guide'));
    region.guide = { ...guide, record: region.records.length - 1, limit: guide.depth, frontier: [] };
  }

  /** The application's hint for pages [first, first + count). */
  async advise(id: number, first: number, count: number, advice: Advice): Promise<{ pages: number }> {
    const region = this.mustRegion(id);
    const end = Math.min(region.pages, first + count);
    switch (advice) {
      case 'normal':
      case 'sequential':
      case 'random': {
        const kept: AdviceRange[] = [];
        for (const range of region.advice) {
          // Later advice replaces earlier advice where they overlap.
          if (range.first < first) kept.push({ ...range, end: Math.min(range.end, first) });
          if (range.end > end) kept.push({ ...range, first: Math.max(range.first, end) });
        }
        if (advice !== 'normal') kept.push({ first, end, kind: advice === 'sequential' ? AdviceKind.Sequential : AdviceKind.Random });
        region.advice = kept.filter((r) => r.end > r.first).sort((a, b) => a.first - b.first);
        return { pages: end - first };
      }
      case 'willneed': {
        const before = region.stats[C.prefetched];
        this.prefetchRanges(region, [[first, end - first]], this.adviceRecord(region), -1, false, true);
        this.issueFetches();
        return { pages: region.stats[C.prefetched] - before };
      }
      case 'dontneed': {
        const before = region.stats[C.evictions];
        await this.evictRegion(id, first, end);
        return { pages: region.stats[C.evictions] - before };
      }
    }
  }

  /** Starts recording the region's faults to `file` (see trace-file.ts). While it records, every prefetched page is held until touched. */
  async traceStart(id: number, file: string): Promise<void> {
    const region = this.mustRegion(id);
    if (region.trace) {
      throw new FarmemError('FARMEM_INVALID_OPTION', `region ${id} is already recording a trace to ${region.trace.file}: stop it first`);
    }
    region.trace = await TraceRecorder.open(file, {
      regionPages: region.pages,
      policy: region.policy.name,
      localBudgetPages: this.frames.size,
    });
    region.sampleRate = 1;
  }

  async traceStop(id: number): Promise<{ file: string; faults: number }> {
    const region = this.mustRegion(id);
    const trace = region.trace;
    if (!trace) throw new FarmemError('FARMEM_INVALID_OPTION', `region ${id} is not recording a trace: call trace.start(file) first`);
    region.trace = null;
    region.sampleRate = this.options.prefetchSample;
    return trace.stop();
  }

  /** What each policy, guide and advice of the region did, oldest first. */
  policyStats(id: number): PolicyReport[] {
    const region = this.mustRegion(id);
    return region.records.map((r) => {
      const { sampledUsed: _u, sampledUnused: _n, ...rest } = r;
      return { ...rest, ...prefetchAccounting(r, PAGE_SIZE) };
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.spinner.stop();
    // BYE frees every region of this client on the nodes at once.
    for (const id of [...this.regions.keys()]) await this.freeRegion(id, false);
    await this.transport.close();
    this.uffd?.close();
    this.uffd = null;
    if (this.pagemap >= 0) fs.closeSync(this.pagemap);
  }

  /**
   * For zero-mapped pages (sorted): 1 where the page is no longer the shared zero page. A zero page is
   * installed by UFFDIO_ZEROPAGE and write-protected by a second ioctl; a thread that writes the page
   * between the two copies it privately without a fault reaching us. pagemap's "exclusively mapped" bit
   * (56) tells such a page from the zero page. Unreadable pagemap: every page counts as written.
   */
  private privatelyWritten(region: PagerRegion, pages: number[]): Uint8Array {
    const written = new Uint8Array(pages.length);
    if (this.pagemap < 0) return written.fill(1);
    const entries = Buffer.alloc(8 * 512);
    let i = 0;
    while (i < pages.length) {
      // One read covers a span of up to 512 consecutive page entries starting at pages[i].
      const first = pages[i];
      const span = Math.min(512, pages[pages.length - 1] - first + 1);
      fs.readSync(this.pagemap, entries, 0, 8 * span, ((region.base / PAGE_SIZE) + first) * 8);
      for (; i < pages.length && pages[i] < first + span; i++) {
        const high = entries.readUInt32LE(8 * (pages[i] - first) + 4);
        if (high & (1 << (56 - 32))) written[i] = 1;
      }
    }
    return written;
  }

  nodeStates(): ReturnType<Transport['nodeStates']> {
    return this.transport.nodeStates();
  }

  framesInUse(): { used: number; total: number } {
    return { used: this.frames.used, total: this.frames.size };
  }

  // ---- the fault path --------------------------------------------------------------------------

  // Runs on the pager thread, called by the addon's poll handle with `count` faults in this.events.
  private onFaults(count: number): void {
    const events = this.events;
    const now = performance.now();
    for (let i = 0; i < count; i++) {
      const address = events[i * 3];
      const flags = events[i * 3 + 1];
      const pageAddress = address - (address % PAGE_SIZE);
      const region = this.regionAt(pageAddress);
      if (region === null) {
        // Not ours any more (freed while the fault was queued): let the thread retry.
        this.uffd!.wake(pageAddress, PAGE_SIZE);
        continue;
      }
      const page = (pageAddress - region.base) / PAGE_SIZE;
      region.stats[C.faults]++;
      if (flags & FAULT_FLAG_WP) this.onWriteProtectFault(region, page);
      else this.onMissingFault(region, page, (flags & FAULT_FLAG_WRITE) !== 0, now);
    }
    // A thread waits on each demand fetch: its answer is due in one round trip. Not for a whole block: its
    // 2 MiB take far longer than an idle CPU's wake-up, and polling would read them in small pieces.
    if (this.demand.length > 0 && this.demand.length < BLOCK_PAGES) this.spinner.poke();
    this.issueFetches();
    this.balance();
  }

  private regionAt(address: number): PagerRegion | null {
    const hit = this.lastHit;
    if (hit !== null && address >= hit.base && address < hit.base + hit.size) return hit;
    for (const region of this.sorted) {
      if (address >= region.base && address < region.base + region.size) {
        this.lastHit = region;
        return region;
      }
    }
    return null;
  }

  private onMissingFault(region: PagerRegion, page: number, write: boolean, now: number): void {
    const table = region.table;
    const address = region.base + page * PAGE_SIZE;
    switch (table.get(page)) {
      case PageState.Untouched: {
        // State and counters change before the ioctl that wakes the thread, so it sees them.
        region.stats[C.zeroFills]++;
        if (write) {
          // A write needs a real page.
          const frame = this.takeFrame(region, page);
          if (frame < 0) {
            region.stats[C.zeroFills]--;
            return this.defer(region, page, Deferred.WriteMissing);
          }
          table.frame[page] = frame;
          table.move(page, PageState.Dirty);
          this.publish(region);
          this.uffd!.copy(address, this.zeros, 0, PAGE_SIZE, 0);
        } else {
          // The shared zero page, write-protected so the first write is seen. No frame, no network.
          table.move(page, PageState.ZeroMapped);
          this.publish(region);
          this.uffd!.zeropage(address, PAGE_SIZE, true);
          this.uffd!.writeProtect(address, PAGE_SIZE, true, true);
          this.uffd!.wake(address, PAGE_SIZE);
        }
        region.trace?.record(now, page, write, false, true);
        this.consult(region, page, write, false, now, -1, true);
        return;
      }
      case PageState.Remote: {
        const frame = this.takeFrame(region, page);
        if (frame < 0) return this.defer(region, page, write ? Deferred.WriteMissing : Deferred.ReadMissing);
        table.frame[page] = frame;
        table.move(page, PageState.Fetching);
        this.frames.wantsWrite[frame] = write ? 1 : 0;
        this.frames.faultAt[frame] = now;
        this.waiting++;
        region.stats[C.remoteFetches]++;
        region.records[region.policyRecord].demandFetches++;
        if (region.guide) {
          // The application went where no guide led: a new chain starts here.
          this.frames.hop[frame] = 0;
          region.guide.limit = region.guide.depth;
          region.guide.frontier.length = 0;
        }
        this.demand.push(region.id * KEY_SPAN + page);
        region.trace?.record(now, page, write, false);
        // A read may wait for its whole block, if the policy asks for the rest of it (claimBlock).
        this.consult(region, page, write, false, now, write ? -1 : page);
        return;
      }
      case PageState.Fetching: {
        const frame = table.frame[page];
        if (write) this.frames.wantsWrite[frame] = 1;
        if (this.frames.prefetched[frame] && this.frames.faultAt[frame] === 0) {
          this.frames.faultAt[frame] = now;
          this.waiting++;
          region.stats[C.prefetchHits]++;
          this.markUsed(region, frame);
          this.passedBy(region, page);
          this.guideReached(region, frame);
          region.trace?.record(now, page, write, true);
          this.consult(region, page, write, true, now);
        }
        return;
      }
      case PageState.Held: {
        // A prefetched page kept back until now: mapped with no network, and known used.
        const frame = table.frame[page];
        const data = this.heldData.get(frame)!;
        this.heldData.delete(frame);
        table.move(page, write ? PageState.Dirty : PageState.Clean);
        this.frames.referenced[frame] = 1;
        region.stats[C.prefetchHits]++;
        this.markUsed(region, frame);
        this.passedBy(region, page);
        this.publish(region);
        this.uffd!.copy(address, data, 0, PAGE_SIZE, write ? 0 : COPY_WP);
        this.guideReached(region, frame);
        region.trace?.record(now, page, write, true);
        this.consult(region, page, write, true, now);
        return;
      }
      case PageState.Evicting: {
        const frame = this.takeFrame(region, page);
        if (frame < 0) return this.defer(region, page, write ? Deferred.WriteMissing : Deferred.ReadMissing);
        const copy = this.writeCopies.get(region.id * KEY_SPAN + page)!;
        const wp = !write;
        table.frame[page] = frame;
        table.move(page, wp ? PageState.Clean : PageState.Dirty);
        this.publish(region);
        this.uffd!.copy(address, copy.data, copy.offset, PAGE_SIZE, wp ? COPY_WP : 0);
        region.trace?.record(now, page, write, false);
        return;
      }
      default:
        // Already mapped: the message was queued before the page went in. Let the thread retry.
        this.uffd!.wake(address, PAGE_SIZE);
    }
  }

  private onWriteProtectFault(region: PagerRegion, page: number): void {
    const table = region.table;
    const address = region.base + page * PAGE_SIZE;
    switch (table.get(page)) {
      case PageState.Clean:
        this.frames.referenced[table.frame[page]] = 1;
        this.markUsed(region, table.frame[page]);
        break;
      case PageState.ZeroMapped: {
        // The write will copy the zero page into a real one: that needs a frame.
        const frame = this.takeFrame(region, page);
        if (frame < 0) return this.defer(region, page, Deferred.WriteProtect);
        table.frame[page] = frame;
        break;
      }
      default:
        // Dropped since the fault was raised (evicted): the retry will fault as missing.
        this.uffd!.wake(address, PAGE_SIZE);
        return;
    }
    table.move(page, PageState.Dirty);
    region.stats[C.writeFaults]++;
    // Write-around: a write next to a dirty page is likely a sequential writer (a copy, a partition pass)
    // that would take one fault per page. The clean pages ahead of it, up to WRITE_AROUND_PAGES, are made
    // writable with this one ioctl and counted dirty. The cost of a wrong guess is one needless write-back.
    let first = page;
    let last = page;
    if (page + 1 < region.pages && page > 0 && table.get(page - 1) === PageState.Dirty) {
      while (last + 1 < region.pages && last - page < WRITE_AROUND_PAGES && table.get(last + 1) === PageState.Clean) last++;
    } else if (page > 0 && page + 1 < region.pages && table.get(page + 1) === PageState.Dirty) {
      while (first > 0 && page - first < WRITE_AROUND_PAGES && table.get(first - 1) === PageState.Clean) first--;
    }
    for (let p = first; p <= last; p++) if (p !== page) table.move(p, PageState.Dirty);
    // Unprotecting part of a huge page splits it.
    this.splitBlocks(region, first, last, true);
    region.stats[C.writeAround] += last - first;
    this.publish(region);
    this.uffd!.writeProtect(region.base + first * PAGE_SIZE, (last - first + 1) * PAGE_SIZE, false, false);
  }

  private defer(region: PagerRegion, page: number, kind: Deferred): void {
    this.deferred.push(region.id, page, kind);
  }

  private retryDeferred(): void {
    if (this.deferred.length === 0) return;
    const pending = this.deferred;
    this.deferred = [];
    const now = performance.now();
    for (let i = 0; i < pending.length; i += 3) {
      const region = this.regions.get(pending[i]);
      if (!region) continue;
      const kind = pending[i + 2] as Deferred;
      if (kind === Deferred.WriteProtect) this.onWriteProtectFault(region, pending[i + 1]);
      else this.onMissingFault(region, pending[i + 1], kind === Deferred.WriteMissing, now);
    }
    this.issueFetches();
  }

  /**
   * Asks the region's advice, else its policy, what to prefetch after a fault on `page`. `demandPage`: the
   * page of a read fault whose demand fetch is queued but not yet sent, or -1 (see prefetchRanges).
   * `firstTouch`: the fault mapped zeros on a page that never held data.
   */
  private consult(
    region: PagerRegion,
    page: number,
    write: boolean,
    prefetchHit: boolean,
    time: number,
    demandPage = -1,
    firstTouch = false,
  ): void {
    const advice = region.advice.length === 0 ? null : adviceAt(region.advice, page);
    if (advice !== null) {
      if (advice.kind === AdviceKind.Sequential) {
        const count = Math.min(SEQUENTIAL_ADVICE_WINDOW, advice.end - page - 1);
        if (count > 0) this.prefetchRanges(region, [[page + 1, count]], this.adviceRecord(region), -1, write, false, demandPage);
      }
      return; // 'random': no prefetch
    }
    const policy = region.policy;
    const record = region.records[region.policyRecord];
    record.calls++;
    const event = { page, write, prefetchHit, firstTouch, prefetchUsed: region.usedSinceCall, time, regionPages: region.pages };
    region.usedSinceCall = 0;
    let answer;
    try {
      answer = callPolicy(this.native, policy, event);
    } catch (error) {
      return this.policyFailed(region, `threw: ${error instanceof Error ? error.message : String(error)}`, error);
    }
    if (answer === TIMED_OUT) {
      return this.policyFailed(region, `ran past its time budget of ${policy.timeBudgetMs} ms`, null);
    }
    if (answer === null || answer === undefined) return;
    let ranges: Array<[number, number]>;
    try {
      ranges = checkAnswer(answer, region.pages);
    } catch (error) {
      return this.policyFailed(region, `answered garbage: ${(error as Error).message}`, error);
    }
    if (ranges.length > 0) this.prefetchRanges(region, ranges, region.policyRecord, -1, write, false, demandPage);
  }

  /** Contains a misbehaving policy: the region goes on with 'none', and the application hears why. */
  private policyFailed(region: PagerRegion, what: string, cause: unknown): void {
    const name = region.policy.name;
    const error = new FarmemError(
      'FARMEM_POLICY_ERROR',
      `prefetch policy '${name}' of region ${region.id} ${what}; the region now prefetches with 'none' ` +
        `(faults are still served): fix the policy and setPrefetch() it again`,
      { cause },
    );
    region.records[region.policyRecord].error = what;
    region.stats[C.policyErrors]++;
    this.installPolicy(region, { impl: new NoPrefetch(), name: 'none', trusted: true, timeBudgetMs: Infinity });
    this.listener.notify('policy-error', { region: region.id, policy: name, error: error.toJSON() });
  }

  private installPolicy(region: PagerRegion, policy: ActivePolicy): void {
    region.records[region.policyRecord].until = Date.now();
    region.records.push(newRecord(policy.name, 'policy'));
    region.policyRecord = region.records.length - 1;
    region.policy = policy;
    region.usedSinceCall = 0;
  }

  private adviceRecord(region: PagerRegion): number {
    if (region.adviceRecord < 0) {
      region.records.push(newRecord('advice', 'advice'));
      region.adviceRecord = region.records.length - 1;
    }
    return region.adviceRecord;
  }

  /**
   * Starts prefetches of `ranges` (clipped, sorted or not) for `record`. Only missing pages are fetched,
   * and only into free frames: a guess never pushes out a page that is resident. Never-written pages are
   * zero-filled ahead instead. `force` lifts the in-flight limit (the application asked: 'willneed').
   */
  private prefetchRanges(
    region: PagerRegion,
    ranges: ReadonlyArray<readonly [number, number]>,
    record: number,
    hop: number,
    write: boolean,
    force: boolean,
    demandPage = -1,
  ): void {
    const table = region.table;
    const frames = this.frames;
    const limit = force ? Infinity : this.maxPrefetchPages;
    const untouched: number[] = [];
    const stats = region.stats;
    const owner = region.records[record];
    // A block the answer asks for all of is brought whole, to land as one huge page, when its first page
    // comes up (a backward stream lists it as several chunks, nearest first). The page a read fault waits
    // for (demandPage) counts as asked: its block can come whole, the reader waiting for all of it.
    const withDemand = demandPage >= 0 ? [...ranges, [demandPage, 1] as const] : ranges;
    let askedPages = 0;
    for (const [, count] of withDemand) askedPages += count;
    const asked = region.blocks === null || askedPages < BLOCK_PAGES ? null : mergeRanges(withDemand, region.pages);
    let triedBlock = -1;
    answer: for (const [first, count] of ranges) {
      const start = Math.max(0, first);
      const end = Math.min(region.pages, first + count);
      for (let p = start; p < end && this.prefetchInflight < limit; p++) {
        if (asked !== null && p >> BLOCK_SHIFT !== triedBlock) {
          triedBlock = p >> BLOCK_SHIFT;
          const blockFirst = triedBlock << BLOCK_SHIFT;
          if (covers(asked, blockFirst, blockFirst + BLOCK_PAGES)) {
            const claim = this.claimBlock(region, blockFirst, record, limit, demandPage);
            if (claim === Claim.Taken) {
              p = Math.min(end, blockFirst + BLOCK_PAGES) - 1;
              continue;
            }
            // No room for it now: its pages one by one would fill what room there is and keep it from
            // ever landing whole. Where blocks stay whole once landed (a reader's), the answer stops here:
            // the block waits for room, or for a read fault on it to bring it whole. Where writes split
            // them soon after (a sort's), landing whole buys little and the wait would cost demand faults.
            if (claim === Claim.NoRoom && region.writtenBlocksShare < WRITTEN_BLOCKS_SHARE) break answer;
          }
        }
        const state = table.get(p);
        // Zero-filled guesses are bounded like fetched ones, so a guess is not evicted before its use.
        if (state === PageState.Untouched && untouched.length < this.maxPrefetchPages) untouched.push(p);
        if (state !== PageState.Remote) continue;
        // Unreferenced: a guess is colder than any page the application touched.
        const frame = frames.take(region.id, p, false);
        if (frame < 0) break;
        table.frame[p] = frame;
        table.move(p, PageState.Fetching);
        frames.prefetched[frame] = 1;
        frames.guess[frame] = 1;
        frames.issuer[frame] = record;
        frames.hop[frame] = hop;
        region.sampleCredit += region.sampleRate;
        if (region.sampleCredit >= 1) {
          region.sampleCredit -= 1;
          frames.sampled[frame] = 1;
          owner.sampled++;
          stats[C.prefetchSampled]++;
        }
        owner.prefetched++;
        stats[C.prefetched]++;
        this.prefetchInflight++;
        this.prefetch.push(region.id * KEY_SPAN + p);
      }
    }
    if (untouched.length > 0) this.zeroAhead(region, untouched.sort((a, b) => a - b), write);
  }

  /**
   * Starts the fetch of the whole block at `first` (block aligned), to land as one huge page, if every page
   * of it is Remote and there are frames, prefetch room and an assembly buffer for all of it. Its pages are
   * Fetching, as any prefetched page, until the last one arrives. While a trace records, every prefetched
   * page must be held until touched, so no block is claimed then. `demandPage`, when in the block, is the
   * page a read fault just asked for, Fetching with its frame but not yet sent: it joins the block as the
   * page a thread waits on, and the whole block is sent as urgent as its demand fetch would have been.
   */
  private claimBlock(region: PagerRegion, first: number, record: number, limit: number, demandPage = -1): Claim {
    const blocks = region.blocks!;
    const block = first >> BLOCK_SHIFT;
    const frames = this.frames;
    if (blocks[block] !== BlockState.Pages || region.sampleRate >= 1 || first + BLOCK_PAGES > region.pages) return Claim.NotWhole;
    const table = region.table;
    const demandKey = region.id * KEY_SPAN + demandPage;
    const withDemand =
      demandPage >= first &&
      demandPage < first + BLOCK_PAGES &&
      table.get(demandPage) === PageState.Fetching &&
      this.demand[this.demand.length - 1] === demandKey;
    const wanted = withDemand ? BLOCK_PAGES - 1 : BLOCK_PAGES;
    // A thread waits on a block with its demand page in it: the prefetch limit does not hold it back.
    for (let p = first; p < first + BLOCK_PAGES; p++) {
      if (table.get(p) !== PageState.Remote && !(withDemand && p === demandPage)) return Claim.NotWhole;
    }
    if (this.assembliesInUse === this.maxAssemblies || (!withDemand && this.prefetchInflight + wanted > limit)) return Claim.NoRoom;
    // Pages streams have passed make room: they would be the next victims anyway. For a block a thread
    // waits on, frames are found as for any demand fetch: down to the low water mark if need be.
    if (frames.free < wanted) this.evict(wanted - frames.free, true);
    if (frames.free < wanted && withDemand) this.evict(Math.max(wanted - frames.free, frames.used - this.lowFrames));
    if (frames.free < wanted) return Claim.NoRoom;
    this.assembliesInUse++;
    region.assemblies.set(block, { data: this.spareAssemblies.pop() ?? Buffer.allocUnsafeSlow(BLOCK_BYTES), arrived: 0 });
    blocks[block] = BlockState.Assembling;
    if (withDemand) this.demand.pop();
    const queue = withDemand ? this.demand : this.prefetch;
    for (let p = first; p < first + BLOCK_PAGES; p++) {
      queue.push(region.id * KEY_SPAN + p);
      if (withDemand && p === demandPage) continue;
      const frame = frames.take(region.id, p, false);
      table.frame[p] = frame;
      table.move(p, PageState.Fetching);
      frames.prefetched[frame] = 1;
      frames.guess[frame] = 1;
      frames.issuer[frame] = record;
    }
    region.records[record].prefetched += wanted;
    region.stats[C.prefetched] += wanted;
    this.prefetchInflight += wanted;
    return Claim.Taken;
  }

  private returnAssembly(assembly: Assembly): void {
    this.assembliesInUse--;
    this.spareAssemblies.push(assembly.data);
  }

  /** `count` pages of an Assembling block, from `page` on, sit in `src` at `at`: keeps them; lands the block once all are in. */
  private assemble(region: PagerRegion, page: number, src: Buffer, at: number, count: number): void {
    const block = page >> BLOCK_SHIFT;
    const assembly = region.assemblies.get(block)!;
    const to = (page & BLOCK_MASK) * PAGE_SIZE;
    // Received in place (assemblyView): already there.
    if (src.buffer !== assembly.data.buffer || src.byteOffset + at !== assembly.data.byteOffset + to) {
      src.copy(assembly.data, to, at, at + count * PAGE_SIZE);
    }
    assembly.arrived += count;
    region.stats[C.bytesFetched] += count * PAGE_SIZE;
    if (assembly.arrived < BLOCK_PAGES) return;
    region.assemblies.delete(block);
    this.landBlock(region, block, assembly.data);
    this.returnAssembly(assembly);
  }

  /**
   * Lands a whole block write-protected by moveIn, as one huge page where the kernel has one. Pages a
   * waiting writer asked for, and pages a thread wrote between the move and the protection, become Dirty
   * and writable (which splits the huge page); the rest are Clean. The waiters wake last.
   */
  private landBlock(region: PagerRegion, block: number, data: Buffer): void {
    const first = block << BLOCK_SHIFT;
    const address = region.base + first * PAGE_SIZE;
    const written = this.movedWritten;
    let moved = 0;
    try {
      // Sets written[] for all 512 pages, those it could not map included.
      moved = this.uffd!.moveIn(address, data, 0, BLOCK_BYTES, written);
    } catch (error) {
      // Nothing was mapped.
      written.fill(0);
      this.listener.notify('huge-page-fallback', { region: region.id, firstPage: first, error: error instanceof FarmemError ? error.toJSON() : { message: String(error) } });
    }
    if (moved < BLOCK_BYTES) {
      // The kernel stopped part way: the rest goes in page by page, as any fetched page. A page it moved
      // without counting is already there, protected and compared by moveIn: the copy steps over it.
      this.uffd!.copy(address + moved, data, moved, BLOCK_BYTES - moved, COPY_WP | COPY_DONTWAKE);
    }
    const table = region.table;
    const frames = this.frames;
    const now = performance.now();
    const dirty: number[] = [];
    for (let i = 0; i < BLOCK_PAGES; i++) {
      const page = first + i;
      const frame = table.frame[page];
      if (frames.wantsWrite[frame] === 1 || written[i] === 1) {
        table.move(page, PageState.Dirty);
        dirty.push(page);
      } else {
        table.move(page, PageState.Clean);
      }
      this.landed(region, frame, now);
    }
    region.blocks![block] = moved === BLOCK_BYTES && dirty.length === 0 ? BlockState.Whole : BlockState.Pages;
    if (moved === BLOCK_BYTES) region.stats[C.hugeBlocks]++;
    forEachRun(dirty, Infinity, Infinity, (page, count) =>
      this.uffd!.writeProtect(region.base + page * PAGE_SIZE, count * PAGE_SIZE, false, true),
    );
    this.publish(region);
    // Last: this wakes the threads waiting on the block, who may read the counters at once.
    this.uffd!.wake(address, BLOCK_BYTES);
  }

  /**
   * A prefetch hit on `page`: if it continues a stream (within PASS_SPAN of that stream's last hit), the
   * resident pages between the two hits were passed and go on the passed stack, the first victims.
   * Only prefetch hits count, so random faults never mark a hot page as passed.
   */
  private passedBy(region: PagerRegion, page: number): void {
    const positions = region.passPositions;
    let i = 0;
    while (i < positions.length && Math.abs(page - positions[i]) > PASS_SPAN) i++;
    if (i === positions.length) {
      if (positions.length === PASS_STREAMS) positions.shift();
      positions.push(page);
      return;
    }
    const from = positions[i];
    positions[i] = page;
    const table = region.table;
    const step = page > from ? 1 : -1;
    for (let p = from; p !== page; p += step) {
      const state = table.get(p);
      if (state === PageState.Clean || state === PageState.Dirty) this.frames.pushPassed(table.frame[p]);
    }
  }

  /** A fault found a prefetched page: the guess was right. */
  private markUsed(region: PagerRegion, frame: number): void {
    const frames = this.frames;
    if (frames.guess[frame] === 0) return;
    frames.guess[frame] = 0;
    const record = region.records[frames.issuer[frame]];
    record.used++;
    region.stats[C.prefetchUsed]++;
    if (frames.sampled[frame]) {
      frames.sampled[frame] = 0;
      record.sampledUsed++;
      region.stats[C.prefetchSampledUsed]++;
    }
    if (frames.issuer[frame] === region.policyRecord) region.usedSinceCall++;
  }

  /** Gives back the frame of `page`, which leaves local memory now, and stamps the eviction (PageTable.evictedAt). */
  private releaseEvicted(region: PagerRegion, page: number): void {
    const table = region.table;
    const frame = table.frame[page];
    this.markGone(region, frame);
    table.evictedAt[page] = this.frames.evictionStamp();
    this.frames.release(frame);
    table.frame[page] = -1;
  }

  /** A prefetched page leaves local memory with no use seen: known unused if it was held, else unknown. */
  private markGone(region: PagerRegion, frame: number): void {
    const frames = this.frames;
    if (frames.guess[frame] === 0) return;
    frames.guess[frame] = 0;
    if (frames.sampled[frame]) {
      frames.sampled[frame] = 0;
      region.records[frames.issuer[frame]].sampledUnused++;
      region.stats[C.prefetchSampledUnused]++;
    }
  }

  /** The application reached a guided page: let chains run `depth` hops past it, resuming stopped ones. */
  private guideReached(region: PagerRegion, frame: number): void {
    const guide = region.guide;
    const hop = this.frames.hop[frame];
    if (!guide || hop < 0) return;
    guide.limit = Math.max(guide.limit, hop + guide.depth);
    if (guide.frontier.length === 0) return;
    const waiting = guide.frontier;
    guide.frontier = [];
    const bytes = Buffer.allocUnsafe(PAGE_SIZE);
    for (let i = 0; i < waiting.length && region.guide === guide; i += 2) {
      const page = waiting[i];
      const state = region.table.get(page);
      if (state === PageState.Held) {
        this.followGuide(region, page, waiting[i + 1], this.heldData.get(region.table.frame[page])!);
      } else if (state === PageState.Clean || state === PageState.Dirty) {
        // Resident and mapped: reading it cannot fault.
        this.native.readOut(region.base + page * PAGE_SIZE, PAGE_SIZE, bytes, 0);
        this.followGuide(region, page, waiting[i + 1], bytes);
      }
    }
  }

  /** Calls the guide on a page it leads through (its bytes in `data`), and fetches what it names. */
  private followGuide(region: PagerRegion, page: number, hop: number, data: Uint8Array): void {
    const guide = region.guide!;
    if (hop >= guide.limit) {
      if (guide.frontier.length < 2 * MAX_GUIDE_FRONTIER) guide.frontier.push(page, hop);
      return;
    }
    const record = region.records[guide.record];
    record.calls++;
    let pages: number[];
    try {
      const answer = callGuide(this.native, guide, data, { offset: page * PAGE_SIZE, regionSize: region.size, hop });
      if (answer === TIMED_OUT) throw new Error(`ran past its time budget of ${guide.timeBudgetMs} ms`);
      pages = guidePages(answer, region.size, this.options.maxRequestPages);
    } catch (error) {
      const what = error instanceof Error ? error.message : String(error);
      record.error = what;
      record.until = Date.now();
      region.guide = null;
      region.stats[C.policyErrors]++;
      const failure = new FarmemError(
        'FARMEM_POLICY_ERROR',
        `guide ${guide.name} of region ${region.id} failed: ${what}; the region goes on without it (faults are still served)`,
        { cause: error },
      );
      this.listener.notify('policy-error', { region: region.id, policy: `guide ${guide.name}`, error: failure.toJSON() });
      return;
    }
    if (pages.length > 0) this.prefetchRanges(region, pages.map((p) => [p, 1] as const), guide.record, hop + 1, false, false);
  }

  /**
   * Never-written pages inside a predicted stream, installed ahead of their faults without network:
   * writable zeros when a write led the stream (as each would be on its own first write), else
   * write-protected zero pages that take no frame.
   */
  private zeroAhead(region: PagerRegion, pages: number[], write: boolean): void {
    const table = region.table;
    if (!write) {
      forEachRun(pages, Infinity, this.options.maxRequestPages, (first, count) => {
        for (let p = first; p < first + count; p++) table.move(p, PageState.ZeroMapped);
        region.stats[C.zeroFills] += count;
        const address = region.base + first * PAGE_SIZE;
        this.uffd!.zeropage(address, count * PAGE_SIZE, true);
        this.uffd!.writeProtect(address, count * PAGE_SIZE, true, true);
      });
      return;
    }
    // Only free frames, as for any prefetch. (Evicting here could also pick one of these pages, marked
    // dirty but not yet installed, and read it out of an empty mapping.)
    const granted = Math.min(pages.length, this.frames.free);
    if (granted === 0) return;
    for (let i = 0; i < granted; i++) {
      table.frame[pages[i]] = this.frames.take(region.id, pages[i], true);
      table.move(pages[i], PageState.Dirty);
    }
    region.stats[C.zeroFills] += granted;
    this.publish(region);
    forEachRun(pages.slice(0, granted), Infinity, Infinity, (first, count) => this.landZeros(region, first, count));
  }

  /**
   * Maps writable zeros over pages [first, first + count), already counted Dirty: each whole 2 MiB block
   * as one huge page where blocks land whole (a writer then takes one fault of the hypervisor's for the
   * block, not one a page), the rest page by page.
   */
  private landZeros(region: PagerRegion, first: number, count: number): void {
    const end = first + count;
    let p = first;
    while (p < end) {
      if (region.blocks !== null && (p & BLOCK_MASK) === 0 && p + BLOCK_PAGES <= end) {
        const moved = this.uffd!.zeroBlockIn(region.base + p * PAGE_SIZE) / PAGE_SIZE;
        if (moved === BLOCK_PAGES) region.stats[C.zeroBlocks]++;
        else this.copyZeros(region, p + moved, p + BLOCK_PAGES);
        p += BLOCK_PAGES;
        continue;
      }
      const next = Math.min(end, (p + BLOCK_PAGES) & ~BLOCK_MASK);
      this.copyZeros(region, p, next);
      p = next;
    }
  }

  /** Writable zeros over pages [from, to), page by page, as many a call as the zeros buffer holds. */
  private copyZeros(region: PagerRegion, from: number, to: number): void {
    for (let p = from; p < to; p += this.options.maxRequestPages) {
      const n = Math.min(to - p, this.options.maxRequestPages);
      this.uffd!.copy(region.base + p * PAGE_SIZE, this.zeros, 0, n * PAGE_SIZE, 0);
    }
  }

  /** Sends this batch's fetches: neighbouring pages of one stripe coalesce into one request. */
  private issueFetches(): void {
    if (this.demand.length > 0) {
      const keys = this.demand;
      this.demand = [];
      this.sendReads(keys, true);
    }
    if (this.prefetch.length > 0) {
      const keys = this.prefetch;
      this.prefetch = [];
      this.sendReads(keys, false);
    }
  }

  private sendReads(keys: number[], urgent: boolean): void {
    keys.sort((a, b) => a - b);
    let i = 0;
    while (i < keys.length) {
      const regionId = Math.floor(keys[i] / KEY_SPAN);
      const pages: number[] = [];
      for (; i < keys.length && Math.floor(keys[i] / KEY_SPAN) === regionId; i++) pages.push(keys[i] - regionId * KEY_SPAN);
      const region = this.regions.get(regionId)!;
      forEachRun(pages, this.transport.splitPages, this.options.maxRequestPages, (first, count) =>
        this.fetch(region, first, count, urgent),
      );
    }
  }


  private fetch(region: PagerRegion, first: number, count: number, urgent: boolean): void {
    const node = this.transport.nodeOf(first);
    this.publish(region);
    this.transport.read(
      node,
      region.nodeIds[node],
      first,
      count,
      urgent,
      (index, src, srcOffset, n) => this.onPages(region, first + index, src, srcOffset, n),
      (error) => {
        if (error && !region.freed && !this.closed) {
          // The pages stay Fetching: the threads waiting on them keep waiting rather than see wrong data.
          this.listener.notify('fetch-error', { region: region.id, firstPage: first, pages: count, error: error.toJSON() });
        }
      },
      (index, n) => this.assemblyView(region, first + index, n),
    );
  }

  /**
   * Pages [page, page + count) of one Assembling block: the part of its assembly buffer they go to, for
   * the socket to receive them straight there (assemble then copies nothing). Null otherwise.
   */
  private assemblyView(region: PagerRegion, page: number, count: number): Buffer | null {
    const blocks = region.blocks;
    if (region.freed || blocks === null || blocks[page >> BLOCK_SHIFT] !== BlockState.Assembling) return null;
    const offset = page & BLOCK_MASK;
    if (offset + count > BLOCK_PAGES) return null;
    return region.assemblies.get(page >> BLOCK_SHIFT)!.data.subarray(offset * PAGE_SIZE, (offset + count) * PAGE_SIZE);
  }

  // Runs on the pager thread, from the socket's read callback: `count` pages starting at `first`
  // sit in `src` at `srcOffset`, valid only during this call. Installs them with UFFDIO_COPY straight from there.
  private onPages(region: PagerRegion, first: number, src: Buffer, srcOffset: number, count: number): void {
    if (region.freed) return;
    const table = region.table;
    const frames = this.frames;
    const now = performance.now();
    const blocks = region.blocks;
    let runStart = 0;
    while (runStart < count) {
      const firstPage = first + runStart;
      if (blocks !== null && blocks[firstPage >> BLOCK_SHIFT] === BlockState.Assembling) {
        const inBlock = Math.min(count - runStart, BLOCK_PAGES - (firstPage & BLOCK_MASK));
        this.assemble(region, firstPage, src, srcOffset + runStart * PAGE_SIZE, inBlock);
        runStart += inBlock;
        continue;
      }
      const mode = this.landingMode(table.frame[firstPage]);
      let runLength = 1;
      while (
        runStart + runLength < count &&
        this.landingMode(table.frame[firstPage + runLength]) === mode &&
        !(blocks !== null && ((firstPage + runLength) & BLOCK_MASK) === 0 && blocks[(firstPage + runLength) >> BLOCK_SHIFT] === BlockState.Assembling)
      ) {
        runLength++;
      }
      for (let p = firstPage; p < firstPage + runLength; p++) {
        table.move(p, mode === Landing.Held ? PageState.Held : mode === Landing.Writable ? PageState.Dirty : PageState.Clean);
        this.landed(region, table.frame[p], now);
      }
      region.stats[C.bytesFetched] += runLength * PAGE_SIZE;
      const at = srcOffset + runStart * PAGE_SIZE;
      if (mode === Landing.Held) {
        // Kept back: the page is mapped on its first touch, which tells us the guess was used.
        for (let k = 0; k < runLength; k++) {
          const data = Buffer.allocUnsafeSlow(PAGE_SIZE);
          src.copy(data, 0, at + k * PAGE_SIZE, at + (k + 1) * PAGE_SIZE);
          this.heldData.set(table.frame[firstPage + k], data);
        }
        this.publish(region);
      } else {
        this.publish(region);
        // Last: this wakes the threads waiting on these pages, who may read the counters at once.
        this.uffd!.copy(region.base + firstPage * PAGE_SIZE, src, at, runLength * PAGE_SIZE, mode === Landing.Writable ? 0 : COPY_WP);
      }
      if (region.guide) {
        for (let k = 0; k < runLength && region.guide; k++) {
          const hop = frames.hop[table.frame[firstPage + k]];
          if (hop >= 0) this.followGuide(region, firstPage + k, hop, src.subarray(at + k * PAGE_SIZE, at + (k + 1) * PAGE_SIZE));
        }
      }
      runStart += runLength;
    }
    if (this.deferred.length > 0) this.retryDeferred();
    else if (this.prefetch.length > 0) this.issueFetches();
  }

  /** Bookkeeping of a fetched page that just left Fetching: the prefetch limit, and the wait it ended. */
  private landed(region: PagerRegion, frame: number, now: number): void {
    const frames = this.frames;
    frames.wantsWrite[frame] = 0;
    if (frames.prefetched[frame]) {
      frames.prefetched[frame] = 0;
      this.prefetchInflight--;
    }
    const started = frames.faultAt[frame];
    if (started > 0) {
      const us = (now - started) * 1000;
      region.stats[HISTOGRAM_OFFSET + bucketOf(us)]++;
      region.stats[C.latencyCount]++;
      region.stats[C.latencySumUs] += us;
      frames.faultAt[frame] = 0;
      frames.referenced[frame] = 1;
      this.waiting--;
      // A thread was waiting and runs again: its next fault may follow within microseconds.
      if (this.oneCpu && this.waiting === 0) this.spinner.settle();
      else this.spinner.poke();
    }
  }

  /** How a fetched page goes in: writable for a waiting writer, held if sampled and nobody waits, else write-protected. */
  private landingMode(frame: number): Landing {
    const frames = this.frames;
    if (frames.wantsWrite[frame] === 1) return Landing.Writable;
    if (frames.sampled[frame] === 1 && frames.faultAt[frame] === 0) return Landing.Held;
    return Landing.Clean;
  }

  // ---- budget and eviction ---------------------------------------------------------------------

  /** A frame for (region, page); evicts when none is free. -1 when every frame is in flight. */
  private takeFrame(region: PagerRegion, page: number): number {
    let frame = this.frames.take(region.id, page, true);
    if (frame >= 0) return frame;
    this.evict(Math.max(1, this.frames.used - this.lowFrames));
    frame = this.frames.take(region.id, page, true);
    return frame;
  }

  /** Keeps usage at or below the high water mark, evicting down to the low one. */
  private balance(): void {
    if (this.frames.used > this.highFrames) this.evict(this.frames.used - this.lowFrames);
  }

  /**
   * Frees up to `wanted` frames: pages streams have passed first, most recent first, then second chance
   * over fill order, where a page a fault brought back sooner than others after its last eviction stays
   * (refault gaps). Clean pages go without network. A page of a Whole block takes the whole block with
   * it: the block is one huge page, all of it Clean, and dropping all of it is one cheap unmap where
   * dropping part would split it.
   */
  private evict(wanted: number, passedOnly = false): void {
    const frames = this.frames;
    const victims: number[] = [];
    // Whole blocks chosen, by the key of their first page. Their pages count as freed once chosen, and
    // a frame of one met again below is passed over.
    const wholeBlocks = new Set<number>();
    let freed = 0;
    /** Takes the block of `page` when it is Whole (once: its pages count when first met); false when not Whole. */
    const tookWholeBlock = (region: PagerRegion, page: number): boolean => {
      const block = wholeBlockKey(region, page);
      if (block < 0) return false;
      if (!wholeBlocks.has(block)) {
        wholeBlocks.add(block);
        freed += BLOCK_PAGES;
      }
      return true;
    };
    // Chosen from the passed stack; their ring entries are still live until the drop below.
    const chosen = new Set<number>();
    while (freed < wanted) {
      const f = frames.popPassed();
      if (f < 0) break;
      const region = this.regions.get(frames.region[f])!;
      const page = frames.page[f];
      const state = region.table.get(page);
      // Touched again since it was passed (a write), or no longer mapped: left to the ring.
      if ((state !== PageState.Clean && state !== PageState.Dirty) || frames.referenced[f]) continue;
      if (tookWholeBlock(region, page)) continue;
      chosen.add(f);
      victims.push(region.id * KEY_SPAN + page);
      freed++;
    }
    // A page a fault brought back goes only if it stayed away at least `cutoff` fills: of the oldest
    // EVICTION_WINDOW frames for each still wanted, those with the longest refault gaps would be enough
    // (never evicted counts as longest). Pages a prefetch brought have no gap and go in fill order. The
    // window stops at EVICTION_WINDOW_SHARE of the queue: a page fetched since stays, whatever its gap,
    // or a sort's current partition would lose its pages to the ones it finished with.
    const evictable = (f: number, state: PageState): boolean =>
      (state === PageState.Clean || state === PageState.Dirty || state === PageState.Held) && frames.referenced[f] === 0;
    let cutoff = -1;
    const need = wanted - freed;
    if (!passedOnly && need > 0 && frames.faultFilledCount > need) {
      const known: number[] = [];
      frames.peekOldest(Math.min(EVICTION_WINDOW * need, Math.floor(frames.used * EVICTION_WINDOW_SHARE)), (f) => {
        const table = this.regions.get(frames.region[f])!.table;
        const page = frames.page[f];
        const gap = frames.refaultGap(f, table.evictedAt[page]);
        if (gap >= 0 && evictable(f, table.get(page))) known.push(gap);
      });
      if (known.length > need) cutoff = known.sort((a, b) => b - a)[need - 1];
    }
    // Two passes over the queue at most: the first may only clear second-chance bits.
    let budget = passedOnly ? 0 : 2 * frames.used;
    while (freed < wanted && budget-- > 0) {
      const f = frames.popOldest();
      if (f < 0) break;
      if (chosen.has(f)) continue;
      const region = this.regions.get(frames.region[f])!;
      const page = frames.page[f];
      if (!evictable(f, region.table.get(page))) {
        // In flight, or touched since the hand last passed: back of the queue.
        frames.referenced[f] = 0;
        frames.requeue(f);
        continue;
      }
      // Popped and not requeued: it cannot be picked twice before it is dropped below.
      if (tookWholeBlock(region, page)) continue;
      const gap = frames.refaultGap(f, region.table.evictedAt[page]);
      if (gap >= 0 && gap < cutoff) {
        // Wanted back sooner than the pages that go: back of the queue, aged.
        frames.requeueSkipped(f);
        continue;
      }
      victims.push(region.id * KEY_SPAN + page);
      freed++;
    }
    if (freed === 0) return;
    victims.sort((a, b) => a - b);
    this.drops.begin();
    try {
      this.dropVictims(victims);
      for (const key of wholeBlocks) {
        const region = this.regions.get(Math.floor(key / KEY_SPAN))!;
        this.dropCleanRun(region, key - region.id * KEY_SPAN, BLOCK_PAGES);
        this.publish(region);
      }
    } finally {
      this.drops.end();
    }
  }

  /** Victims (sorted keys) grouped by region and handed to the dirty, clean and held paths. */
  private dropVictims(victims: number[]): void {
    let i = 0;
    while (i < victims.length) {
      const regionId = Math.floor(victims[i] / KEY_SPAN);
      const region = this.regions.get(regionId)!;
      const dirty: number[] = [];
      const clean: number[] = [];
      const held: number[] = [];
      while (i < victims.length && Math.floor(victims[i] / KEY_SPAN) === regionId) {
        const page = victims[i] - regionId * KEY_SPAN;
        const state = region.table.get(page);
        (state === PageState.Dirty ? dirty : state === PageState.Held ? held : clean).push(page);
        i++;
      }
      this.writeBack(region, dirty, true);
      this.dropClean(region, clean);
      this.dropHeld(region, held);
      this.publish(region);
    }
  }

  /**
   * Blocks holding pages [first, last] no longer land or leave whole. Each that was Whole ended, split by
   * a write or dropped whole, and moves the region's writtenBlocksShare.
   */
  private splitBlocks(region: PagerRegion, first: number, last: number, byWrite: boolean): void {
    const blocks = region.blocks;
    if (blocks === null) return;
    for (let b = first >> BLOCK_SHIFT; b <= last >> BLOCK_SHIFT && b < blocks.length; b++) {
      if (blocks[b] === BlockState.Whole) {
        blocks[b] = BlockState.Pages;
        region.writtenBlocksShare += ((byWrite ? 1 : 0) - region.writtenBlocksShare) / 8;
      }
    }
  }

  /** Drops clean pages (sorted). */
  private dropClean(region: PagerRegion, pages: number[]): void {
    forEachRun(pages, Infinity, Infinity, (first, count) => this.dropCleanRun(region, first, count));
  }

  /** Drops clean pages [first, first + count): no network, unless a write-back of one is still in flight (then it keeps that copy). */
  private dropCleanRun(region: PagerRegion, first: number, count: number): void {
    const table = region.table;
    for (let p = first; p < first + count; p++) {
      table.move(p, this.writeCopies.has(region.id * KEY_SPAN + p) ? PageState.Evicting : PageState.Remote);
      this.releaseEvicted(region, p);
    }
    this.splitBlocks(region, first, first + count - 1, false);
    this.drops.drop(region.base + first * PAGE_SIZE, count * PAGE_SIZE);
    region.stats[C.evictions] += count;
  }

  /** Drops held pages: never mapped, equal to the node's copy, so nothing to write and nothing to unmap. */
  private dropHeld(region: PagerRegion, pages: number[]): void {
    const table = region.table;
    for (const p of pages) {
      table.move(p, PageState.Remote);
      this.heldData.delete(table.frame[p]);
      this.releaseEvicted(region, p);
    }
    region.stats[C.evictions] += pages.length;
  }

  /**
   * Writes dirty pages back. The order keeps every write: write-protect (from now on a writer waits in a
   * fault), copy out, then (when dropping) MADV_DONTNEED; a fault on the page while the write is in flight is
   * served from the copy.
   */
  private writeBack(region: PagerRegion, pages: number[], drop: boolean): void {
    if (pages.length === 0) return;
    const table = region.table;
    // Checked first: reading out a page that is not resident would block this thread on itself.
    for (const p of pages) table.move(p, drop ? PageState.Evicting : PageState.Clean);
    this.protectSpans(region, pages);
    forEachRun(pages, this.transport.splitPages, this.options.maxRequestPages, (first, count) => {
      const address = region.base + first * PAGE_SIZE;
      const length = count * PAGE_SIZE;
      const data = this.writeBuffer(length);
      this.native.readOut(address, length, data, 0);
      if (drop) this.drops.drop(address, length);
      const copies: WriteCopy[] = [];
      for (let k = 0; k < count; k++) {
        const p = first + k;
        const copy: WriteCopy = { data, offset: k * PAGE_SIZE };
        copies.push(copy);
        this.writeCopies.set(region.id * KEY_SPAN + p, copy);
        if (drop && table.frame[p] >= 0) this.releaseEvicted(region, p);
      }
      if (drop) region.stats[C.evictions] += count;
      region.writesInFlight++;
      const node = this.transport.nodeOf(first);
      this.transport.write(node, region.nodeIds[node], first, count, data, (error) => {
        region.writesInFlight--;
        if (region.freed) return;
        if (error) {
          // The copies stay: the pages remain Evicting and are served from them. Nothing is lost.
          region.writeError = error;
          this.listener.notify('writeback-error', { region: region.id, firstPage: first, pages: count, error: error.toJSON() });
        } else {
          region.stats[C.writebacks] += count;
          region.stats[C.bytesWritten] += length;
          for (let k = 0; k < count; k++) {
            const key = region.id * KEY_SPAN + first + k;
            if (this.writeCopies.get(key) !== copies[k]) continue; // a newer write-back replaced it
            this.writeCopies.delete(key);
            if (table.get(first + k) === PageState.Evicting) table.move(first + k, PageState.Remote);
          }
          // Acknowledged, so never resent, and no copy in it is served any more: the buffer is free.
          if (data.byteLength > this.zeros.length / 2 && this.spareWriteBuffers.length < this.maxSpareWriteBuffers) {
            this.spareWriteBuffers.push(data.buffer as ArrayBuffer);
          }
        }
        this.publish(region);
        if (region.writesInFlight === 0) this.settleFlush(region);
      });
    });
  }

  /**
   * A buffer for a write-back of `length` bytes. Long ones (more than half of maxRequestPages) reuse an
   * acknowledged one's buffer of maxRequestPages pages: new memory that large comes fresh from the
   * kernel, a page fault a page. Short ones, as a random writer's are, come from the Node allocator.
   */
  private writeBuffer(length: number): Buffer {
    if (length <= this.zeros.length / 2) return Buffer.allocUnsafe(length);
    return Buffer.from(this.spareWriteBuffers.pop() ?? Buffer.allocUnsafeSlow(this.zeros.length).buffer, 0, length);
  }

  /**
   * Write-protects `pages` (sorted, just moved out of Dirty) in as few UFFDIO_WRITEPROTECT calls as it
   * can: each call that takes write access away flushes the TLB, an IPI to the application's CPU. One call
   * spans two of the pages when every page between them is already protected or not mapped, and no part
   * of a whole huge page (protecting part of one would split it).
   */
  private protectSpans(region: PagerRegion, pages: number[]): void {
    const table = region.table;
    const blocks = region.blocks;
    const protectable = (first: number, end: number): boolean => {
      for (let p = first; p < end; p++) {
        const state = table.get(p);
        // Dirty (writable) and ZeroMapped (maybe written privately, unknown to us) must stay as they are.
        if (state === PageState.Dirty || state === PageState.ZeroMapped) return false;
        if (blocks !== null && blocks[p >> BLOCK_SHIFT] === BlockState.Whole) return false;
      }
      return true;
    };
    let start = pages[0];
    let end = start + 1;
    for (let i = 1; i <= pages.length; i++) {
      const page = i < pages.length ? pages[i] : -1;
      if (page >= end && page - end <= MAX_PROTECT_GAP && protectable(end, page)) {
        end = page + 1;
        continue;
      }
      this.uffd!.writeProtect(region.base + start * PAGE_SIZE, (end - start) * PAGE_SIZE, true, true);
      region.stats[C.protectCalls]++;
      start = page;
      end = page + 1;
    }
  }

  private whenWritten(region: PagerRegion): Promise<void> {
    if (region.writesInFlight === 0) return region.writeError ? Promise.reject(takeError(region)) : Promise.resolve();
    return new Promise((resolve, reject) => region.flushWaiters.push({ resolve, reject }));
  }

  private settleFlush(region: PagerRegion): void {
    const waiters = region.flushWaiters;
    region.flushWaiters = [];
    const error = region.writeError ? takeError(region) : null;
    for (const waiter of waiters) {
      if (error) waiter.reject(error);
      else waiter.resolve();
    }
  }

  private pagesInState(region: PagerRegion, state: PageState): number[] {
    const pages: number[] = [];
    const table = region.table;
    if (state === PageState.ZeroMapped) {
      for (let p = 0; p < region.pages; p++) if (table.state[p] === state) pages.push(p);
      return pages;
    }
    const frames = this.frames;
    for (let f = 0; f < frames.size; f++) {
      if (frames.region[f] === region.id && table.state[frames.page[f]] === state) pages.push(frames.page[f]);
    }
    return pages.sort((a, b) => a - b);
  }

  private publish(region: PagerRegion): void {
    const counts = region.table.counts;
    region.stats[C.residentPages] = counts[PageState.Clean] + counts[PageState.Dirty] + counts[PageState.Held];
    region.stats[C.dirtyPages] = counts[PageState.Dirty];
    region.stats[C.inflightPages] = counts[PageState.Fetching];
  }

  private mustRegion(id: number): PagerRegion {
    const region = this.regions.get(id);
    if (!region) throw new FarmemError('FARMEM_REGION_FREED', `region ${id} was freed`);
    return region;
  }
}

/** The key of the first page of `page`'s block when that block is Whole, else -1. */
function wholeBlockKey(region: PagerRegion, page: number): number {
  const blocks = region.blocks;
  if (blocks === null || blocks[page >> BLOCK_SHIFT] !== BlockState.Whole) return -1;
  return region.id * KEY_SPAN + (page - (page & BLOCK_MASK));
}

function takeError(region: PagerRegion): FarmemError {
  const error = region.writeError!;
  region.writeError = null;
  return error;
}

/** The pages that `ranges` ask for, clipped to [0, pages), as sorted disjoint [first, end) intervals. */
function mergeRanges(ranges: ReadonlyArray<readonly [number, number]>, pages: number): Array<[number, number]> {
  const sorted = ranges
    .map(([first, count]): [number, number] => [Math.max(0, first), Math.min(pages, first + count)])
    .filter(([first, end]) => end > first)
    .sort((a, b) => a[0] - b[0]);
  const merged: Array<[number, number]> = [];
  for (const [first, end] of sorted) {
    const last = merged[merged.length - 1];
    if (last !== undefined && first <= last[1]) last[1] = Math.max(last[1], end);
    else merged.push([first, end]);
  }
  return merged;
}

/** Whether sorted disjoint `intervals` hold all of [first, end). */
function covers(intervals: Array<[number, number]>, first: number, end: number): boolean {
  const holder = intervals.find(([from, to]) => from <= first && first < to);
  return holder !== undefined && end <= holder[1];
}

/** Calls fn(first, count) for each run of consecutive pages in sorted `pages`, split at stripes and maxPages. */
function forEachRun(pages: number[], stripe: number, maxPages: number, fn: (first: number, count: number) => void): void {
  let i = 0;
  while (i < pages.length) {
    const first = pages[i];
    const stripeEnd = stripe === Infinity ? Infinity : (Math.floor(first / stripe) + 1) * stripe;
    let count = 1;
    while (i + count < pages.length && pages[i + count] === first + count && first + count < stripeEnd && count < maxPages) {
      count++;
    }
    fn(first, count);
    i += count;
  }
}

function newRecord(name: string, kind: PolicyRecord['kind']): PolicyRecord {
  return {
    name,
    kind,
    since: Date.now(),
    until: null,
    error: null,
    calls: 0,
    demandFetches: 0,
    prefetched: 0,
    used: 0,
    sampled: 0,
    sampledUsed: 0,
    sampledUnused: 0,
  };
}

function adviceAt(advice: AdviceRange[], page: number): AdviceRange | null {
  for (const range of advice) {
    if (page < range.first) return null;
    if (page < range.end) return range;
  }
  return null;
}
