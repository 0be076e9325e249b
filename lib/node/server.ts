// The memory node: a TCP server that holds pages for farmem clients.
//
// It runs on machines with no userfaultfd at all, so it imports only the protocol, errors, units, the
// loop spinner and Node built-ins — never the native addon, the pager or the region API.
//
// Everything here runs on one thread: the thread that called listen() (a worker thread by default,
// see lib/memory-node.ts). Each connection's requests are handled in arrival order, so its replies leave in
// request order without any bookkeeping; READ and WRITE wait for their namespace's turn in a deficit round
// robin (FairScheduler) so that one client's pipelined bulk cannot starve another's demand reads.

import * as crypto from 'node:crypto';
import { checkCredential } from '../credentials';
import * as net from 'node:net';
import { constants as osConstants } from 'node:os';
import { FarmemError, invalidOption } from '../errors';
import { checkOptionNames } from '../options';
import { parseSize } from '../units';
import {
  DEFAULT_MAX_FRAME_BYTES,
  DEFAULT_WEIGHT,
  ErrorCode,
  FrameReader,
  FrameType,
  MAX_REGION_PAGES,
  PAGE_SIZE,
  ProtocolError,
  READ_OK_DATA_OFFSET,
  WRITE_DATA_OFFSET,
  checkEmptyBody,
  decodeAlloc,
  decodeHello,
  decodeRead,
  decodeWrite,
  encodeAllocOk,
  encodeByeOk,
  encodeError,
  encodeFreeOk,
  encodeHelloOk,
  encodePong,
  encodeWriteOk,
  frameTypeName,
  writeReadOkHeader,
} from '../protocol';
import { LoopSpinner } from '../loop-spinner';
import { loadNative } from '../native';

// ---------------------------------------------------------------------------------------------------------
// Options

export interface MemoryNodeServerOptions {
  /** Address to listen on. Default '127.0.0.1'. */
  host?: string;
  /** TCP port; 0 picks a free one. Default 0. */
  port?: number;
  /** Bytes of pages this node may hold for all clients together: a number or '1GiB'. Default '1GiB'. */
  capacity?: number | string;
  /** Shared secret clients present in HELLO; '' accepts any. Default ''. */
  token?: string;
  /** Largest frame accepted or sent. Default DEFAULT_MAX_FRAME_BYTES (a 1024-page READ_OK). */
  maxFrameBytes?: number;
  /** Close a connection that stops mid-frame (or never says HELLO) for this long; 0 disables. Default 30000. */
  idleTimeoutMs?: number;
  /** Free a namespace that has had no connection for this long; 0 keeps it forever. Default 60000. */
  orphanTimeoutMs?: number;
  /** Pages per storage slab, allocated lazily as pages are written. Default 256 (1 MiB). */
  slabPages?: number;
  /** After each request, keep the event loop polling (not sleeping) this many µs for the next; 0: never. Default 0. */
  spinMicros?: number;
}

export interface ResolvedServerOptions {
  host: string;
  port: number;
  capacity: number;
  token: string;
  maxFrameBytes: number;
  idleTimeoutMs: number;
  orphanTimeoutMs: number;
  slabPages: number;
  spinMicros: number;
}

export const SERVER_OPTION_DEFAULTS = {
  host: '127.0.0.1',
  port: 0,
  capacity: '1GiB',
  token: '',
  maxFrameBytes: DEFAULT_MAX_FRAME_BYTES,
  idleTimeoutMs: 30_000,
  orphanTimeoutMs: 60_000,
  slabPages: 256,
  spinMicros: 0,
} as const;

const SERVER_OPTION_NAMES = Object.keys(SERVER_OPTION_DEFAULTS);
// Page slots are Int32, and setTimeout takes at most 2^31-1 ms.
const MAX_CAPACITY_PAGES = 2 ** 31 - 1;
const MAX_TIMER_MS = 2 ** 31 - 1;
const MIN_MAX_FRAME_BYTES = READ_OK_DATA_OFFSET + PAGE_SIZE;
const MAX_MAX_FRAME_BYTES = READ_OK_DATA_OFFSET + 65536 * PAGE_SIZE;

function integerOption(name: string, value: unknown, min: number, max: number, expected: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalidOption(name, value, expected);
  }
  return value;
}

/** Applies defaults and validates every server option; throws FARMEM_INVALID_OPTION naming the bad one. */
export function resolveServerOptions(options: MemoryNodeServerOptions = {}): ResolvedServerOptions {
  checkOptionNames(options, SERVER_OPTION_NAMES, 'a memory node');
  const o = { ...SERVER_OPTION_DEFAULTS, ...stripUndefined(options) };

  if (typeof o.host !== 'string' || o.host.length === 0) {
    throw invalidOption('host', o.host, "a host name or IP address such as '127.0.0.1' or '0.0.0.0'");
  }
  const port = integerOption('port', o.port, 0, 65535, 'an integer port from 0 to 65535 (0 picks a free one)');

  const capacityBytes = parseSize(o.capacity, 'capacity');
  const capacityPages = Math.floor(capacityBytes / PAGE_SIZE);
  if (capacityPages < 1 || capacityPages > MAX_CAPACITY_PAGES) {
    throw invalidOption('capacity', o.capacity, `a size from ${PAGE_SIZE} bytes (one page) to just under 8TiB (2^31 - 1 pages), such as "1GiB"`);
  }

  if (typeof o.token !== 'string') throw invalidOption('token', o.token, "a string ('' for no authentication)");
  if (Buffer.byteLength(o.token, 'utf8') > 0xffff) {
    throw invalidOption('token', `${o.token.length} characters`, 'a token of at most 65535 bytes of UTF-8');
  }
  const maxFrameBytes = integerOption(
    'maxFrameBytes',
    o.maxFrameBytes,
    MIN_MAX_FRAME_BYTES,
    MAX_MAX_FRAME_BYTES,
    `an integer number of bytes from ${MIN_MAX_FRAME_BYTES} (a one-page READ_OK) to ${MAX_MAX_FRAME_BYTES}`,
  );
  const idleTimeoutMs = integerOption(
    'idleTimeoutMs',
    o.idleTimeoutMs,
    0,
    MAX_TIMER_MS,
    'a non-negative integer number of milliseconds (0 disables the timeout)',
  );
  const orphanTimeoutMs = integerOption(
    'orphanTimeoutMs',
    o.orphanTimeoutMs,
    0,
    MAX_TIMER_MS,
    'a non-negative integer number of milliseconds (0 keeps orphaned namespaces forever)',
  );
  const slabPages = integerOption('slabPages', o.slabPages, 1, 65536, 'an integer number of pages from 1 to 65536');

  return {
    host: o.host,
    port,
    capacity: capacityPages * PAGE_SIZE,
    token: o.token,
    maxFrameBytes,
    idleTimeoutMs,
    orphanTimeoutMs,
    slabPages,
    spinMicros: integerOption('spinMicros', o.spinMicros, 0, 10_000, 'an integer number of µs from 0 to 10000'),
  };
}

