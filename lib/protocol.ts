// The farmem wire protocol: frame encoding and decoding shared by the memory node and the client.
// Pure functions over Buffers; imports nothing else of farmem. The format is documented in docs/protocol.md.
//
// Every frame is a 16-byte header followed by a body; all integers are little-endian:
//   u32 frameLength (whole frame), u8 type, u8 flags (0), u16 reserved (0), u32 requestId, u32 regionId.

/** 'F','M','E','M' read as a little-endian u32. */
export const PROTOCOL_MAGIC = 0x4d454d46;
/** The version this side sends. HELLO of version 2 carries a weight; the node still accepts version 1. */
export const PROTOCOL_VERSION = 2;
/** The oldest HELLO version a node accepts (the C reference client speaks it): weight 1, no weight field. */
export const OLDEST_PROTOCOL_VERSION = 1;
/** A client's weight in the node's fair queueing: from 1 (the default, and version 1's) to MAX_WEIGHT. */
export const DEFAULT_WEIGHT = 1;
export const MAX_WEIGHT = 1000;
export const HEADER_BYTES = 16;
export const PAGE_SIZE = 4096;
export const NAMESPACE_KEY_BYTES = 16;
/** The largest region a node accepts, in pages (8 TiB). */
export const MAX_REGION_PAGES = 2 ** 31;
/** Default frame limit: room for a 1024-page READ_OK or WRITE (header + 16-byte body prefix + 4 MiB). */
export const DEFAULT_MAX_FRAME_BYTES = HEADER_BYTES + 16 + 1024 * PAGE_SIZE;
/** Where page data starts in a READ_OK frame. */
export const READ_OK_DATA_OFFSET = HEADER_BYTES + 16;
/** Where page data starts in a WRITE frame. */
export const WRITE_DATA_OFFSET = HEADER_BYTES + 16;

export const FrameType = {
  Hello: 0x01,
  HelloOk: 0x81,
  Alloc: 0x02,
  AllocOk: 0x82,
  Free: 0x03,
  FreeOk: 0x83,
  Read: 0x04,
  ReadOk: 0x84,
  Write: 0x05,
  WriteOk: 0x85,
  Ping: 0x06,
  Pong: 0x86,
  Bye: 0x08,
  ByeOk: 0x88,
  Error: 0x7f,
} as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

/**
 * Codes carried by an ERROR frame, named as on the wire. NO_SUCH_REGION, CAPACITY and OUT_OF_RANGE answer one
 * request; every other code is fatal: the node closes the connection after sending it.
 */
