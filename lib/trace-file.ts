// Fault trace files: what the pager records (one record per fault it saw) and what `farmem replay` reads.
// Pure: no addon, no pager. Layout: one JSON header line, then fixed 16-byte little-endian records.
import * as fs from 'node:fs';
import { FarmemError } from './errors';
import { PAGE_SIZE } from './protocol';

export const TRACE_FORMAT = 'farmem-trace';
export const TRACE_VERSION = 1;
/** float64 time (ms since the trace started), uint32 page, uint32 flags. */
export const TRACE_RECORD_BYTES = 16;
/** The fault was a write. */
export const TRACE_FLAG_WRITE = 1;
/** The fault found a page a prefetch had brought or was bringing. */
export const TRACE_FLAG_PREFETCH_HIT = 2;
/** The fault mapped zeros on a page that had never held data (nothing was fetched). Traces before it have 0. */
export const TRACE_FLAG_FIRST_TOUCH = 4;

// A header longer than this is not one we wrote; stop looking for its newline.
const MAX_HEADER_BYTES = 64 * 1024;
const MAX_REGION_PAGES = 2 ** 32; // pages are uint32 in a record

export interface TraceHeader {
  format: 'farmem-trace';
  version: 1;
  pageSize: number;
  regionPages: number;
  /** The region's prefetch policy when the trace started. */
  policy: string;
  /** The local budget, in pages, when the trace started. */
  localBudgetPages: number;
  /** ISO date. */
  startedAt: string;
}

export interface Trace {
  header: TraceHeader;
  /** Milliseconds since the trace started, per record. */
  time: Float64Array;
  page: Uint32Array;
  /** TRACE_FLAG_WRITE | TRACE_FLAG_PREFETCH_HIT | TRACE_FLAG_FIRST_TOUCH, per record. */
  flags: Uint32Array;
  length: number;
}

function badTrace(message: string, details: Record<string, unknown> = {}): FarmemError {
  return new FarmemError('FARMEM_BAD_TRACE', message, details);
}

function checkHeader(value: unknown, where: string): TraceHeader {
  if (value === null || typeof value !== 'object' || (value as { format?: unknown }).format !== TRACE_FORMAT) {
    throw badTrace(`${where} is not a farmem trace: it must start with a JSON line whose "format" is "${TRACE_FORMAT}"`);
  }
  const h = value as Record<string, unknown>;
  if (h.version !== TRACE_VERSION) {
    throw badTrace(`${where} is a farmem trace of version ${JSON.stringify(h.version)}; this farmem reads version ${TRACE_VERSION} only (replay it with the farmem that recorded it)`);
  }
  const field = (name: string, ok: boolean, expected: string): void => {
    if (!ok) throw badTrace(`${where}: header field "${name}" is ${JSON.stringify(h[name])}, expected ${expected}`);
  };
  const isInt = (v: unknown, min: number, max: number): boolean => typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;
  field('pageSize', isInt(h.pageSize, 1, 2 ** 30), 'a positive integer number of bytes');
  field('regionPages', isInt(h.regionPages, 1, MAX_REGION_PAGES), `an integer from 1 to ${MAX_REGION_PAGES}`);
  field('policy', typeof h.policy === 'string', 'a policy name');
  field('localBudgetPages', isInt(h.localBudgetPages, 0, Number.MAX_SAFE_INTEGER), 'a non-negative integer');
  field('startedAt', typeof h.startedAt === 'string', 'an ISO date string');
  return {
    format: TRACE_FORMAT,
    version: TRACE_VERSION,
    pageSize: h.pageSize as number,
    regionPages: h.regionPages as number,
    policy: h.policy as string,
    localBudgetPages: h.localBudgetPages as number,
    startedAt: h.startedAt as string,
  };
}

/** The header line, newline included. Throws FARMEM_BAD_TRACE for a header that readTrace would refuse. */
export function encodeTraceHeader(header: TraceHeader): Buffer {
  const checked = checkHeader(header, 'the trace header');
  return Buffer.from(`${JSON.stringify(checked)}\n`, 'utf8');
}

/** Writes one record at `offset` of `buf` (which needs TRACE_RECORD_BYTES from there). */
export function writeTraceRecord(buf: Buffer, offset: number, time: number, page: number, flags: number): void {
  buf.writeDoubleLE(time, offset);
  buf.writeUInt32LE(page, offset + 8);
  buf.writeUInt32LE(flags, offset + 12);
}