function stripUndefined<T extends object>(options: T): Partial<T> {
  const out: Partial<T> = {};
  for (const [key, value] of Object.entries(options)) if (value !== undefined) (out as Record<string, unknown>)[key] = value;
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Stats

export interface MemoryNodeStats {
  /** Bytes this node may hold (a whole number of pages). */
  capacityBytes: number;
  /** Bytes promised to regions at ALLOC, over all namespaces. */
  reservedBytes: number;
  /** Bytes of pages actually written and held (slab slots in use). */
  storedBytes: number;
  /** Bytes of slab memory allocated (>= storedBytes; slabs come lazily and go when the node is empty). */
  slabBytes: number;
  connections: number;
  /** Reply bytes waiting in socket queues for clients to read them. */
  queuedBytes: number;
  namespaces: number;
  regions: number;
  framesIn: number;
  framesOut: number;
  bytesIn: number;
  bytesOut: number;
  /** Fatal errors: connections closed for a malformed frame, bad HELLO or wrong token. */
  protocolErrors: number;
  /** Request-level errors: NO_SUCH_REGION, CAPACITY, OUT_OF_RANGE. */
  requestErrors: number;
  /** Request bytes received and not yet handled (queued READ and WRITE frames, partial frames), all connections. */
  pendingRequestBytes: number;
  /** Namespaces with a READ or WRITE waiting for their turn right now. */
  backloggedNamespaces: number;
  /** Deficit round robin rounds run so far (each gives every backlogged namespace one quantum). */
  schedulerRounds: number;
}

// ---------------------------------------------------------------------------------------------------------
// Storage

// Page tables are chunked so that a huge, sparsely striped region costs table memory only where written.
const TABLE_CHUNK_PAGES = 1024;
const TABLE_CHUNK_MASK = TABLE_CHUNK_PAGES - 1;
const NO_SLOT = -1;
/** Slabs are cut from mappings this large where the addon loads (see SlabStore.newSlab). */
const STORAGE_CHUNK_BYTES = 32 << 20;

/**
 * Page storage that transparent huge pages may back, from the addon; null where it does not load (off
 * Linux: a memory node runs anywhere, on the Node allocator).
 */
function hugePageStorage(): ((bytes: number) => ArrayBuffer) | null {
  try {
    const native = loadNative();
    return (bytes) => native.storageCreate(bytes);
  } catch {
    return null;
  }
}

/**
 * Page slots in large slabs allocated on first use, handed out from a free list.
 *
 * READ_OK replies are written as views of slab pages (no copy). From the moment a READ takes such a view
 * until the socket is done with it, its slots are pinned, and a pinned slot never changes: a WRITE to a
 * pinned page moves the page to a fresh slot, and a pinned slot that is released becomes a zombie that
 * returns to the free list when its last pin goes. So slabs may briefly hold more than `capacityPages`
 * slots; the excess is bounded by the reply bytes not yet handed to the kernel.
 */
class SlabStore {
  readonly capacityPages: number;
  readonly slabPages: number;
  slabs: Buffer[] = [];
  /** Per slab, per slot: how many queued replies view the slot. */
  pins: Int32Array[] = [];
  /** Slots holding pages, zombies included. */
  used = 0;
  /** Pages promised to regions at ALLOC; never more than capacityPages. */
  reservedPages = 0;
  private fresh = 0; // slots from here on were never handed out
  private freeSlots: number[] = [];
  private readonly zombies = new Set<number>();
  private readonly createStorage = hugePageStorage();
  /** The mapping new slabs are cut from, and how much of it they took. */
  private chunk: Buffer | null = null;
  private chunkTaken = 0;

  constructor(capacityPages: number, slabPages: number) {
    this.capacityPages = capacityPages;
    this.slabPages = slabPages;
  }

  /**
   * A new slab. Where the addon loads, slabs are cut from 32 MiB mappings that huge pages may back: a
   * node's first write of a page then faults once a 2 MiB page, not once a 4 KiB page (a fault costs
   * microseconds in a VM, and a fresh node takes one for every page a client writes). Unwritten parts
   * of a mapping cost address space only.
   */
  private newSlab(): Buffer {
    const bytes = this.slabPages * PAGE_SIZE;
    if (this.createStorage === null) return Buffer.allocUnsafeSlow(bytes);
    if (this.chunk === null || this.chunkTaken + bytes > this.chunk.length) {
      this.chunk = Buffer.from(this.createStorage(Math.max(1, Math.floor(STORAGE_CHUNK_BYTES / bytes)) * bytes));
      this.chunkTaken = 0;
    }
    const slab = this.chunk.subarray(this.chunkTaken, this.chunkTaken + bytes);
    this.chunkTaken += bytes;
    return slab;
  }

  allocatedBytes(): number {
    return this.slabs.length * this.slabPages * PAGE_SIZE;
  }

  allocSlot(): number {
    this.used++;
    if (this.freeSlots.length > 0) return this.freeSlots.pop()!;
    const slot = this.fresh++;
    if (slot >= this.slabs.length * this.slabPages) {
      this.slabs.push(this.newSlab());
      this.pins.push(new Int32Array(this.slabPages));
    }
    return slot;
  }

  isPinned(slot: number): boolean {
    const slab = Math.floor(slot / this.slabPages);
    return this.pins[slab][slot - slab * this.slabPages] !== 0;
  }

  releaseSlot(slot: number): void {
    if (this.isPinned(slot)) {
      this.zombies.add(slot);
      return;
    }
    this.freeSlots.push(slot);
    this.used--;
  }

  /** Pins `count` consecutive slots from `slot` (they lie in one slab). */
  pin(slot: number, count: number): void {
    const slab = Math.floor(slot / this.slabPages);
    const pins = this.pins[slab];
    for (let i = slot - slab * this.slabPages, end = i + count; i < end; i++) pins[i]++;
  }

  unpin(slot: number, count: number): void {
    const slab = Math.floor(slot / this.slabPages);
    const pins = this.pins[slab];
    if (pins === undefined) return; // the store was cleared meanwhile
    const first = slab * this.slabPages;
    for (let i = slot - first, end = i + count; i < end; i++) {
      if (--pins[i] === 0 && this.zombies.size > 0 && this.zombies.delete(first + i)) {
        this.freeSlots.push(first + i);
        this.used--;
      }
    }
  }

  pinRuns(runs: number[]): void {
    for (let k = 0; k < runs.length; k += 2) this.pin(runs[k], runs[k + 1]);
  }

  unpinRuns(runs: number[]): void {
    for (let k = 0; k < runs.length; k += 2) this.unpin(runs[k], runs[k + 1]);
    this.trim();
  }

  /** When nothing is stored any more, gives the slabs back to the allocator. */
  trim(): void {
    if (this.used !== 0 || this.slabs.length === 0) return;
    this.slabs = [];
    this.pins = [];
    this.freeSlots = [];
    this.fresh = 0;
    this.chunk = null;
  }

  clear(): void {
    this.used = 0;
    this.reservedPages = 0;
    this.zombies.clear();
    this.trim();
  }
}

class Region {
  readonly id: number;
  readonly pages: number;
  readonly reservePages: number;
  /** Distinct pages written (slots held), never more than reservePages. */
  written = 0;
  /** Chunk index -> slot of each page (NO_SLOT: never written). */
  readonly table = new Map<number, Int32Array>();

  constructor(id: number, pages: number, reservePages: number) {
    this.id = id;
    this.pages = pages;
    this.reservePages = reservePages;
  }

  chunk(index: number): Int32Array {
    let chunk = this.table.get(index);
    if (chunk === undefined) {
      chunk = new Int32Array(TABLE_CHUNK_PAGES).fill(NO_SLOT);
      this.table.set(index, chunk);
    }
    return chunk;
  }

  /** Pages in [firstPage, firstPage + pageCount) that have never been written. */
  unwrittenPages(firstPage: number, pageCount: number): number {
    let count = 0;
    const end = firstPage + pageCount;
    for (let page = firstPage; page < end; ) {
      const chunkIndex = Math.floor(page / TABLE_CHUNK_PAGES);
      const chunkEnd = Math.min(end, (chunkIndex + 1) * TABLE_CHUNK_PAGES);
      const chunk = this.table.get(chunkIndex);
      if (chunk === undefined) {
        count += chunkEnd - page;
      } else {
        for (let i = page & TABLE_CHUNK_MASK, e = i + (chunkEnd - page); i < e; i++) if (chunk[i] === NO_SLOT) count++;
      }
      page = chunkEnd;
    }
    return count;
  }
}

class Namespace {
  readonly key: string;
  readonly tokenDigest: Buffer;
  readonly regions = new Map<number, Region>();
  readonly connections = new Set<Connection>();
  nextRegionId = 1;
  orphanTimer: NodeJS.Timeout | null = null;
  /** Set by BYE or the orphan timer: the namespace is gone, its connections must not use it. */
  forgotten = false;
  /** Its share of the node against other backlogged namespaces: the weight of its most recent HELLO. */
  weight = DEFAULT_WEIGHT;
  /** Cost it may still spend in the scheduler (deficit round robin); 0 whenever nothing of it waits. */
  deficit = 0;
  /** Its connections whose next frame is a READ or WRITE waiting for a turn, served round robin. */
  readonly ready: Connection[] = [];
  /** In the scheduler's list of backlogged namespaces. */
  backlogged = false;
  /** Most pages its regions may reserve, from its credential; 0: no quota but the node's capacity. */
  quotaPages = 0;

  constructor(key: string, tokenDigest: Buffer) {
    this.key = key;
    this.tokenDigest = tokenDigest;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Connections

// Stop reading requests once this many reply bytes wait in the socket; resume on 'drain'.
const OUTPUT_BACKLOG_BYTES = 8 * 1024 * 1024;

// After a fatal error the node half-closes; a peer that never closes its side is destroyed after this.
const FATAL_LINGER_MS = 2000;

/** Cost a namespace earns per round for each unit of its weight (deficit round robin quantum). */
export const QUANTUM_BYTES = 256 * 1024;
/** Cost of any READ or WRITE on top of the page bytes it moves: small frames are cheap, not free. */
export const FRAME_COST_BYTES = 4096;
// A namespace alone with work gets rounds back to back up to about this much cost, then the node turns to
// I/O (a setImmediate) so that others' requests can join. It bounds how long a newly arriving namespace waits
// for its first turn (the node without fair queueing handled up to 8 MiB per batch of input); at 1 MiB a lone
// client pipelining 1 MiB READs cost the node up to a tenth more CPU per READ in smaller writes.
const SOLO_PASS_BYTES = 4 * 1024 * 1024;

/** The slab slots a queued READ_OK views, as pairs (first slot, count); pinned until the socket is done. */
interface SlabViews {
  runs: number[];
  pinned: boolean;
}

/** Why Connection.serve stopped. */
const enum Head {
  /** No complete frame waits. */
  Empty,
  /** A READ or WRITE waits for (more of) its namespace's turn. */
  Turn,
  /** Replies back up: nothing more until 'drain'. */
  Paused,
  /** The connection is ending. */
  Closed,
}

function digest(token: string): Buffer {
  return crypto.createHash('sha256').update(token, 'utf8').digest();
}

/** What handling a READ or WRITE costs its namespace: the page bytes it moves plus FRAME_COST_BYTES. */
function frameCost(type: number, frame: Buffer, maxFrameBytes: number): number {
  if (type === FrameType.Write) return Math.max(0, frame.length - WRITE_DATA_OFFSET) + FRAME_COST_BYTES;
  // A malformed READ is refused, and one whose reply would not fit answered OUT_OF_RANGE: no pages either way.
  if (frame.length < READ_OK_DATA_OFFSET - 4) return FRAME_COST_BYTES;
  const pageBytes = frame.readUInt32LE(24) * PAGE_SIZE;
  return (READ_OK_DATA_OFFSET + pageBytes <= maxFrameBytes ? pageBytes : 0) + FRAME_COST_BYTES;
}

class Connection {
  readonly server: MemoryNodeServer;
  readonly socket: net.Socket;
  readonly reader: FrameReader;
  ns: Namespace | null = null;
  /** In its namespace's `ready` list: the frame at the head of its input is a READ or WRITE awaiting a turn. */
  scheduled = false;
  /** Reply buffers since the last flush, in request order (a READ_OK is several: header, then page views). */
  private out: Buffer[] = [];
  /** Parallel to `out`: on the last buffer of a READ_OK, the slab slots its views hold. */
  private outViews: (SlabViews | undefined)[] = [];
  private outBytes = 0;
  /** Waiting for 'drain'; unread requests stay in the reader meanwhile. */
  private paused = false;
  /** The socket is paused: replies back up, or a frame limit's worth of requests waits unhandled. */
  private readingHeld = false;
  /** A fatal error was sent or the node is stopping: input is ignored from now on. */
  closing = false;

  constructor(server: MemoryNodeServer, socket: net.Socket) {
    this.server = server;
    this.socket = socket;
    this.reader = new FrameReader(server.options.maxFrameBytes);
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('drain', () => this.onDrain());
    socket.on('error', () => {}); // resets and the like: 'close' follows and cleans up
    socket.on('close', () => server.connectionClosed(this));
    if (server.options.idleTimeoutMs > 0) {
      socket.setTimeout(server.options.idleTimeoutMs);
      socket.on('timeout', () => this.onTimeout());
    }
  }

  private onData(chunk: Buffer): void {
    this.server.counters.bytesIn += chunk.length;
    this.server.spinner.poke();
    if (this.closing) return;
    this.reader.push(chunk);
    this.pump();
  }

  private onDrain(): void {
    if (!this.paused || this.closing) return;
    this.paused = false;
    this.pump();
  }

  private onTimeout(): void {
    // Requests waiting for their turn or for 'drain' are the node's delay, not a stalled client.
    if (this.closing || this.paused || this.scheduled) return;
    if (this.ns === null) {
      this.fatal(ErrorCode.NOT_READY, `no HELLO within ${this.server.options.idleTimeoutMs} ms`);
    } else if (this.reader.buffered > 0) {
      this.fatal(
        ErrorCode.BAD_FRAME,
        `incomplete frame: ${this.reader.buffered} bytes, then nothing for ${this.server.options.idleTimeoutMs} ms`,
      );
    }
  }

  /**
   * Outside the scheduler (new input, 'drain'): handles the frames at the head of the input that need no
   * turn, and queues the connection for its namespace's turn when a READ or WRITE comes up.
   */
  private pump(): void {
    if (!this.scheduled && !this.paused && !this.closing) {
      const head = this.serve(null);
      this.flushOrPause();
      // A READ or WRITE behind the frames just handled waits for a turn; everything after it waits with it.
      if (head === Head.Turn && !this.paused && !this.closing) this.server.scheduler.enqueue(this, this.ns!);
    }
    this.updateReading();
  }

  /**
   * Handles frames from the head of the input in order, until one must wait. Frames that need no turn
   * (HELLO, PING, ALLOC, FREE, BYE, anything before HELLO or after the namespace ended: all cheap) are handled
   * at once. A READ or WRITE is handled only within `turn` (its namespace, in the scheduler), at most one per
   * call so that a namespace's connections take turns, and only when `turn.deficit` covers its cost, which is
   * then charged. Returns why it stopped.
   */
  serve(turn: Namespace | null): Head {
    // The request a fatal error is blamed on; 0 while no complete frame is at fault (a bad length).
    let requestId = 0;
    let servedOne = false;
    try {
      for (;;) {
        if (this.closing) return Head.Closed;
        if (this.paused) return Head.Paused;
        requestId = 0;
        const next = this.reader.peek();
        if (next === null) return Head.Empty;
        const { type, regionId } = next.header;
        requestId = next.header.requestId;
        const ns = this.ns;
        if (ns !== null && !ns.forgotten && (type === FrameType.Read || type === FrameType.Write)) {
          if (turn === null || servedOne) return Head.Turn;
          const cost = frameCost(type, next.frame, this.server.options.maxFrameBytes);
          if (cost > turn.deficit) return Head.Turn;
          turn.deficit -= cost;
          servedOne = true;
        }
        this.reader.skip(next.frame.length);
        this.server.counters.framesIn++;
        this.handle(type, requestId, regionId, next.frame);
        if (this.outBytes + this.socket.writableLength >= OUTPUT_BACKLOG_BYTES && !this.flush()) {
          this.paused = true;
          this.updateReading();
        }
      }
    } catch (err) {
      if (this.closing) return Head.Closed;
      if (err instanceof ProtocolError) this.fatal(err.protocolCode, err.message, requestId);
      else this.fatal(ErrorCode.INTERNAL, `internal error: ${(err as Error)?.message ?? String(err)}`, requestId);
      return Head.Closed;
    }
  }

  /** Sends the replies batched so far; waits for 'drain' when OUTPUT_BACKLOG_BYTES already wait in the socket. */
  flushOrPause(): void {
    if (this.closing) return; // end() flushed, and nothing is handled after it
    if (!this.flush() && this.socket.writableLength >= OUTPUT_BACKLOG_BYTES) this.paused = true;
    this.updateReading();
  }

  /**
   * Reads from the socket unless replies back up (until 'drain') or a whole frame limit of requests waits
   * unhandled in the reader (until the scheduler gets to them): TCP then holds back the client.
   */
  private updateReading(): void {
    if (this.closing) return; // end() keeps reading to drain the peer
    const hold = this.paused || this.reader.buffered >= this.server.options.maxFrameBytes;
    if (hold === this.readingHeld) return;
    this.readingHeld = hold;
    if (hold) this.socket.pause();
    else this.socket.resume();
  }

  reply(frame: Buffer): void {
    this.out.push(frame);
    this.outViews.push(undefined);
    this.outBytes += frame.length;
    this.server.counters.framesOut++;
    this.server.counters.bytesOut += frame.length;
  }

  /**
   * Queues one frame made of `parts`, some of them views of the slab slots in `runs`. The slots are pinned
   * from now until the socket is done with the views (see SlabStore): a later WRITE or FREE in this same
   * batch, or while the reply waits in the socket, must not change them.
   */
  replyViews(parts: Buffer[], frameLength: number, runs: number[]): void {
    let views: SlabViews | undefined;
    if (runs.length > 0) {
      this.server.store.pinRuns(runs);
      views = { runs, pinned: true };
    }
    const last = parts.length - 1;
    for (let i = 0; i <= last; i++) {
      this.out.push(parts[i]);
      this.outViews.push(i === last ? views : undefined);
    }
    this.outBytes += frameLength;
    this.server.counters.framesOut++;
    this.server.counters.bytesOut += frameLength;
  }

  /** Writes the batched replies; returns false when the socket asks the writer to wait for 'drain'. */
  flush(): boolean {
    const out = this.out;
    if (out.length === 0) return this.socket.writableLength < OUTPUT_BACKLOG_BYTES;
    const views = this.outViews;
    this.out = [];
    this.outViews = [];
    this.outBytes = 0;
    const store = this.server.store;
    if (this.socket.destroyed) {
      for (const v of views) if (v !== undefined) store.unpinRuns(v.runs);
      return true;
    }
    let ok = true;
    let anyViews = false;
    if (out.length > 1) this.socket.cork();
    for (let i = 0; i < out.length; i++) {
      const v = views[i];
      if (v === undefined) {
        ok = this.socket.write(out[i]);
      } else {
        anyViews = true;
        // Runs once the kernel has the bytes (or the write failed); always after this flush returns.
        ok = this.socket.write(out[i], () => {
          if (v.pinned) store.unpinRuns(v.runs);
          v.pinned = false;
        });
      }
    }
    if (out.length > 1) this.socket.uncork();
    // If the kernel took every byte at once, nothing views the slabs any more: unpin now rather than a
    // tick later. Otherwise the views wait in the socket queue and stay pinned until their callbacks.
    if (anyViews && this.socket.writableLength === 0) {
      for (const v of views) {
        if (v === undefined || !v.pinned) continue;
        store.unpinRuns(v.runs);
        v.pinned = false;
      }
    }
    return ok;
  }

  requestError(requestId: number, regionId: number, code: ErrorCode, message: string): void {
    this.server.counters.requestErrors++;
    this.reply(encodeError(requestId, code, message, regionId));
  }

  /** Sends ERROR, ends the connection and ignores anything that still arrives. */
  fatal(code: ErrorCode, message: string, requestId = 0): void {
    if (this.closing) return;
    this.closing = true;
    this.server.counters.protocolErrors++;
    // Replies to the requests before the bad frame were earned; they go out first.
    this.reply(encodeError(requestId, code, message));
    this.end();
  }

  /** Flushes pending replies, then half-closes; destroys the socket if the peer lingers. */
  end(): void {
    this.closing = true;
    this.flush();
    this.socket.end();
    this.socket.resume(); // keep draining input so a close does not turn into a reset that eats the reply
    setTimeout(() => this.socket.destroy(), FATAL_LINGER_MS).unref();
  }

  private handle(type: number, requestId: number, regionId: number, frame: Buffer): void {
    const ns = this.ns;
    if (ns === null) {
      if (type !== FrameType.Hello) {
        throw new ProtocolError(ErrorCode.NOT_READY, `${frameTypeName(type)} before HELLO: say HELLO first`);
      }
      this.server.hello(this, requestId, frame);
      return;
    }
    if (ns.forgotten) {
      // Another connection said BYE (or the namespace was reclaimed) while this one was still open.
      throw new ProtocolError(ErrorCode.NOT_READY, 'this namespace was ended by BYE; reconnect with HELLO');
    }
    switch (type) {
      case FrameType.Read:
        this.server.read(this, ns, requestId, regionId, frame);
        return;
      case FrameType.Write:
        this.server.write(this, ns, requestId, regionId, frame);
        return;
      case FrameType.Alloc:
        this.server.alloc(this, ns, requestId, frame);
        return;
      case FrameType.Free:
        checkEmptyBody(frame, 'FREE');
        this.server.free(this, ns, requestId, regionId);
        return;
      case FrameType.Ping:
        checkEmptyBody(frame, 'PING');
        this.reply(encodePong(requestId));
        return;
      case FrameType.Bye:
        checkEmptyBody(frame, 'BYE');
        this.server.bye(this, ns, requestId);
        return;
      case FrameType.Hello:
        throw new ProtocolError(ErrorCode.BAD_FRAME, 'HELLO sent twice on one connection');
      default:
        throw new ProtocolError(
          ErrorCode.UNKNOWN_TYPE,
          `frame type ${frameTypeName(type)} is not a request this node understands`,
        );
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Fair queueing

/**
 * Deficit round robin (Shreedhar and Varghese) over namespaces with a READ or WRITE waiting, so that one
 * client pipelining large requests cannot starve another namespace on this one thread. Each round gives every
 * backlogged namespace `weight × QUANTUM_BYTES` of deficit, spent on its frames at frameCost() each; within a
 * namespace its connections (a client's urgent and bulk ones) take turns a frame at a time, and each
 * connection's frames stay in arrival order. A namespace with nothing left waiting drops its deficit.
 *
 * Runs on the server's thread. A round runs at once when work arrives and nothing is queued (no added hop
 * for a lone client); while work remains, the next round waits for a setImmediate so that requests arriving
 * meanwhile from other clients join it.
 */
class FairScheduler {
  /** Backlogged namespaces, in round order. */
  private readonly backlog: Namespace[] = [];
  private pending: NodeJS.Immediate | null = null;
  private running = false;
  private stopped = false;
  /** Connections served whose replies wait for the end of a turn (or of the pass) to be flushed. */
  private readonly dirty = new Set<Connection>();

  constructor(private readonly server: MemoryNodeServer) {}

  get backlogged(): number {
    return this.backlog.length;
  }

  /** `conn`'s next frame is a READ or WRITE: it waits for its namespace's turn. */
  enqueue(conn: Connection, ns: Namespace): void {
    if (this.stopped) return;
    if (!conn.scheduled) {
      conn.scheduled = true;
      ns.ready.push(conn);
    }
    if (!ns.backlogged) {
      ns.backlogged = true;
      this.backlog.push(ns);
    }
    // A pass already queued will see it; otherwise nothing else waits and it may be served right now.
    if (this.pending === null && !this.running) this.pass();
  }

  stop(): void {
    this.stopped = true;
    if (this.pending !== null) clearImmediate(this.pending);
    this.pending = null;
    for (const ns of this.backlog) {
      ns.backlogged = false;
      ns.ready.length = 0;
    }
    this.backlog.length = 0;
    this.dirty.clear();
  }

  private pass(): void {
    this.pending = null;
    if (this.stopped) return;
    this.running = true;
    try {
      let served = 0;
      let shared = false; // some round of this pass had more than one connection with work
      while (this.backlog.length > 0) {
        shared ||= this.backlog.length > 1 || this.backlog[0].ready.length > 1;
        served += this.round();
        // A round that served nothing only raised deficits toward large frames: no reply waited on it.
        // Deficits grow every round and a frame costs at most maxFrameBytes + FRAME_COST_BYTES, so this ends.
        if (served === 0) continue;
        // A lone connection has no one to be fair to: keep going, but turn to I/O now and then. Shared, one
        // round per pass, so that requests arriving meanwhile join the next one.
        if (!shared && this.backlog.length === 1 && served < SOLO_PASS_BYTES) continue;
        break;
      }
    } finally {
      this.running = false;
      this.flushDirty();
    }
    if (this.backlog.length > 0 && !this.stopped) this.pending = setImmediate(() => this.pass());
  }

  /** One turn for every namespace backlogged when the round began; those still backlogged go to the back. */
  private round(): number {
    this.server.counters.schedulerRounds++;
    let served = 0;
    for (let n = this.backlog.length; n > 0; n--) {
      const ns = this.backlog.shift()!;
      served += this.turn(ns);
      // Other namespaces wait for the CPU, not for these replies: send them now. Alone, the replies of
      // several turns leave together at the end of the pass.
      if (this.backlog.length > 0) this.flushDirty();
      if (ns.ready.length > 0 && !this.stopped) {
        this.backlog.push(ns);
      } else {
        ns.backlogged = false;
        ns.deficit = 0;
      }
    }
    return served;
  }

  /** Adds a quantum to `ns` and serves its ready connections in turn while the deficit covers their next frame. */
  private turn(ns: Namespace): number {
    ns.deficit += ns.weight * QUANTUM_BYTES;
    const before = ns.deficit;
    const ready = ns.ready;
    let unaffordable = 0; // connections in a row whose next frame costs more than the deficit left
    while (ready.length > 0 && unaffordable < ready.length) {
      const conn = ready.shift()!;
      const deficit = ns.deficit;
      const head = conn.serve(ns);
      if (ns.deficit < deficit) unaffordable = 0;
      else if (head === Head.Turn) unaffordable++;
      if (head === Head.Turn) {
        ready.push(conn);
        this.dirty.add(conn); // its replies may leave with the next ones
      } else {
        // Drained (or paused, or ending): nothing to batch its replies with, so they leave now. pump()
        // queues it again on new input or 'drain'.
        conn.scheduled = false;
        this.dirty.delete(conn);
        conn.flushOrPause();
      }
    }
    return before - ns.deficit;
  }

  private flushDirty(): void {
    if (this.dirty.size === 0) return;
    for (const conn of this.dirty) conn.flushOrPause();
    this.dirty.clear();
  }
}

// ---------------------------------------------------------------------------------------------------------
// Server

export interface ListenAddress {
  host: string;
  port: number;
}

/**
 * A memory node. Holds pages for any number of namespaces (one per client FarMemory), each with its own
 * regions, within one capacity shared by all. See docs/protocol.md for the wire format and semantics.
 */
export class MemoryNodeServer {
  readonly options: ResolvedServerOptions;
  readonly counters = {
    framesIn: 0,
    framesOut: 0,
    bytesIn: 0,
    bytesOut: 0,
    protocolErrors: 0,
    requestErrors: 0,
    schedulerRounds: 0,
  };
  /** @internal */
  readonly store: SlabStore;
  /** @internal */
  readonly scheduler: FairScheduler = new FairScheduler(this);
  private readonly tokenDigest: Buffer;
  private readonly namespaces = new Map<string, Namespace>();
  private readonly connections = new Set<Connection>();
  private readonly server: net.Server;
  private listening: ListenAddress | null = null;
  private closed = false;
  private closePromise: Promise<void> | null = null;
  /** Polls rather than sleeps after each request (spinMicros), for clients waiting in page faults. */
  readonly spinner: LoopSpinner;

  constructor(options: MemoryNodeServerOptions = {}) {
    this.options = resolveServerOptions(options);
    this.spinner = new LoopSpinner(this.options.spinMicros);
    this.store = new SlabStore(this.options.capacity / PAGE_SIZE, this.options.slabPages);
    this.tokenDigest = digest(this.options.token);
    this.server = net.createServer((socket) => this.accept(socket));
  }

  /** Starts listening; resolves with the bound address (the real port when port was 0). */
  listen(): Promise<ListenAddress> {
    if (this.closed) return Promise.reject(new FarmemError('FARMEM_CLOSED', 'this memory node was closed'));
    if (this.listening) return Promise.resolve(this.listening);
    const { host, port } = this.options;
    return new Promise<ListenAddress>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => {
        this.server.off('listening', onListening);
        reject(listenError(err, host, port));
      };
      const onListening = () => {
        this.server.off('error', onError);
        const address = this.server.address() as net.AddressInfo;
        this.listening = { host: address.address, port: address.port };
        resolve(this.listening);
      };
      this.server.once('error', onError);
      this.server.once('listening', onListening);
      this.server.listen(port, host);
    });
  }

  /** Stops listening, destroys every connection and drops every page. Idempotent. */
  close(): Promise<void> {
    if (this.closePromise) return this.closePromise;
    this.closed = true;
    this.spinner.stop();
    this.closePromise = new Promise<void>((resolve) => {
      this.scheduler.stop();
      for (const conn of this.connections) {
        conn.closing = true;
        conn.socket.destroy();
      }
      for (const ns of this.namespaces.values()) if (ns.orphanTimer) clearTimeout(ns.orphanTimer);
      this.namespaces.clear();
      this.store.clear();
      if (this.listening) this.server.close(() => resolve());
      else resolve();
    });
    return this.closePromise;
  }

  stats(): MemoryNodeStats {
    let regions = 0;
    for (const ns of this.namespaces.values()) regions += ns.regions.size;
    let queuedBytes = 0;
    let pendingRequestBytes = 0;
    for (const conn of this.connections) {
      queuedBytes += conn.socket.writableLength;
      pendingRequestBytes += conn.reader.buffered;
    }
    return {
      capacityBytes: this.options.capacity,
      reservedBytes: this.store.reservedPages * PAGE_SIZE,
      storedBytes: this.store.used * PAGE_SIZE,
      slabBytes: this.store.allocatedBytes(),
      connections: this.connections.size,
      queuedBytes,
      namespaces: this.namespaces.size,
      regions,
      pendingRequestBytes,
      backloggedNamespaces: this.scheduler.backlogged,
      ...this.counters,
    };
  }

  private accept(socket: net.Socket): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    this.connections.add(new Connection(this, socket));
  }

  /** @internal Called on a connection's 'close'. */
  connectionClosed(conn: Connection): void {
    this.connections.delete(conn);
    const ns = conn.ns;
    if (ns === null) return;
    conn.ns = null;
    ns.connections.delete(conn);
    if (conn.scheduled) {
      conn.scheduled = false;
      const at = ns.ready.indexOf(conn);
      if (at >= 0) ns.ready.splice(at, 1);
    }
    if (ns.connections.size === 0 && !ns.forgotten && !this.closed) this.orphaned(ns);
  }

  private orphaned(ns: Namespace): void {
    const ms = this.options.orphanTimeoutMs;
    if (ms === 0) return;
    ns.orphanTimer = setTimeout(() => {
      ns.orphanTimer = null;
      if (ns.connections.size === 0) this.forget(ns);
    }, ms);
    ns.orphanTimer.unref();
  }

  /** Frees every region of a namespace and removes it. */
  private forget(ns: Namespace): void {
    if (ns.forgotten) return;
    ns.forgotten = true;
    if (ns.orphanTimer) clearTimeout(ns.orphanTimer);
    ns.orphanTimer = null;
    for (const region of ns.regions.values()) this.releaseRegion(region);
    ns.regions.clear();
    this.namespaces.delete(ns.key);
    this.store.trim();
  }

  private releaseRegion(region: Region): void {
    const store = this.store;
    // Released high to low, so that the free list (a stack) hands them out low to high: consecutive
    // slots for consecutive pages, copied and sent in runs.
    for (const chunk of region.table.values()) {
      for (let i = TABLE_CHUNK_PAGES - 1; i >= 0; i--) if (chunk[i] !== NO_SLOT) store.releaseSlot(chunk[i]);
    }
    region.table.clear();
    store.reservedPages -= region.reservePages;
  }

  // ---- request handlers (all run on the server's thread, synchronously, each connection's in arrival order) ----

  /** @internal */
  hello(conn: Connection, requestId: number, frame: Buffer): void {
    const hello = decodeHello(frame);
    const clientDigest = digest(hello.token);
    // Either the node's token, or a namespace credential derived from it for exactly this namespace key
    // (what a coffer's host hands its coffer): that one opens this namespace and no other.
    const credential = checkCredential(this.options.token, hello.namespaceKey, hello.token);
    if (credential === 'forged') {
      throw new ProtocolError(
        ErrorCode.AUTH_FAILED,
        'namespace credential refused: it does not verify for this namespace key (derived from another token, or for another namespace)',
      );
    }
    if (credential === null && this.options.token !== '' && !crypto.timingSafeEqual(clientDigest, this.tokenDigest)) {
      throw new ProtocolError(ErrorCode.AUTH_FAILED, 'wrong token');
    }
    const key = hello.namespaceKey.toString('hex');
    let ns = this.namespaces.get(key);
    const resumed = ns !== undefined;
    if (ns === undefined) {
      ns = new Namespace(key, clientDigest);
      this.namespaces.set(key, ns);
    } else if (!crypto.timingSafeEqual(clientDigest, ns.tokenDigest)) {
      throw new ProtocolError(ErrorCode.AUTH_FAILED, 'this namespace was created with a different token');
    }
    if (ns.orphanTimer) {
      clearTimeout(ns.orphanTimer);
      ns.orphanTimer = null;
    }
    ns.weight = hello.weight;
    ns.quotaPages = credential === null ? 0 : credential.quotaPages;
    ns.connections.add(conn);
    conn.ns = ns;
    conn.reply(
      encodeHelloOk(requestId, {
        version: hello.version,
        pageSize: PAGE_SIZE,
        maxFrameBytes: this.options.maxFrameBytes,
        capacityBytes: this.options.capacity,
        reservedBytes: this.store.reservedPages * PAGE_SIZE,
        resumed,
      }),
    );
  }

  /** @internal */
  alloc(conn: Connection, ns: Namespace, requestId: number, frame: Buffer): void {
    const { regionPages, reservePages } = decodeAlloc(frame);
    if (regionPages < 1 || regionPages > MAX_REGION_PAGES) {
      conn.requestError(
        requestId,
        0,
        ErrorCode.OUT_OF_RANGE,
        `ALLOC of ${regionPages} pages: a region has from 1 to ${MAX_REGION_PAGES} pages`,
      );
      return;
    }
    if (reservePages > regionPages) {
      conn.requestError(
        requestId,
        0,
        ErrorCode.OUT_OF_RANGE,
        `ALLOC reserves ${reservePages} pages for a region of only ${regionPages}`,
      );
      return;
    }
    const store = this.store;
    const freePages = store.capacityPages - store.reservedPages;
    if (reservePages > freePages) {
      conn.requestError(
        requestId,
        0,
        ErrorCode.CAPACITY,
        `memory node full: asked to reserve ${reservePages} pages (${mib(reservePages)}), ` +
          `but only ${freePages} of ${store.capacityPages} pages (${mib(freePages)} of ${mib(store.capacityPages)}) ` +
          'are free; free regions, add nodes or start this node with a larger capacity',
      );
      return;
    }
    if (ns.quotaPages > 0) {
      let reserved = 0;
      for (const r of ns.regions.values()) reserved += r.reservePages;
      if (reserved + reservePages > ns.quotaPages) {
        conn.requestError(
          requestId,
          0,
          ErrorCode.CAPACITY,
          `namespace quota reached: asked to reserve ${reservePages} pages (${mib(reservePages)}) with ` +
            `${reserved} of its ${ns.quotaPages} pages (${mib(ns.quotaPages)}) reserved already; free regions, ` +
            'or have the host grant a larger remoteCapacity',
        );
        return;
      }
    }
    if (ns.nextRegionId > 0xffffffff) {
      // A request error, not INTERNAL: the client counts INTERNAL as fatal (isFatalErrorCode), and this connection carries on.
      conn.requestError(requestId, 0, ErrorCode.CAPACITY, 'this namespace has used up its 2^32-1 region ids: open a new FarMemory, which gets a new namespace');
      return;
    }
    const region = new Region(ns.nextRegionId++, regionPages, reservePages);
    ns.regions.set(region.id, region);
    store.reservedPages += reservePages;
    conn.reply(encodeAllocOk(requestId, region.id, regionPages));
  }

  /** @internal */
  free(conn: Connection, ns: Namespace, requestId: number, regionId: number): void {
    const region = this.regionFor(conn, ns, requestId, regionId, 'FREE');
    if (region === undefined) return;
    ns.regions.delete(regionId);
    this.releaseRegion(region);
    this.store.trim();
    conn.reply(encodeFreeOk(requestId, regionId));
  }

  /** @internal */
  bye(conn: Connection, ns: Namespace, requestId: number): void {
    this.forget(ns);
    conn.reply(encodeByeOk(requestId));
    conn.end();
    // The namespace is gone for every connection that shared it.
    for (const other of ns.connections) if (other !== conn) other.end();
  }

  /** @internal */
  read(conn: Connection, ns: Namespace, requestId: number, regionId: number, frame: Buffer): void {
    const { firstPage, pageCount } = decodeRead(frame);
    const region = this.regionFor(conn, ns, requestId, regionId, 'READ');
    if (region === undefined) return;
    if (!this.checkRange(conn, region, requestId, 'READ', firstPage, pageCount)) return;
    const frameLength = READ_OK_DATA_OFFSET + pageCount * PAGE_SIZE;
    if (frameLength > this.options.maxFrameBytes) {
      conn.requestError(
        requestId,
        regionId,
        ErrorCode.OUT_OF_RANGE,
        `READ of ${pageCount} pages needs a ${frameLength}-byte reply, over this node's ` +
          `maxFrameBytes ${this.options.maxFrameBytes}: read at most ` +
          `${Math.floor((this.options.maxFrameBytes - READ_OK_DATA_OFFSET) / PAGE_SIZE)} pages at a time`,
      );
      return;
    }
    // Sent as the header followed by views of the slab pages, with no copy: it measured up to a third less
    // CPU on the node than assembling one Buffer (docs/protocol.md, "Performance"). Views that outlive the
    // flush are pinned (see SlabStore).
    const head = Buffer.allocUnsafe(READ_OK_DATA_OFFSET);
    writeReadOkHeader(head, 0, requestId, regionId, firstPage, pageCount);
    const parts: Buffer[] = [head];
    const runs: number[] = [];
    const { slabs, slabPages } = this.store;
    const end = firstPage + pageCount;
    for (let page = firstPage; page < end; ) {
      const chunkIndex = Math.floor(page / TABLE_CHUNK_PAGES);
      const chunkEnd = Math.min(end, (chunkIndex + 1) * TABLE_CHUNK_PAGES);
      const chunk = region.table.get(chunkIndex);
      if (chunk === undefined) {
        pushZeroPages(parts, chunkEnd - page);
        page = chunkEnd;
        continue;
      }
      let i = page & TABLE_CHUNK_MASK;
      const iEnd = i + (chunkEnd - page);
      while (i < iEnd) {
        const slot = chunk[i];
        let run = 1;
        if (slot === NO_SLOT) {
          while (i + run < iEnd && chunk[i + run] === NO_SLOT) run++;
          pushZeroPages(parts, run);
        } else {
          // One view per run of pages whose slots are consecutive within one slab.
          const slabIndex = Math.floor(slot / slabPages);
          const inSlab = slot - slabIndex * slabPages;
          while (i + run < iEnd && chunk[i + run] === slot + run && inSlab + run < slabPages) run++;
          parts.push(slabs[slabIndex].subarray(inSlab * PAGE_SIZE, (inSlab + run) * PAGE_SIZE));
          runs.push(slot, run);
        }
        i += run;
      }
      page = chunkEnd;
    }
    conn.replyViews(parts, frameLength, runs);
  }

  /** @internal */
  write(conn: Connection, ns: Namespace, requestId: number, regionId: number, frame: Buffer): void {
    const { firstPage, pageCount } = decodeWrite(frame);
    const region = this.regionFor(conn, ns, requestId, regionId, 'WRITE');
    if (region === undefined) return;
    if (!this.checkRange(conn, region, requestId, 'WRITE', firstPage, pageCount)) return;
    const newPages = region.unwrittenPages(firstPage, pageCount);
    if (region.written + newPages > region.reservePages) {
      conn.requestError(
        requestId,
        regionId,
        ErrorCode.CAPACITY,
        `WRITE would hold ${region.written + newPages} distinct pages of region ${regionId} on this node, ` +
          `more than the ${region.reservePages} reserved for it at ALLOC`,
      );
      return;
    }
    region.written += newPages;
    const store = this.store;
    const slabPages = store.slabPages;
    // Copies go out in runs of consecutive slots within one slab.
    let runSlot = NO_SLOT;
    let runPages = 0;
    let runFrom = WRITE_DATA_OFFSET;
    const copyRun = () => {
      const slabIndex = Math.floor(runSlot / slabPages);
      const at = (runSlot - slabIndex * slabPages) * PAGE_SIZE;
      frame.copy(store.slabs[slabIndex], at, runFrom, runFrom + runPages * PAGE_SIZE);
    };
    const end = firstPage + pageCount;
    let from = WRITE_DATA_OFFSET;
    for (let page = firstPage; page < end; ) {
      const chunkIndex = Math.floor(page / TABLE_CHUNK_PAGES);
      const chunkEnd = Math.min(end, (chunkIndex + 1) * TABLE_CHUNK_PAGES);
      const chunk = region.chunk(chunkIndex);
      for (let i = page & TABLE_CHUNK_MASK, iEnd = i + (chunkEnd - page); i < iEnd; i++, from += PAGE_SIZE) {
        let slot = chunk[i];
        if (slot === NO_SLOT) {
          slot = chunk[i] = store.allocSlot();
        } else if (store.isPinned(slot)) {
          // A queued READ_OK still views this slot: the new contents go to a fresh one.
          store.releaseSlot(slot);
          slot = chunk[i] = store.allocSlot();
        }
        if (runPages > 0 && slot === runSlot + runPages && slot % slabPages !== 0) {
          runPages++;
        } else {
          if (runPages > 0) copyRun();
          runSlot = slot;
          runPages = 1;
          runFrom = from;
        }
      }
      page = chunkEnd;
    }
    if (runPages > 0) copyRun();
    conn.reply(encodeWriteOk(requestId, regionId, firstPage, pageCount));
  }

  /** The namespace's region `regionId`, or undefined after answering NO_SUCH_REGION. */
  private regionFor(conn: Connection, ns: Namespace, requestId: number, regionId: number, what: string): Region | undefined {
    const region = ns.regions.get(regionId);
    if (region === undefined) {
      conn.requestError(requestId, regionId, ErrorCode.NO_SUCH_REGION, noSuchRegion(what, regionId));
    }
    return region;
  }

  private checkRange(
    conn: Connection,
    region: Region,
    requestId: number,
    what: string,
    firstPage: number,
    pageCount: number,
  ): boolean {
    if (pageCount >= 1 && firstPage + pageCount <= region.pages) return true;
    conn.requestError(
      requestId,
      region.id,
      ErrorCode.OUT_OF_RANGE,
      pageCount < 1
        ? `${what} of 0 pages: ask for at least one`
        : `${what} of pages ${firstPage}..${firstPage + pageCount - 1} is past the end of region ${region.id} ` +
            `(${region.pages} pages)`,
    );
    return false;
  }
}

// Never written: views of it stand in for pages no one has written.
const ZERO_PAGES = Buffer.alloc(64 * PAGE_SIZE);

function pushZeroPages(parts: Buffer[], pages: number): void {
  for (; pages > 0; pages -= 64) parts.push(pages >= 64 ? ZERO_PAGES : ZERO_PAGES.subarray(0, pages * PAGE_SIZE));
}
function noSuchRegion(what: string, regionId: number): string {
  return `${what}: no region ${regionId} in this namespace (never allocated, freed, or reclaimed after the client was gone too long)`;
}

function mib(pages: number): string {
  const bytes = pages * PAGE_SIZE;
  return bytes >= 1024 * 1024 ? `${+(bytes / (1024 * 1024)).toFixed(1)} MiB` : `${bytes / 1024} KiB`;
}

function listenError(err: NodeJS.ErrnoException, host: string, port: number): FarmemError {
  const code = err.code ?? 'EUNKNOWN';
  const errno = typeof err.errno === 'number' ? Math.abs(err.errno) : (osConstants.errno as Record<string, number>)[code];
  const where = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  const why =
    code === 'EADDRINUSE'
      ? 'address in use — pick another --port or 0'
      : code === 'EACCES'
        ? 'permission denied — ports below 1024 need privileges; pick another --port or 0'
        : code === 'EADDRNOTAVAIL'
          ? 'no such local address — pick a --host this machine has, or 0.0.0.0'
          : code === 'ENOTFOUND' || code === 'EAI_AGAIN'
            ? 'cannot resolve the host name — pass an IP address as --host'
            : `${err.message}`;
  return new FarmemError('FARMEM_SYSCALL', `cannot listen on ${where}: ${why}`, {
    errno,
    syscall: 'listen',
    errnoCode: code,
    cause: err,
  });
}