export const ErrorCode = {
  BAD_FRAME: 1,
  FRAME_TOO_LARGE: 2,
  BAD_HELLO: 3,
  AUTH_FAILED: 4,
  NO_SUCH_REGION: 5,
  CAPACITY: 6,
  OUT_OF_RANGE: 7,
  NOT_READY: 8,
  UNKNOWN_TYPE: 9,
  INTERNAL: 10,
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const ERROR_CODE_NAMES: Record<number, string> = {};
for (const [name, value] of Object.entries(ErrorCode)) ERROR_CODE_NAMES[value] = name;

/** 'NO_SUCH_REGION' for 5; 'ERROR_<n>' for a code this version does not know. */
export function errorCodeName(code: number): string {
  return ERROR_CODE_NAMES[code] ?? `ERROR_${code}`;
}

/** True for the codes after which the node closes the connection. */
export function isFatalErrorCode(code: number): boolean {
  return !(code === ErrorCode.NO_SUCH_REGION || code === ErrorCode.CAPACITY || code === ErrorCode.OUT_OF_RANGE);
}

const FRAME_TYPE_NAMES: Record<number, string> = {};
for (const [name, value] of Object.entries(FrameType)) FRAME_TYPE_NAMES[value] = name.toUpperCase();

/** 'READ' for 0x04, '0x42' for an unknown type. */
export function frameTypeName(type: number): string {
  return FRAME_TYPE_NAMES[type] ?? `0x${type.toString(16).padStart(2, '0')}`;
}

/** A malformed frame. `protocolCode` is the ErrorCode to answer it with. */
export class ProtocolError extends Error {
  readonly protocolCode: ErrorCode;
  constructor(protocolCode: ErrorCode, message: string) {
    super(message);
    this.name = 'ProtocolError';
    this.protocolCode = protocolCode;
  }
}

// Body sizes (bytes after the header) of the fixed-size frames. A HELLO's token follows these.
const HELLO_V1_BODY_MIN = 4 + 2 + 2 + NAMESPACE_KEY_BYTES;
const HELLO_V2_BODY_MIN = HELLO_V1_BODY_MIN + 2 + 2; // u16 weight, u16 reserved
const HELLO_OK_BODY = 2 + 2 + 4 + 4 + 4 + 8 + 8 + 1 + 7;
const ALLOC_BODY = 16;
const ALLOC_OK_BODY = 8;
const READ_BODY = 12;
const WRITE_OK_BODY = 12;
const ERROR_BODY_MIN = 4;
const MAX_U16 = 0xffff;
const TWO_32 = 2 ** 32;

// ---------------------------------------------------------------------------------------------------------
// Integers

/** Writes a non-negative safe integer as a little-endian u64. */
export function writeU64(buf: Buffer, value: number, offset: number): void {
  buf.writeUInt32LE(value >>> 0, offset);
  buf.writeUInt32LE(Math.floor(value / TWO_32), offset + 4);
}

/**
 * Reads a little-endian u64 as a number. Values past 2^53 lose precision but stay larger than any valid
 * page number or size, so range checks on the result still refuse them.
 */
export function readU64(buf: Buffer, offset: number): number {
  return buf.readUInt32LE(offset) + buf.readUInt32LE(offset + 4) * TWO_32;
}

// ---------------------------------------------------------------------------------------------------------
// Header

export interface FrameHeader {
  frameLength: number;
  type: number;
  flags: number;
  reserved: number;
  requestId: number;
  regionId: number;
}

/** Reads the 16-byte header at `offset`; `buf` must hold at least 16 bytes from there. Validates nothing. */
export function readHeader(buf: Buffer, offset = 0): FrameHeader {
  return {
    frameLength: buf.readUInt32LE(offset),
    type: buf[offset + 4],
    flags: buf[offset + 5],
    reserved: buf.readUInt16LE(offset + 6),
    requestId: buf.readUInt32LE(offset + 8),
    regionId: buf.readUInt32LE(offset + 12),
  };
}

/** Writes a header with zero flags and reserved bytes. */
export function writeHeader(
  buf: Buffer,
  offset: number,
  frameLength: number,
  type: number,
  requestId: number,
  regionId: number,
): void {
  buf.writeUInt32LE(frameLength, offset);
  buf[offset + 4] = type;
  buf[offset + 5] = 0;
  buf.writeUInt16LE(0, offset + 6);
  buf.writeUInt32LE(requestId >>> 0, offset + 8);
  buf.writeUInt32LE(regionId >>> 0, offset + 12);
}

/** Throws BAD_FRAME or FRAME_TOO_LARGE for a frame length no frame may have. */
export function checkFrameLength(frameLength: number, maxFrameBytes: number): void {
  if (frameLength < HEADER_BYTES) {
    throw new ProtocolError(ErrorCode.BAD_FRAME, `frame length ${frameLength} is shorter than the ${HEADER_BYTES}-byte header`);
  }
  if (frameLength > maxFrameBytes) {
    throw new ProtocolError(
      ErrorCode.FRAME_TOO_LARGE,
      `frame length ${frameLength} exceeds the limit of ${maxFrameBytes} bytes`,
    );
  }
}

/** Throws BAD_FRAME for nonzero flags or reserved bits in a complete header. */
export function checkHeaderBits(header: FrameHeader): void {
  if (header.flags !== 0 || header.reserved !== 0) {
    throw new ProtocolError(
      ErrorCode.BAD_FRAME,
      `${frameTypeName(header.type)} frame has nonzero flags (${header.flags}) or reserved bits (${header.reserved})`,
    );
  }
}

function allocFrame(bodyBytes: number, type: number, requestId: number, regionId: number): Buffer {
  const frameLength = HEADER_BYTES + bodyBytes;
  const buf = Buffer.allocUnsafe(frameLength);
  writeHeader(buf, 0, frameLength, type, requestId, regionId);
  return buf;
}

function checkBodyLength(frame: Buffer, expected: number, what: string): void {
  if (frame.length !== HEADER_BYTES + expected) {
    throw new ProtocolError(
      ErrorCode.BAD_FRAME,
      `${what} frame body is ${frame.length - HEADER_BYTES} bytes; it must be ${expected}`,
    );
  }
}

function checkBodyAtLeast(frame: Buffer, min: number, what: string): void {
  if (frame.length < HEADER_BYTES + min) {
    throw new ProtocolError(
      ErrorCode.BAD_FRAME,
      `${what} frame body is ${frame.length - HEADER_BYTES} bytes; it must be at least ${min}`,
    );
  }
}

// ---------------------------------------------------------------------------------------------------------
// Frame reader

export interface Frame {
  header: FrameHeader;
  /** The whole frame, header included: a view that stays valid until the next push(). */
  frame: Buffer;
}

/**
 * Accumulates socket chunks and yields complete frames as views, copying only the tail of a chunk that
 * ends mid-frame (and, when frames are left unconsumed, the rest of that chunk at the next push()). The
 * length limit is checked from the first four bytes of a frame, before its body is buffered. After next()
 * or peek() throws, the reader is unusable: close the connection.
 */
export class FrameReader {
  readonly maxFrameBytes: number;
  // Bytes not yet consumed live either in `chunk` (from chunkPos, zero-copy) or in `buf` [start, end).
  private buf: Buffer;
  private start = 0;
  private end = 0;
  private chunk: Buffer | null = null;
  private chunkPos = 0;

  constructor(maxFrameBytes = DEFAULT_MAX_FRAME_BYTES, initialBytes = 64 * 1024) {
    this.maxFrameBytes = maxFrameBytes;
    this.buf = Buffer.allocUnsafe(initialBytes);
  }

  /** Bytes received but not yet returned as frames. */
  get buffered(): number {
    return this.end - this.start + (this.chunk === null ? 0 : this.chunk.length - this.chunkPos);
  }

  push(data: Buffer): void {
    this.stash();
    if (this.end === this.start) {
      this.start = this.end = 0;
      this.chunk = data;
      this.chunkPos = 0;
      return;
    }
    this.append(data);
  }

  /** The next complete frame, or null when more bytes are needed. Throws ProtocolError on a bad header. */
  next(): Frame | null {
    const frame = this.peek();
    if (frame !== null) this.skip(frame.frame.length);
    return frame;
  }

  /**
   * The next complete frame without consuming it: the same frame comes again from peek() or next() until
   * next() takes it. Valid until the next push(), peek() or next() (either may compact the buffer under it).
   * Throws ProtocolError on a bad header.
   */
  peek(): Frame | null {
    if (this.chunk !== null) {
      const chunk = this.chunk;
      const pos = this.chunkPos;
      const avail = chunk.length - pos;
      if (avail >= 4) {
        const frameLength = chunk.readUInt32LE(pos);
        checkFrameLength(frameLength, this.maxFrameBytes);
        if (avail >= frameLength) {
          const header = readHeader(chunk, pos);
          checkHeaderBits(header);
          return { header, frame: chunk.subarray(pos, pos + frameLength) };
        }
      }
      this.stash();
      return null;
    }
    const avail = this.end - this.start;
    if (avail < 4) return null;
    const frameLength = this.buf.readUInt32LE(this.start);
    checkFrameLength(frameLength, this.maxFrameBytes);
    if (avail < frameLength) {
      this.reserve(frameLength);
      return null;
    }
    const pos = this.start;
    const header = readHeader(this.buf, pos);
    checkHeaderBits(header);
    return { header, frame: this.buf.subarray(pos, pos + frameLength) };
  }

  /** Moves past the frame peek() just returned (its frameLength), as next() would have. */
  skip(frameLength: number): void {
    if (this.chunk !== null) {
      this.chunkPos += frameLength;
      if (this.chunkPos === this.chunk.length) this.chunk = null;
      return;
    }
    this.start += frameLength;
    if (this.start === this.end) this.start = this.end = 0;
  }

  // Moves the unconsumed tail of the current chunk into the owned buffer.
  private stash(): void {
    if (this.chunk === null) return;
    const rest = this.chunk.subarray(this.chunkPos);
    this.chunk = null;
    this.chunkPos = 0;
    if (rest.length > 0) this.append(rest);
    if (this.end - this.start >= 4) {
      // Room for the whole pending frame at once; an oversized length is refused by next(), never buffered.
      const frameLength = this.buf.readUInt32LE(this.start);
      if (frameLength <= this.maxFrameBytes) this.reserve(frameLength);
    }
  }

  private append(data: Buffer): void {
    this.reserve(this.end - this.start + data.length);
    data.copy(this.buf, this.end);
    this.end += data.length;
  }

  // Makes room for `bytes` unconsumed bytes from `start`, compacting or growing the buffer.
  private reserve(bytes: number): void {
    if (this.start + bytes <= this.buf.length) return;
    const used = this.end - this.start;
    if (bytes <= this.buf.length) {
      this.buf.copyWithin(0, this.start, this.end);
    } else {
      const grown = Buffer.allocUnsafe(Math.max(bytes, Math.min(this.buf.length * 2, this.maxFrameBytes + 65536)));
      this.buf.copy(grown, 0, this.start, this.end);
      this.buf = grown;
    }
    this.start = 0;
    this.end = used;
  }
}

// ---------------------------------------------------------------------------------------------------------
// HELLO / HELLO_OK

export interface Hello {
  magic: number;
  /** 1 or 2, as the client sent it; HELLO_OK answers with the same. */
  version: number;
  /** 16 bytes, a view into the frame. */
  namespaceKey: Buffer;
  token: string;
  /** The client's share in the node's fair queueing, 1..MAX_WEIGHT; 1 for a version-1 HELLO. */
  weight: number;
}

/** A version-2 HELLO. `weight` is an integer from 1 to MAX_WEIGHT. */
export function encodeHello(requestId: number, namespaceKey: Uint8Array, token: string, weight = DEFAULT_WEIGHT): Buffer {
  if (namespaceKey.length !== NAMESPACE_KEY_BYTES) {
    throw new RangeError(`namespaceKey must be ${NAMESPACE_KEY_BYTES} bytes, got ${namespaceKey.length}`);
  }
  if (!Number.isInteger(weight) || weight < 1 || weight > MAX_WEIGHT) {
    throw new RangeError(`weight must be an integer from 1 to ${MAX_WEIGHT}, got ${weight}`);
  }
  const tokenLength = Buffer.byteLength(token, 'utf8');
  if (tokenLength > MAX_U16) throw new RangeError(`token must be at most ${MAX_U16} bytes of UTF-8, got ${tokenLength}`);
  const buf = allocFrame(HELLO_V2_BODY_MIN + tokenLength, FrameType.Hello, requestId, 0);
  buf.writeUInt32LE(PROTOCOL_MAGIC, 16);
  buf.writeUInt16LE(PROTOCOL_VERSION, 20);
  buf.writeUInt16LE(tokenLength, 22);
  buf.set(namespaceKey, 24);
  const keyEnd = 24 + NAMESPACE_KEY_BYTES;
  buf.writeUInt16LE(weight, keyEnd);
  buf.writeUInt16LE(0, keyEnd + 2);
  buf.write(token, keyEnd + 4, 'utf8');
  return buf;
}

/**
 * Decodes a HELLO of version 1 (no weight: 1) or 2 (u16 weight, u16 reserved after the key). A wrong magic,
 * another version or a weight outside 1..MAX_WEIGHT throws BAD_HELLO; a bad length or reserved field BAD_FRAME.
 */
export function decodeHello(frame: Buffer): Hello {
  checkBodyAtLeast(frame, HELLO_V1_BODY_MIN, 'HELLO');
  const magic = frame.readUInt32LE(16);
  const version = frame.readUInt16LE(20);
  const tokenLength = frame.readUInt16LE(22);
  if (magic !== PROTOCOL_MAGIC) {
    throw new ProtocolError(
      ErrorCode.BAD_HELLO,
      `HELLO magic is 0x${magic.toString(16)}, not 0x${PROTOCOL_MAGIC.toString(16)} ('FMEM'): not a farmem client`,
    );
  }
  if (version < OLDEST_PROTOCOL_VERSION || version > PROTOCOL_VERSION) {
    throw new ProtocolError(
      ErrorCode.BAD_HELLO,
      `protocol version ${version} is not supported; this side speaks versions ${OLDEST_PROTOCOL_VERSION} to ${PROTOCOL_VERSION}`,
    );
  }
  const keyEnd = 24 + NAMESPACE_KEY_BYTES;
  if (version === 1) {
    checkBodyLength(frame, HELLO_V1_BODY_MIN + tokenLength, 'HELLO (version 1)');
    return {
      magic,
      version,
      namespaceKey: frame.subarray(24, keyEnd),
      token: frame.toString('utf8', keyEnd, keyEnd + tokenLength),
      weight: DEFAULT_WEIGHT,
    };
  }
  checkBodyLength(frame, HELLO_V2_BODY_MIN + tokenLength, 'HELLO (version 2)');
  const weight = frame.readUInt16LE(keyEnd);
  const reserved = frame.readUInt16LE(keyEnd + 2);
  if (weight < 1 || weight > MAX_WEIGHT) {
    throw new ProtocolError(ErrorCode.BAD_HELLO, `HELLO weight is ${weight}; it must be from 1 to ${MAX_WEIGHT}`);
  }
  if (reserved !== 0) throw new ProtocolError(ErrorCode.BAD_FRAME, `HELLO reserved field is ${reserved}, not 0`);
  const tokenStart = keyEnd + 4;
  return {
    magic,
    version,
    namespaceKey: frame.subarray(24, keyEnd),
    token: frame.toString('utf8', tokenStart, tokenStart + tokenLength),
    weight,
  };
}

export interface HelloOk {
  version: number;
  pageSize: number;
  maxFrameBytes: number;
  capacityBytes: number;
  /** Bytes reserved by all namespaces on the node when it answered. */
  reservedBytes: number;
  /** True when the namespace key already existed: a reconnect that found its regions. */
  resumed: boolean;
}

export function encodeHelloOk(requestId: number, info: Omit<HelloOk, 'version'> & { version?: number }): Buffer {
  const buf = allocFrame(HELLO_OK_BODY, FrameType.HelloOk, requestId, 0);
  buf.writeUInt16LE(info.version ?? PROTOCOL_VERSION, 16);
  buf.writeUInt16LE(0, 18);
  buf.writeUInt32LE(info.pageSize, 20);
  buf.writeUInt32LE(info.maxFrameBytes, 24);
  buf.writeUInt32LE(0, 28);
  writeU64(buf, info.capacityBytes, 32);
  writeU64(buf, info.reservedBytes, 40);
  buf.fill(0, 48, 56);
  buf[48] = info.resumed ? 1 : 0;
  return buf;
}

export function decodeHelloOk(frame: Buffer): HelloOk {
  checkBodyLength(frame, HELLO_OK_BODY, 'HELLO_OK');
  const version = frame.readUInt16LE(16);
  // The node answers with the version its client spoke; a client checks it against the one it sent.
  if (version < OLDEST_PROTOCOL_VERSION || version > PROTOCOL_VERSION) {
    throw new ProtocolError(
      ErrorCode.BAD_HELLO,
      `the node answered with protocol version ${version}; this side speaks versions ${OLDEST_PROTOCOL_VERSION} to ${PROTOCOL_VERSION}`,
    );
  }
  const resumed = frame[48];
  if (resumed > 1) throw new ProtocolError(ErrorCode.BAD_FRAME, `HELLO_OK resumed flag is ${resumed}, not 0 or 1`);
  return {
    version,
    pageSize: frame.readUInt32LE(20),
    maxFrameBytes: frame.readUInt32LE(24),
    capacityBytes: readU64(frame, 32),
    reservedBytes: readU64(frame, 40),
    resumed: resumed === 1,
  };
}

// ---------------------------------------------------------------------------------------------------------
// ALLOC / FREE

export interface Alloc {
  regionPages: number;
  reservePages: number;
}

export function encodeAlloc(requestId: number, regionPages: number, reservePages: number): Buffer {
  const buf = allocFrame(ALLOC_BODY, FrameType.Alloc, requestId, 0);
  writeU64(buf, regionPages, 16);
  writeU64(buf, reservePages, 24);
  return buf;
}

export function decodeAlloc(frame: Buffer): Alloc {
  checkBodyLength(frame, ALLOC_BODY, 'ALLOC');
  return { regionPages: readU64(frame, 16), reservePages: readU64(frame, 24) };
}

/** ALLOC_OK: the new region id travels in the header. */
export function encodeAllocOk(requestId: number, regionId: number, regionPages: number): Buffer {
  const buf = allocFrame(ALLOC_OK_BODY, FrameType.AllocOk, requestId, regionId);
  writeU64(buf, regionPages, 16);
  return buf;
}

/** Returns the region's page count; the region id is header.regionId. */
export function decodeAllocOk(frame: Buffer): { regionPages: number } {
  checkBodyLength(frame, ALLOC_OK_BODY, 'ALLOC_OK');
  return { regionPages: readU64(frame, 16) };
}

export function encodeFree(requestId: number, regionId: number): Buffer {
  return allocFrame(0, FrameType.Free, requestId, regionId);
}

export function encodeFreeOk(requestId: number, regionId: number): Buffer {
  return allocFrame(0, FrameType.FreeOk, requestId, regionId);
}

// ---------------------------------------------------------------------------------------------------------
// READ / READ_OK

export interface PageRange {
  firstPage: number;
  pageCount: number;
}

export interface PageData extends PageRange {
  /** Offset of the page data within the frame. */
  dataOffset: number;
}

// READ and WRITE_OK share a body: u64 firstPage, u32 pageCount.
function encodePageRange(body: number, type: FrameType, requestId: number, regionId: number, firstPage: number, pageCount: number): Buffer {
  const buf = allocFrame(body, type, requestId, regionId);
  writeU64(buf, firstPage, 16);
  buf.writeUInt32LE(pageCount, 24);
  return buf;
}

function decodePageRange(frame: Buffer, body: number, what: string): PageRange {
  checkBodyLength(frame, body, what);
  return { firstPage: readU64(frame, 16), pageCount: frame.readUInt32LE(24) };
}

export function encodeRead(requestId: number, regionId: number, firstPage: number, pageCount: number): Buffer {
  return encodePageRange(READ_BODY, FrameType.Read, requestId, regionId, firstPage, pageCount);
}

export function decodeRead(frame: Buffer): PageRange {
  return decodePageRange(frame, READ_BODY, 'READ');
}

/** Writes the 32-byte READ_OK prefix at `offset`; the pageCount pages follow it. */
export function writeReadOkHeader(
  buf: Buffer,
  offset: number,
  requestId: number,
  regionId: number,
  firstPage: number,
  pageCount: number,
): void {
  writeHeader(buf, offset, READ_OK_DATA_OFFSET + pageCount * PAGE_SIZE, FrameType.ReadOk, requestId, regionId);
  writeU64(buf, firstPage, offset + 16);
  buf.writeUInt32LE(pageCount, offset + 24);
  buf.writeUInt32LE(0, offset + 28);
}

/** The 32-byte READ_OK prefix (header + body fields); the page data is sent after it. */
export function encodeReadOkHeader(requestId: number, regionId: number, firstPage: number, pageCount: number): Buffer {
  const buf = Buffer.allocUnsafe(READ_OK_DATA_OFFSET);
  writeReadOkHeader(buf, 0, requestId, regionId, firstPage, pageCount);
  return buf;
}

/** Validates a READ_OK; the pages are frame.subarray(dataOffset). */
export function decodeReadOk(frame: Buffer): PageData {
  return decodePages(frame, 'READ_OK');
}

// ---------------------------------------------------------------------------------------------------------
// WRITE / WRITE_OK

/** The 32-byte WRITE prefix; the caller sends pageCount * PAGE_SIZE bytes of data right after it. */
export function encodeWriteHeader(requestId: number, regionId: number, firstPage: number, pageCount: number): Buffer {
  const buf = Buffer.allocUnsafe(WRITE_DATA_OFFSET);
  writeHeader(buf, 0, WRITE_DATA_OFFSET + pageCount * PAGE_SIZE, FrameType.Write, requestId, regionId);
  writeU64(buf, firstPage, 16);
  buf.writeUInt32LE(pageCount, 24);
  buf.writeUInt32LE(0, 28);
  return buf;
}

/** A whole WRITE frame in one Buffer (copies `data`, a whole number of pages). */
export function encodeWrite(requestId: number, regionId: number, firstPage: number, data: Uint8Array): Buffer {
  if (data.length === 0 || data.length % PAGE_SIZE !== 0) {
    throw new RangeError(`WRITE data must be a positive multiple of ${PAGE_SIZE} bytes, got ${data.length}`);
  }
  const pageCount = data.length / PAGE_SIZE;
  const buf = Buffer.allocUnsafe(WRITE_DATA_OFFSET + data.length);
  buf.set(encodeWriteHeader(requestId, regionId, firstPage, pageCount), 0);
  buf.set(data, WRITE_DATA_OFFSET);
  return buf;
}

/** Validates a WRITE (its length must match its pageCount exactly); the pages are frame.subarray(dataOffset). */
export function decodeWrite(frame: Buffer): PageData {
  return decodePages(frame, 'WRITE');
}

export function encodeWriteOk(requestId: number, regionId: number, firstPage: number, pageCount: number): Buffer {
  return encodePageRange(WRITE_OK_BODY, FrameType.WriteOk, requestId, regionId, firstPage, pageCount);
}

export function decodeWriteOk(frame: Buffer): PageRange {
  return decodePageRange(frame, WRITE_OK_BODY, 'WRITE_OK');
}

// READ_OK and WRITE share a layout: u64 firstPage, u32 pageCount, u32 reserved, pages.
function decodePages(frame: Buffer, what: string): PageData {
  checkBodyAtLeast(frame, 16, what);
  const firstPage = readU64(frame, 16);
  const pageCount = frame.readUInt32LE(24);
  const reserved = frame.readUInt32LE(28);
  if (reserved !== 0) throw new ProtocolError(ErrorCode.BAD_FRAME, `${what} reserved field is ${reserved}, not 0`);
  const expected = READ_OK_DATA_OFFSET + pageCount * PAGE_SIZE;
  if (frame.length !== expected) {
    throw new ProtocolError(
      ErrorCode.BAD_FRAME,
      `${what} of ${pageCount} pages must be ${expected} bytes long, but the frame is ${frame.length}`,
    );
  }
  return { firstPage, pageCount, dataOffset: READ_OK_DATA_OFFSET };
}

// ---------------------------------------------------------------------------------------------------------
// PING / BYE / ERROR

export function encodePing(requestId: number): Buffer {
  return allocFrame(0, FrameType.Ping, requestId, 0);
}

export function encodePong(requestId: number): Buffer {
  return allocFrame(0, FrameType.Pong, requestId, 0);
}

export function encodeBye(requestId: number): Buffer {
  return allocFrame(0, FrameType.Bye, requestId, 0);
}

export function encodeByeOk(requestId: number): Buffer {
  return allocFrame(0, FrameType.ByeOk, requestId, 0);
}

/** Throws BAD_FRAME unless the frame has an empty body (FREE, FREE_OK, PING, PONG, BYE, BYE_OK). */
export function checkEmptyBody(frame: Buffer, what: string): void {
  checkBodyLength(frame, 0, what);
}

export interface ErrorFrame {
  code: number;
  message: string;
}

/** An ERROR frame; the message is cut (on a character boundary) to fit 65535 bytes. */
export function encodeError(requestId: number, code: number, message: string, regionId = 0): Buffer {
  let text = Buffer.from(message, 'utf8');
  if (text.length > MAX_U16) text = Buffer.from(text.toString('utf8', 0, MAX_U16 - 3).replace(/\uFFFD$/, '') + '...');
  const buf = allocFrame(ERROR_BODY_MIN + text.length, FrameType.Error, requestId, regionId);
  buf.writeUInt16LE(code, 16);
  buf.writeUInt16LE(text.length, 18);
  buf.set(text, 20);
  return buf;
}

export function decodeError(frame: Buffer): ErrorFrame {
  checkBodyAtLeast(frame, ERROR_BODY_MIN, 'ERROR');
  const code = frame.readUInt16LE(16);
  const messageLength = frame.readUInt16LE(18);
  checkBodyLength(frame, ERROR_BODY_MIN + messageLength, 'ERROR');
  return { code, message: frame.toString('utf8', 20, 20 + messageLength) };
}