/** Parses a whole trace file's bytes. `where` names it in errors. */
export function parseTrace(buffer: Buffer, where = 'the trace'): Trace {
  const newline = buffer.indexOf(0x0a, 0);
  if (buffer[0] !== 0x7b /* { */ || newline < 0 || newline > MAX_HEADER_BYTES) {
    throw badTrace(`${where} is not a farmem trace: it must start with a JSON header line such as {"format":"${TRACE_FORMAT}",...}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(buffer.toString('utf8', 0, newline));
  } catch {
    throw badTrace(`${where} is not a farmem trace: its first line is not JSON`);
  }
  const header = checkHeader(json, where);
  const start = newline + 1;
  const recordBytes = buffer.length - start;
  const length = Math.floor(recordBytes / TRACE_RECORD_BYTES);
  const leftOver = recordBytes - length * TRACE_RECORD_BYTES;
  if (leftOver !== 0) {
    throw badTrace(
      `${where} is truncated: ${leftOver} byte(s) left over after its ${length} whole record(s) of ${TRACE_RECORD_BYTES} bytes (was it copied while being written?)`,
      { records: length, leftOver },
    );
  }
  const time = new Float64Array(length);
  const page = new Uint32Array(length);
  const flags = new Uint32Array(length);
  // Records start right after the header line, at any alignment: read them field by field.
  for (let i = 0, offset = start; i < length; i++, offset += TRACE_RECORD_BYTES) {
    time[i] = buffer.readDoubleLE(offset);
    const p = buffer.readUInt32LE(offset + 8);
    if (p >= header.regionPages) {
      throw badTrace(`${where}: record ${i} names page ${p}, but the region has ${header.regionPages} pages`, { record: i });
    }
    page[i] = p;
    flags[i] = buffer.readUInt32LE(offset + 12);
  }
  return { header, time, page, flags, length };
}

/** Reads and parses a trace file (synchronously). */
export function readTrace(path: string): Trace {
  let buffer: Buffer;
  try {
    buffer = fs.readFileSync(path);
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    throw new FarmemError('FARMEM_SYSCALL', `cannot read trace '${path}': ${e.code === 'ENOENT' ? 'no such file' : e.message}`, {
      errno: typeof e.errno === 'number' ? Math.abs(e.errno) : undefined,
      syscall: e.syscall,
      cause: error,
    });
  }
  return parseTrace(buffer, `'${path}'`);
}

export interface TraceFromPagesOptions {
  /** Per-record times in ms; default: record i at i ms. */
  time?: ArrayLike<number>;
  /** Per-record flags; default 0 (read faults). */
  flags?: ArrayLike<number>;
  pageSize?: number;
  policy?: string;
  /** Default: a quarter of the distinct pages touched (at least 1). */
  localBudgetPages?: number;
  startedAt?: string;
}

/** A trace of faults on `pages`, in order: for tests and synthetic access patterns. */
export function traceFromPages(pages: ArrayLike<number>, regionPages: number, options: TraceFromPagesOptions = {}): Trace {
  const length = pages.length;
  const page = new Uint32Array(length);
  for (let i = 0; i < length; i++) {
    const p = pages[i];
    if (!Number.isInteger(p) || p < 0 || p >= regionPages) {
      throw badTrace(`traceFromPages: page ${p} at index ${i} is not an integer from 0 to ${regionPages - 1}`, { record: i });
    }
    page[i] = p;
  }
  for (const [name, values] of [['time', options.time], ['flags', options.flags]] as const) {
    if (values !== undefined && values.length !== length) {
      throw badTrace(`traceFromPages: options.${name} has ${values.length} entries for ${length} pages`);
    }
  }
  const header = checkHeader(
    {
      format: TRACE_FORMAT,
      version: TRACE_VERSION,
      pageSize: options.pageSize ?? PAGE_SIZE,
      regionPages,
      policy: options.policy ?? 'none',
      localBudgetPages: options.localBudgetPages ?? Math.max(1, Math.ceil(countDistinct(page, regionPages) / 4)),
      startedAt: options.startedAt ?? new Date(0).toISOString(),
    },
    'traceFromPages',
  );
  const time = new Float64Array(length);
  const flags = new Uint32Array(length);
  for (let i = 0; i < length; i++) {
    time[i] = options.time ? options.time[i] : i;
    flags[i] = options.flags ? options.flags[i] : 0;
  }
  return { header, time, page, flags, length };
}

function countDistinct(pages: Uint32Array, regionPages: number): number {
  // A byte per page is cheapest up to a few tens of MiB; past that the touched pages are fewer than the region's.
  if (regionPages > 1 << 26) return new Set(pages).size;
  const seen = new Uint8Array(regionPages);
  let count = 0;
  for (let i = 0; i < pages.length; i++) {
    if (!seen[pages[i]]) {
      seen[pages[i]] = 1;
      count++;
    }
  }
  return count;
}

/** Pages the trace touches at least once. */
export function distinctPages(trace: Trace): number {
  return countDistinct(trace.length === trace.page.length ? trace.page : trace.page.subarray(0, trace.length), trace.header.regionPages);
}
