// The memory node and its wire protocol, over real sockets on 127.0.0.1. Nothing is mocked: the client here
// is a raw TCP socket speaking protocol.ts, so every malformed frame really crosses the wire.
//
// The worker-thread tests load dist/cjs/node/worker.js: build first (`npm run build:ts`, which `npm test` does).

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FarmemError } from '../lib/errors';
import { MemoryNode } from '../lib/memory-node';
import { MemoryNodeServer, type MemoryNodeServerOptions } from '../lib/node/server';
import {
  DEFAULT_MAX_FRAME_BYTES,
  ErrorCode,
  FrameReader,
  FrameType,
  HEADER_BYTES,
  PAGE_SIZE,
  PROTOCOL_MAGIC,
  ProtocolError,
  READ_OK_DATA_OFFSET,
  decodeAllocOk,
  decodeError,
  decodeHello,
  decodeHelloOk,
  decodeReadOk,
  decodeWrite,
  decodeWriteOk,
  encodeAlloc,
  encodeBye,
  encodeError,
  encodeFree,
  encodeHello,
  encodeHelloOk,
  encodePing,
  encodeRead,
  encodeReadOkHeader,
  encodeWrite,
  encodeWriteHeader,
  errorCodeName,
  readHeader,
  writeHeader,
  type FrameHeader,
} from '../lib/protocol';

// ---------------------------------------------------------------------------------------------------------
// A raw protocol client

interface Received {
  header: FrameHeader;
  frame: Buffer;
}

class RawClient {
  readonly socket: net.Socket;
  private readonly reader = new FrameReader(256 * 1024 * 1024);
  private readonly frames: Received[] = [];
  private waiter: (() => void) | null = null;
  readonly closed: Promise<void>;
  isClosed = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.reader.push(chunk);
      for (let f = this.reader.next(); f !== null; f = this.reader.next()) {
        this.frames.push({ header: f.header, frame: Buffer.from(f.frame) });
      }
      this.wake();
    });
    socket.on('error', () => {});
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        this.isClosed = true;
        this.wake();
        resolve();
      }),
    );
  }

  static connect(port: number): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1', () => resolve(new RawClient(socket)));
      socket.once('error', reject);
    });
  }

  /** Connects and says HELLO; resolves with the decoded HELLO_OK. */
  static async hello(port: number, key: Buffer = newKey(), token = ''): Promise<{ client: RawClient; helloOk: ReturnType<typeof decodeHelloOk> }> {
    const client = await RawClient.connect(port);
    const reply = await client.request(encodeHello(1, key, token));
    expect(reply.header.type).toBe(FrameType.HelloOk);
    return { client, helloOk: decodeHelloOk(reply.frame) };
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.();
  }

  send(...buffers: Buffer[]): void {
    for (const buffer of buffers) this.socket.write(buffer);
  }

  /** The next frame, in arrival order; rejects if the connection closes first. */
  async next(): Promise<Received> {
    for (;;) {
      const frame = this.frames.shift();
      if (frame) return frame;
      if (this.isClosed) throw new Error('connection closed before the expected frame');
      await new Promise<void>((resolve) => (this.waiter = resolve));
    }
  }

  request(...buffers: Buffer[]): Promise<Received> {
    this.send(...buffers);
    return this.next();
  }

  async alloc(regionPages: number, reservePages = regionPages): Promise<number> {
    const reply = await this.request(encodeAlloc(7, regionPages, reservePages));
    expectType(reply, FrameType.AllocOk);
    expect(decodeAllocOk(reply.frame).regionPages).toBe(regionPages);
    return reply.header.regionId;
  }

  async write(regionId: number, firstPage: number, data: Buffer): Promise<void> {
    expectType(await this.request(encodeWrite(8, regionId, firstPage, data)), FrameType.WriteOk);
  }

  async read(regionId: number, firstPage: number, pageCount: number): Promise<Buffer> {
    const reply = await this.request(encodeRead(9, regionId, firstPage, pageCount));
    expectType(reply, FrameType.ReadOk);
    const { dataOffset } = decodeReadOk(reply.frame);
    return reply.frame.subarray(dataOffset);
  }

  /** Expects an ERROR with `code`, then (for a fatal code) the connection closing. */
  async expectError(code: ErrorCode, closes: boolean): Promise<string> {
    const reply = await this.next();
    expect(reply.header.type, 'expected an ERROR frame').toBe(FrameType.Error);
    const error = decodeError(reply.frame);
    expect(errorCodeName(error.code)).toBe(errorCodeName(code));
    if (closes) await this.closed;
    return error.message;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

function expectType(reply: Received, type: number): void {
  if (reply.header.type === FrameType.Error) {
    const { code, message } = decodeError(reply.frame);
    throw new Error(`expected type 0x${type.toString(16)}, got ERROR ${errorCodeName(code)}: ${message}`);
  }
  expect(reply.header.type).toBe(type);
}

function newKey(): Buffer {
  return crypto.randomBytes(16);
}

/** A version-1 HELLO, as the C reference client (bench/reference/c-pager.c) sends it: no weight field. */
function helloV1(requestId: number, key: Buffer, token: string): Buffer {
  const tokenBytes = Buffer.from(token, 'utf8');
  const frame = Buffer.alloc(HEADER_BYTES + 24 + tokenBytes.length);
  writeHeader(frame, 0, frame.length, FrameType.Hello, requestId, 0);
  frame.writeUInt32LE(PROTOCOL_MAGIC, 16);
  frame.writeUInt16LE(1, 20);
  frame.writeUInt16LE(tokenBytes.length, 22);
  key.copy(frame, 24);
  tokenBytes.copy(frame, 40);
  return frame;
}

function pages(count: number, seed: number): Buffer {
  const data = Buffer.allocUnsafe(count * PAGE_SIZE);
  for (let p = 0; p < count; p++) {
    data.fill((seed + p * 7) & 0xff, p * PAGE_SIZE, (p + 1) * PAGE_SIZE);
    data.writeUInt32LE(seed * 100003 + p, p * PAGE_SIZE); // each page distinct
  }
  return data;
}

async function waitFor(what: string, condition: () => Promise<boolean> | boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

// ---------------------------------------------------------------------------------------------------------
// Servers started by a test are closed after it

const servers: MemoryNodeServer[] = [];
const clients: RawClient[] = [];
const nodes: MemoryNode[] = [];

async function startServer(options: MemoryNodeServerOptions = {}): Promise<MemoryNodeServer & { port: number }> {
  const server = new MemoryNodeServer({ capacity: '64MiB', ...options });
  servers.push(server);
  const { port } = await server.listen();
  return Object.assign(server, { port });
}

async function hello(port: number, key?: Buffer, token?: string): Promise<RawClient> {
  const { client } = await RawClient.hello(port, key, token);
  clients.push(client);
  return client;
}

async function connect(port: number): Promise<RawClient> {
  const client = await RawClient.connect(port);
  clients.push(client);
  return client;
}

afterEach(async () => {
  for (const client of clients.splice(0)) client.destroy();
  await Promise.all(servers.splice(0).map((s) => s.close()));
  await Promise.all(nodes.splice(0).map((n) => n.stop()));
});

// ---------------------------------------------------------------------------------------------------------

describe('protocol encoding', () => {
  it('encodes the HELLO of the worked example in docs/protocol.md byte for byte', () => {
    const key = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
    const frame = encodeHello(1, key, 'abc', 3);
    expect(frame.toString('hex')).toBe(
      '2f000000' + '01' + '00' + '0000' + '01000000' + '00000000' + // header
        '464d454d' + '0200' + '0300' + '00112233445566778899aabbccddeeff' + '0300' + '0000' + '616263',
    );
    const hello = decodeHello(frame);
    expect(hello).toMatchObject({ magic: PROTOCOL_MAGIC, version: 2, token: 'abc', weight: 3 });
    expect(hello.namespaceKey.equals(key)).toBe(true);
    expect(decodeHello(encodeHello(1, key, '')).weight).toBe(1); // the default
  });

  it('decodes a version-1 HELLO (no weight field) as weight 1', () => {
    const key = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
    const frame = helloV1(1, key, 'abc');
    expect(frame.toString('hex')).toBe(
      '2b000000' + '01' + '00' + '0000' + '01000000' + '00000000' + // header
        '464d454d' + '0100' + '0300' + '00112233445566778899aabbccddeeff' + '616263',
    );
    const hello = decodeHello(frame);
    expect(hello).toMatchObject({ version: 1, token: 'abc', weight: 1 });
    expect(hello.namespaceKey.equals(key)).toBe(true);
  });

  it('refuses HELLO weights outside 1..1000, unknown versions and a nonzero reserved field', () => {
    const badHello = (mutate: (frame: Buffer) => void): ProtocolError => {
      const frame = encodeHello(1, newKey(), 'token', 5);
      mutate(frame);
      try {
        decodeHello(frame);
      } catch (err) {
        expect(err).toBeInstanceOf(ProtocolError);
        return err as ProtocolError;
      }
      return expect.unreachable('decodeHello should have thrown');
    };
    const weightAt = HEADER_BYTES + 24;
    expect(badHello((f) => f.writeUInt16LE(0, weightAt))).toMatchObject({
      protocolCode: ErrorCode.BAD_HELLO,
      message: 'HELLO weight is 0; it must be from 1 to 1000',
    });
    expect(badHello((f) => f.writeUInt16LE(1001, weightAt)).message).toBe('HELLO weight is 1001; it must be from 1 to 1000');
    expect(badHello((f) => f.writeUInt16LE(3, HEADER_BYTES + 4))).toMatchObject({
      protocolCode: ErrorCode.BAD_HELLO,
      message: 'protocol version 3 is not supported; this side speaks versions 1 to 2',
    });
    expect(badHello((f) => f.writeUInt16LE(0, HEADER_BYTES + 4)).protocolCode).toBe(ErrorCode.BAD_HELLO);
    expect(badHello((f) => f.writeUInt16LE(1, weightAt + 2))).toMatchObject({
      protocolCode: ErrorCode.BAD_FRAME,
      message: 'HELLO reserved field is 1, not 0',
    });
    // A version-2 body read as version 1 is 4 bytes too long.
    expect(badHello((f) => f.writeUInt16LE(1, HEADER_BYTES + 4))).toMatchObject({
      protocolCode: ErrorCode.BAD_FRAME,
      message: 'HELLO (version 1) frame body is 33 bytes; it must be 29',
    });
    expect(() => encodeHello(1, newKey(), '', 0)).toThrow(/weight must be an integer from 1 to 1000, got 0/);
    expect(() => encodeHello(1, newKey(), '', 1001)).toThrow(RangeError);
    expect(() => encodeHello(1, newKey(), '', 1.5)).toThrow(RangeError);
  });

  it('round-trips the server frames and refuses malformed bodies with a ProtocolError', () => {
    const ok = encodeHelloOk(3, {
      pageSize: PAGE_SIZE,
      maxFrameBytes: DEFAULT_MAX_FRAME_BYTES,
      capacityBytes: 2 ** 40,
      reservedBytes: 12345 * PAGE_SIZE,
      resumed: true,
    });
    expect(decodeHelloOk(ok)).toEqual({
      version: 2,
      pageSize: PAGE_SIZE,
      maxFrameBytes: DEFAULT_MAX_FRAME_BYTES,
      capacityBytes: 2 ** 40,
      reservedBytes: 12345 * PAGE_SIZE,
      resumed: true,
    });
    expect(decodeError(encodeError(5, ErrorCode.CAPACITY, 'full ✓'))).toEqual({ code: ErrorCode.CAPACITY, message: 'full ✓' });

    const head = encodeReadOkHeader(9, 4, 2 ** 33, 2);
    const readOk = Buffer.concat([head, Buffer.alloc(2 * PAGE_SIZE, 1)]);
    expect(decodeReadOk(readOk)).toEqual({ firstPage: 2 ** 33, pageCount: 2, dataOffset: READ_OK_DATA_OFFSET });
    expect(() => decodeReadOk(readOk.subarray(0, readOk.length - 1))).toThrow(ProtocolError);

    const write = Buffer.concat([encodeWriteHeader(1, 2, 3, 1), Buffer.alloc(PAGE_SIZE)]);
    expect(decodeWrite(write)).toMatchObject({ firstPage: 3, pageCount: 1 });
    const badHello = encodeHello(1, newKey(), '');
    badHello.writeUInt32LE(0xdeadbeef, HEADER_BYTES);
    try {
      decodeHello(badHello);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ProtocolError);
      expect((err as ProtocolError).protocolCode).toBe(ErrorCode.BAD_HELLO);
    }
    expect(() => decodeWriteOk(encodePing(1))).toThrow(/WRITE_OK frame body is 0 bytes/);
  });

  it('FrameReader yields the same frames however the stream is cut', () => {
    const stream = Buffer.concat([
      encodePing(1),
      encodeWrite(2, 1, 0, pages(3, 1)),
      encodeRead(3, 1, 0, 3),
      encodeHello(4, newKey(), 'token'),
    ]);
    const expected = [1, 2, 3, 4];
    for (const cut of [1, 3, 4, 15, 16, 17, 100, 4096, 5000, stream.length]) {
      const reader = new FrameReader();
      const ids: number[] = [];
      const lengths: number[] = [];
      for (let off = 0; off < stream.length; off += cut) {
        reader.push(stream.subarray(off, off + cut));
        for (let f = reader.next(); f !== null; f = reader.next()) {
          ids.push(f.header.requestId);
          lengths.push(f.frame.length);
          expect(f.frame.readUInt32LE(0)).toBe(f.frame.length);
        }
      }
      expect(ids).toEqual(expected);
      expect(lengths[1]).toBe(READ_OK_DATA_OFFSET + 3 * PAGE_SIZE);
      expect(reader.buffered).toBe(0);
    }
  });

  it('FrameReader refuses an oversized frame from its first four bytes', () => {
    const reader = new FrameReader(1024);
    reader.push(Buffer.from([0x00, 0x00, 0x00, 0x40])); // 1 GiB
    expect(() => reader.next()).toThrow(/exceeds the limit of 1024 bytes/);
    const short = new FrameReader();
    const header = Buffer.alloc(16);
    writeHeader(header, 0, 8, FrameType.Ping, 1, 0);
    short.push(header);
    expect(() => short.next()).toThrow(/shorter than the 16-byte header/);
  });
});

describe('memory node: requests', () => {
  it('serves HELLO, ALLOC, WRITE and READ with the data intact', async () => {
    const server = await startServer();
    const { client, helloOk } = await RawClient.hello(server.port);
    clients.push(client);
    expect(helloOk).toMatchObject({ version: 2, pageSize: PAGE_SIZE, maxFrameBytes: DEFAULT_MAX_FRAME_BYTES, resumed: false });
    expect(helloOk.capacityBytes).toBe(64 * 1024 * 1024);

    const regionId = await client.alloc(64);
    expect(regionId).toBe(1);
    const data = pages(3, 42);
    const writeOk = await client.request(encodeWrite(77, regionId, 10, data));
    expect(writeOk.header).toMatchObject({ type: FrameType.WriteOk, requestId: 77, regionId });
    expect(decodeWriteOk(writeOk.frame)).toEqual({ firstPage: 10, pageCount: 3 });

    const readOk = await client.request(encodeRead(78, regionId, 8, 8));
    expect(readOk.header).toMatchObject({ type: FrameType.ReadOk, requestId: 78, regionId });
    const { firstPage, pageCount, dataOffset } = decodeReadOk(readOk.frame);
    expect([firstPage, pageCount]).toEqual([8, 8]);
    const got = readOk.frame.subarray(dataOffset);
    expect(got.subarray(0, 2 * PAGE_SIZE).equals(Buffer.alloc(2 * PAGE_SIZE))).toBe(true);
    expect(got.subarray(2 * PAGE_SIZE, 5 * PAGE_SIZE).equals(data)).toBe(true);
    expect(got.subarray(5 * PAGE_SIZE).equals(Buffer.alloc(3 * PAGE_SIZE))).toBe(true);

    const stats = server.stats();
    expect(stats).toMatchObject({ reservedBytes: 64 * PAGE_SIZE, storedBytes: 3 * PAGE_SIZE, namespaces: 1, regions: 1, connections: 1 });
    expect(stats.slabBytes).toBeGreaterThanOrEqual(stats.storedBytes);
  });

  it('accepts a version-1 HELLO and answers it with version 1; version 2 with its weight', async () => {
    const server = await startServer({ token: 't' });
    const key = newKey();
    const old = await connect(server.port);
    const reply = await old.request(helloV1(5, key, 't'));
    expectType(reply, FrameType.HelloOk);
    expect(reply.header.requestId).toBe(5);
    expect(reply.frame.length).toBe(56);
    expect(decodeHelloOk(reply.frame)).toMatchObject({ version: 1, resumed: false });
    const regionId = await old.alloc(4);
    await old.write(regionId, 0, pages(1, 9));

    // The same namespace, resumed by a version-2 client with a weight.
    const fresh = await connect(server.port);
    const reply2 = await fresh.request(encodeHello(6, key, 't', 7));
    expectType(reply2, FrameType.HelloOk);
    expect(decodeHelloOk(reply2.frame)).toMatchObject({ version: 2, resumed: true });
    expect((await fresh.read(regionId, 0, 1)).equals(pages(1, 9))).toBe(true);
    expect((await old.read(regionId, 0, 1)).equals(pages(1, 9))).toBe(true);
  });

  it('reads pages never written as zeros, and overwrites in place', async () => {
    const server = await startServer();
    const client = await hello(server.port);
    const regionId = await client.alloc(2048, 2048);
    // Spans two page-table chunks, none written.
    expect((await client.read(regionId, 1000, 100)).equals(Buffer.alloc(100 * PAGE_SIZE))).toBe(true);
    await client.write(regionId, 1020, pages(8, 1));
    await client.write(regionId, 1022, pages(2, 2));
    const got = await client.read(regionId, 1020, 8);
    const expected = pages(8, 1);
    pages(2, 2).copy(expected, 2 * PAGE_SIZE);
    expect(got.equals(expected)).toBe(true);
    expect(server.stats().storedBytes).toBe(8 * PAGE_SIZE);
  });

  it('answers 100 pipelined requests on one socket in order, echoing their ids', async () => {
    const server = await startServer();
    const client = await hello(server.port);
    const regionId = await client.alloc(100);
    const frames: Buffer[] = [];
    for (let i = 0; i < 100; i++) {
      const id = 1000 + i;
      if (i % 3 === 0) frames.push(encodeWrite(id, regionId, i, pages(1, i)));
      else if (i % 3 === 1) frames.push(encodeRead(id, regionId, i - 1, 1)); // the page written just before
      else frames.push(encodePing(id));
    }
    client.send(Buffer.concat(frames)); // all in flight at once
    for (let i = 0; i < 100; i++) {
      const reply = await client.next();
      expect(reply.header.requestId).toBe(1000 + i);
      if (i % 3 === 0) expectType(reply, FrameType.WriteOk);
      else if (i % 3 === 1) {
        expectType(reply, FrameType.ReadOk);
        expect(reply.frame.subarray(READ_OK_DATA_OFFSET).equals(pages(1, i - 1))).toBe(true);
      } else expectType(reply, FrameType.Pong);
    }
    expect(server.stats().framesIn).toBe(102);
  });

  it('keeps a region id private to its namespace: another client gets NO_SUCH_REGION', async () => {
    const server = await startServer();
    const a = await hello(server.port);
    const b = await hello(server.port);
    const regionA = await a.alloc(8);
    await a.write(regionA, 0, pages(8, 5));

    b.send(encodeRead(31, regionA, 0, 1));
    const message = await b.expectError(ErrorCode.NO_SUCH_REGION, false);
    expect(message).toMatch(/no region 1 in this namespace/);
    b.send(encodeWrite(32, regionA, 0, pages(1, 9)));
    await b.expectError(ErrorCode.NO_SUCH_REGION, false);
    b.send(encodeFree(33, regionA));
    await b.expectError(ErrorCode.NO_SUCH_REGION, false);
    expectType(await b.request(encodePing(34)), FrameType.Pong); // the connection stays

    expect((await a.read(regionA, 0, 8)).equals(pages(8, 5))).toBe(true);
    expect(server.stats().requestErrors).toBe(3);
  });

  it('refuses an ALLOC over capacity with a clear message, and grants it after a FREE', async () => {
    const server = await startServer({ capacity: 64 * PAGE_SIZE });
    const client = await hello(server.port);
    const first = await client.alloc(1000, 48); // a big region striped over nodes: 48 pages here
    client.send(encodeAlloc(2, 32, 32));
    const message = await client.expectError(ErrorCode.CAPACITY, false);
    expect(message).toMatch(/memory node full: asked to reserve 32 pages \(128 KiB\), but only 16 of 64 pages/);

    const reply = await client.request(encodeFree(3, first));
    expect(reply.header).toMatchObject({ type: FrameType.FreeOk, requestId: 3, regionId: first });
    expect(server.stats().reservedBytes).toBe(0);
    expect(await client.alloc(32, 32)).toBe(first + 1);
  });

  it('answers OUT_OF_RANGE and CAPACITY per request and keeps the connection', async () => {
    const server = await startServer({ maxFrameBytes: READ_OK_DATA_OFFSET + 16 * PAGE_SIZE });
    const client = await hello(server.port);
    client.send(encodeAlloc(1, 0, 0));
    await client.expectError(ErrorCode.OUT_OF_RANGE, false);
    client.send(encodeAlloc(2, 2 ** 31 + 1, 1));
    await client.expectError(ErrorCode.OUT_OF_RANGE, false);
    const regionId = await client.alloc(100, 4);
    client.send(encodeRead(3, regionId, 99, 2));
    expect(await client.expectError(ErrorCode.OUT_OF_RANGE, false)).toMatch(/past the end of region/);
    client.send(encodeRead(4, regionId, 0, 0));
    await client.expectError(ErrorCode.OUT_OF_RANGE, false);
    client.send(encodeRead(5, regionId, 0, 17)); // reply would exceed maxFrameBytes
    expect(await client.expectError(ErrorCode.OUT_OF_RANGE, false)).toMatch(/read at most 16 pages/);
    await client.write(regionId, 0, pages(4, 1));
    client.send(encodeWrite(6, regionId, 50, pages(1, 2))); // a fifth distinct page: over its reservation
    expect(await client.expectError(ErrorCode.CAPACITY, false)).toMatch(/more than the 4 reserved/);
    await client.write(regionId, 0, pages(4, 3)); // rewriting held pages needs no more room
    expect((await client.read(regionId, 0, 4)).equals(pages(4, 3))).toBe(true);
  });

  it('resumes a namespace on reconnect with the same key, data intact', async () => {
    const server = await startServer();
    const key = newKey();
    const first = await hello(server.port, key);
    const regionId = await first.alloc(16);
    await first.write(regionId, 3, pages(2, 11));
    first.destroy();
    await first.closed;

    const { client: second, helloOk } = await RawClient.hello(server.port, key);
    clients.push(second);
    expect(helloOk.resumed).toBe(true);
    expect(helloOk.reservedBytes).toBe(16 * PAGE_SIZE);
    expect((await second.read(regionId, 3, 2)).equals(pages(2, 11))).toBe(true);
    expect(await second.alloc(4)).toBe(regionId + 1); // ids continue
  });

  it('serves several connections of one namespace at once', async () => {
    const server = await startServer();
    const key = newKey();
    const a = await hello(server.port, key);
    const { client: b, helloOk } = await RawClient.hello(server.port, key);
    clients.push(b);
    expect(helloOk.resumed).toBe(true);
    const regionId = await a.alloc(8);
    await b.write(regionId, 1, pages(1, 3));
    expect((await a.read(regionId, 1, 1)).equals(pages(1, 3))).toBe(true);
    expect(server.stats()).toMatchObject({ namespaces: 1, connections: 2 });
  });

  it('BYE frees the namespace and its capacity, then closes the connection', async () => {
    const server = await startServer({ capacity: 32 * PAGE_SIZE });
    const key = newKey();
    const client = await hello(server.port, key);
    const regionId = await client.alloc(32);
    await client.write(regionId, 0, pages(32, 1));
    expect(server.stats()).toMatchObject({ reservedBytes: 32 * PAGE_SIZE, storedBytes: 32 * PAGE_SIZE });

    const reply = await client.request(encodeBye(5));
    expect(reply.header).toMatchObject({ type: FrameType.ByeOk, requestId: 5 });
    await client.closed;
    expect(server.stats()).toMatchObject({ reservedBytes: 0, storedBytes: 0, slabBytes: 0, namespaces: 0, regions: 0 });

    const { client: again, helloOk } = await RawClient.hello(server.port, key);
    clients.push(again);
    expect(helloOk.resumed).toBe(false);
    expect(await again.alloc(32)).toBe(1);
  });

  it("frees a vanished client's namespace after orphanTimeoutMs", async () => {
    const server = await startServer({ orphanTimeoutMs: 100 });
    const key = newKey();
    const client = await hello(server.port, key);
    const regionId = await client.alloc(64);
    await client.write(regionId, 0, pages(4, 1));
    client.destroy(); // a crash: no BYE
    await waitFor('the orphaned namespace to be freed', () => server.stats().namespaces === 0);
    expect(server.stats()).toMatchObject({ reservedBytes: 0, storedBytes: 0, regions: 0 });
    const { client: again, helloOk } = await RawClient.hello(server.port, key);
    clients.push(again);
    expect(helloOk.resumed).toBe(false);
  });

  it('keeps a namespace whose client reconnects before orphanTimeoutMs', async () => {
    const server = await startServer({ orphanTimeoutMs: 300 });
    const key = newKey();
    const client = await hello(server.port, key);
    const regionId = await client.alloc(4);
    await client.write(regionId, 0, pages(1, 4));
    client.destroy();
    await client.closed;
    const back = await hello(server.port, key); // cancels the orphan timer
    await new Promise((r) => setTimeout(r, 400));
    expect((await back.read(regionId, 0, 1)).equals(pages(1, 4))).toBe(true);
  });

  it('keeps queued READ_OK replies intact when their pages are rewritten or freed before they are sent', async () => {
    // The node sends READ_OK as views of its slab pages. Stop reading so replies pile up in the node's
    // socket queue, then change those pages: the queued replies must still carry the old contents.
    const server = await startServer({ capacity: '256MiB' });
    const client = await hello(server.port);
    const a = await client.alloc(256);
    const b = await client.alloc(256);
    await client.write(a, 0, pages(256, 1));
    await client.write(b, 0, pages(256, 2));
    client.socket.pause();
    // Send 1 MiB READs until some reply bytes wait in the node's socket queue (the kernel's buffers full).
    let reads = 0;
    while (server.stats().queuedBytes === 0) {
      if (reads === 64) throw new Error('64 MiB of replies and still nothing queued in the node');
      client.send(encodeRead(100 + reads, reads % 2 === 0 ? a : b, 0, 256));
      reads++;
      const framesIn = 5 + reads;
      await waitFor('the node to answer the READ', () => server.stats().framesIn === framesIn);
    }
    // Two more, of a and of b, queued behind those for sure.
    client.send(encodeRead(100 + reads, reads % 2 === 0 ? a : b, 0, 256));
    client.send(encodeRead(101 + reads, reads % 2 === 0 ? b : a, 0, 256));
    reads += 2;
    client.send(encodeWrite(200, a, 0, pages(256, 3))); // rewrite every page of a
    client.send(encodeFree(201, b)); // free b: its slots could go to the next region
    client.send(encodeAlloc(202, 256, 256));
    client.send(encodeWrite(203, 3, 0, pages(256, 4))); // ids are per namespace and never reused: 3
    await waitFor('the node to handle the WRITE, FREE, ALLOC and WRITE', () => server.stats().framesIn === 5 + reads + 4);
    expect(server.stats().queuedBytes).toBeGreaterThan(0); // the READ_OKs still wait
    client.socket.resume();

    for (let i = 0; i < reads; i++) {
      const reply = await client.next();
      expect(reply.header.requestId).toBe(100 + i);
      expectType(reply, FrameType.ReadOk);
      const intact = reply.frame.subarray(READ_OK_DATA_OFFSET).equals(pages(256, i % 2 === 0 ? 1 : 2));
      expect(intact, `READ_OK ${100 + i} changed under the queue`).toBe(true);
    }
    expectType(await client.next(), FrameType.WriteOk);
    expectType(await client.next(), FrameType.FreeOk);
    expect((await client.next()).header).toMatchObject({ type: FrameType.AllocOk, regionId: 3 });
    expectType(await client.next(), FrameType.WriteOk);
    expect((await client.read(a, 0, 256)).equals(pages(256, 3))).toBe(true);
    expect((await client.read(3, 0, 256)).equals(pages(256, 4))).toBe(true);
    await waitFor('queued views to be released', () => server.stats().storedBytes === 512 * PAGE_SIZE);
  }, 30_000);
  it('answers a READ with the contents it had, even when the same batch then rewrites or frees them', async () => {
    const server = await startServer();
    const client = await hello(server.port);
    const a = await client.alloc(4);
    const b = await client.alloc(4);
    await client.write(a, 0, pages(4, 1));
    await client.write(b, 0, pages(4, 2));
    // One buffer, so the node handles all of it in one batch, before any reply is sent.
    client.send(
      Buffer.concat([
        encodeRead(10, a, 0, 4),
        encodeWrite(11, a, 1, pages(2, 3)),
        encodeRead(12, b, 0, 4),
        encodeFree(13, b),
        encodeAlloc(14, 4, 4),
        encodeWrite(15, 3, 0, pages(4, 4)),
        encodeRead(16, a, 0, 4),
      ]),
    );
    const first = await client.next();
    expect(first.frame.subarray(READ_OK_DATA_OFFSET).equals(pages(4, 1))).toBe(true);
    expectType(await client.next(), FrameType.WriteOk);
    expect((await client.next()).frame.subarray(READ_OK_DATA_OFFSET).equals(pages(4, 2))).toBe(true);
    expectType(await client.next(), FrameType.FreeOk);
    expectType(await client.next(), FrameType.AllocOk);
    expectType(await client.next(), FrameType.WriteOk);
    const expected = pages(4, 1);
    pages(2, 3).copy(expected, PAGE_SIZE);
    expect((await client.next()).frame.subarray(READ_OK_DATA_OFFSET).equals(expected)).toBe(true);
    await waitFor('pins to be released', () => server.stats().storedBytes === 8 * PAGE_SIZE);
  });

  it('agrees with a model of pages over a long random pipelined run', async () => {
    // Random ALLOC, FREE, WRITE and READ, all pipelined, with the client pausing now and then so replies
    // queue in the node. Every READ_OK must show what the pages held when the READ was sent.
    const server = await startServer({ capacity: 2048 * PAGE_SIZE, slabPages: 16 });
    const client = await hello(server.port);
    let seed = 12345;
    const random = (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) & 0x7fffffff;
      return seed % n;
    };
    const regions = new Map<number, { pages: number; reserve: number; data: Map<number, number> }>();
    let nextRegion = 1;
    let reserved = 0;
    const checks: ((reply: Received) => void)[] = [];
    const send = (frame: Buffer, check: (reply: Received) => void) => {
      checks.push(check);
      client.send(frame);
    };
    for (let op = 0; op < 2500; op++) {
      if (op % 250 === 0) {
        client.socket.pause();
        setTimeout(() => client.socket.resume(), 10);
      }
      const r = random(100);
      const ids = [...regions.keys()];
      if (r < 8 || ids.length === 0) {
        const regionPages = 1 + random(300);
        const reserve = 1 + random(regionPages);
        const fits = reserved + reserve <= 2048;
        const id = fits ? nextRegion++ : 0;
        if (fits) {
          reserved += reserve;
          regions.set(id, { pages: regionPages, reserve, data: new Map() });
        }
        send(encodeAlloc(op, regionPages, reserve), (reply) => {
          if (fits) expect(reply.header).toMatchObject({ type: FrameType.AllocOk, regionId: id });
          else expect(decodeError(reply.frame).code).toBe(ErrorCode.CAPACITY);
        });
        continue;
      }
      const id = ids[random(ids.length)];
      const region = regions.get(id)!;
      if (r < 12) {
        reserved -= region.reserve;
        regions.delete(id);
        send(encodeFree(op, id), (reply) => expectType(reply, FrameType.FreeOk));
        continue;
      }
      const firstPage = random(region.pages);
      const count = 1 + random(Math.min(64, region.pages - firstPage));
      if (r < 55) {
        const data = Buffer.allocUnsafe(count * PAGE_SIZE);
        const values: number[] = [];
        for (let k = 0; k < count; k++) values.push(1 + random(255));
        values.forEach((v, k) => data.fill(v, k * PAGE_SIZE, (k + 1) * PAGE_SIZE));
        let fresh = 0;
        for (let k = 0; k < count; k++) if (!region.data.has(firstPage + k)) fresh++;
        const fits = region.data.size + fresh <= region.reserve;
        if (fits) values.forEach((v, k) => region.data.set(firstPage + k, v));
        send(encodeWrite(op, id, firstPage, data), (reply) => {
          if (fits) expectType(reply, FrameType.WriteOk);
          else expect(decodeError(reply.frame).code).toBe(ErrorCode.CAPACITY);
        });
      } else {
        const want = Array.from({ length: count }, (_, k) => region.data.get(firstPage + k) ?? 0);
        send(encodeRead(op, id, firstPage, count), (reply) => {
          expectType(reply, FrameType.ReadOk);
          const got = reply.frame.subarray(READ_OK_DATA_OFFSET);
          for (let k = 0; k < count; k++) {
            if (got[k * PAGE_SIZE] !== want[k] || got[(k + 1) * PAGE_SIZE - 1] !== want[k]) {
              throw new Error(`READ ${op}: page ${firstPage + k} of region ${id} is ${got[k * PAGE_SIZE]}, expected ${want[k]}`);
            }
          }
        });
      }
      if (op % 50 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    for (const check of checks) check(await client.next());
    expectType(await client.request(encodeBye(1)), FrameType.ByeOk);
    await client.closed;
    expect(server.stats()).toMatchObject({ reservedBytes: 0, storedBytes: 0, slabBytes: 0 });
  }, 30_000);
});

describe('memory node: malformed input', () => {
  it('answers garbage with ERROR and closes, while another client keeps working', async () => {
    const server = await startServer();
    const good = await hello(server.port);
    const regionId = await good.alloc(4);

    const garbage = crypto.randomBytes(512);
    garbage[3] |= 0x80; // its first word, read as a frame length, is 2 GiB or more
    const bad = await connect(server.port);
    bad.send(garbage);
    await bad.expectError(ErrorCode.FRAME_TOO_LARGE, true);

    const http = await connect(server.port);
    http.send(Buffer.from('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n'));
    await http.expectError(ErrorCode.FRAME_TOO_LARGE, true);

    await good.write(regionId, 0, pages(4, 8));
    expect((await good.read(regionId, 0, 4)).equals(pages(4, 8))).toBe(true);
    expect(server.stats()).toMatchObject({ protocolErrors: 2, connections: 1 });
  });

  it('closes a connection on a frame shorter than its header', async () => {
    const server = await startServer();
    const client = await hello(server.port);
    const frame = Buffer.alloc(16);
    writeHeader(frame, 0, 8, FrameType.Ping, 1, 0);
    client.send(frame);
    expect(await client.expectError(ErrorCode.BAD_FRAME, true)).toMatch(/shorter than the 16-byte header/);
  });

  it('closes a connection on a READ with a 4-byte body', async () => {
    const server = await startServer();
    const client = await hello(server.port);
    const frame = Buffer.alloc(20);
    writeHeader(frame, 0, 20, FrameType.Read, 2, 1);
    client.send(frame);
    expect(await client.expectError(ErrorCode.BAD_FRAME, true)).toMatch(/READ frame body is 4 bytes; it must be 12/);
  });

  it('closes a connection on a WRITE whose length does not match its page count', async () => {
    const server = await startServer();
    const client = await hello(server.port);
    const regionId = await client.alloc(4);
    const header = encodeWriteHeader(3, regionId, 0, 2);
    header.writeUInt32LE(READ_OK_DATA_OFFSET + PAGE_SIZE, 0); // one page of data for a WRITE of two
    client.send(header, pages(1, 1));
    expect(await client.expectError(ErrorCode.BAD_FRAME, true)).toMatch(/WRITE of 2 pages must be/);
  });

  it('refuses a 1 GiB frame from its header alone', async () => {
    const server = await startServer();
    const client = await hello(server.port);
    const header = Buffer.alloc(16);
    writeHeader(header, 0, 2 ** 30, FrameType.Write, 4, 1);
    client.send(header); // only the header: the node must not wait for (or buffer) the body
    expect(await client.expectError(ErrorCode.FRAME_TOO_LARGE, true)).toMatch(/exceeds the limit of 4194336 bytes/);
    expect(server.stats().bytesIn).toBeLessThan(1024);
  });

  it('closes a connection on nonzero flags or an unknown type', async () => {
    const server = await startServer();
    const flagged = await hello(server.port);
    const ping = encodePing(1);
    ping[5] = 1;
    flagged.send(ping);
    await flagged.expectError(ErrorCode.BAD_FRAME, true);

    const unknown = await hello(server.port);
    const frame = Buffer.alloc(16);
    writeHeader(frame, 0, 16, 0x42, 9, 0);
    unknown.send(frame);
    const reply = await unknown.next();
    expect(reply.header.requestId).toBe(9);
    expect(decodeError(reply.frame).code).toBe(ErrorCode.UNKNOWN_TYPE);
    await unknown.closed;
  });

  it('sends replies earned before a bad frame, then the error', async () => {
    const server = await startServer();
    const client = await hello(server.port);
    const bad = Buffer.alloc(16);
    writeHeader(bad, 0, 16, FrameType.Ping, 3, 0);
    bad[6] = 1; // reserved
    client.send(Buffer.concat([encodePing(1), encodePing(2), bad, encodePing(4)]));
    expect((await client.next()).header).toMatchObject({ type: FrameType.Pong, requestId: 1 });
    expect((await client.next()).header).toMatchObject({ type: FrameType.Pong, requestId: 2 });
    await client.expectError(ErrorCode.BAD_FRAME, true);
  });

  it('refuses a wrong token with AUTH_FAILED and closes', async () => {
    const server = await startServer({ token: 'sekrit' });
    const client = await connect(server.port);
    client.send(encodeHello(1, newKey(), 'guess'));
    expect(await client.expectError(ErrorCode.AUTH_FAILED, true)).toMatch(/wrong token/);
    const ok = await hello(server.port, newKey(), 'sekrit');
    expectType(await ok.request(encodePing(2)), FrameType.Pong);
  });

  it('binds a namespace to the token that created it', async () => {
    const server = await startServer(); // no token required: any client may connect
    const key = newKey();
    const owner = await hello(server.port, key, 'mine');
    await owner.alloc(4);
    const intruder = await connect(server.port);
    intruder.send(encodeHello(1, key, 'yours'));
    expect(await intruder.expectError(ErrorCode.AUTH_FAILED, true)).toMatch(/created with a different token/);
    expect(server.stats().regions).toBe(1);
  });

  it('refuses a bad magic or version with BAD_HELLO', async () => {
    const server = await startServer();
    const client = await connect(server.port);
    const frame = encodeHello(1, newKey(), '');
    frame.writeUInt16LE(3, HEADER_BYTES + 4);
    client.send(frame);
    expect(await client.expectError(ErrorCode.BAD_HELLO, true)).toMatch(/version 3 is not supported/);
    const magic = await connect(server.port);
    const wrong = encodeHello(1, newKey(), '');
    wrong.writeUInt32LE(0xdeadbeef, HEADER_BYTES);
    magic.send(wrong);
    expect(await magic.expectError(ErrorCode.BAD_HELLO, true)).toMatch(/not a farmem client/);
  });

  it('refuses a HELLO weight of 0 or over 1000 with BAD_HELLO and closes', async () => {
    const server = await startServer();
    for (const weight of [0, 1001, 0xffff]) {
      const client = await connect(server.port);
      const frame = encodeHello(1, newKey(), '');
      frame.writeUInt16LE(weight, HEADER_BYTES + 24);
      client.send(frame);
      expect(await client.expectError(ErrorCode.BAD_HELLO, true)).toBe(`HELLO weight is ${weight}; it must be from 1 to 1000`);
    }
    expect(server.stats()).toMatchObject({ namespaces: 0, protocolErrors: 3 });
  });

  it('refuses any request before HELLO with NOT_READY', async () => {
    const server = await startServer();
    const client = await connect(server.port);
    client.send(encodeAlloc(1, 4, 4));
    expect(await client.expectError(ErrorCode.NOT_READY, true)).toMatch(/ALLOC before HELLO/);
    expect(server.stats().reservedBytes).toBe(0);
  });

  it('closes a connection that stops mid-frame for idleTimeoutMs', async () => {
    const server = await startServer({ idleTimeoutMs: 100 });
    const client = await hello(server.port);
    const frame = encodeRead(1, 1, 0, 1);
    client.send(frame.subarray(0, 10));
    expect(await client.expectError(ErrorCode.BAD_FRAME, true)).toMatch(/incomplete frame: 10 bytes/);
  });

  it('keeps an idle connection with nothing pending open past idleTimeoutMs', async () => {
    const server = await startServer({ idleTimeoutMs: 50 });
    const client = await hello(server.port);
    await new Promise((r) => setTimeout(r, 200));
    expectType(await client.request(encodePing(1)), FrameType.Pong);
  });
});

describe('MemoryNode', () => {
  const workerEntry = path.join(__dirname, '..', 'dist', 'cjs', 'node', 'worker.js');

  async function roundTrip(node: MemoryNode): Promise<void> {
    const client = await hello(node.port);
    const regionId = await client.alloc(8);
    await client.write(regionId, 2, pages(3, 6));
    expect((await client.read(regionId, 2, 3)).equals(pages(3, 6))).toBe(true);
  }

  it('runs on a worker thread by default and serves', async () => {
    expect(fs.existsSync(workerEntry), `${workerEntry} is missing: run 'npm run build:ts' first`).toBe(true);
    const node = await MemoryNode.start({ capacity: '16MiB' });
    nodes.push(node);
    expect(node.host).toBe('127.0.0.1');
    expect(node.port).toBeGreaterThan(0);
    expect(node.address).toBe(`127.0.0.1:${node.port}`);
    expect(node.capacity).toBe(16 * 1024 * 1024);
    await roundTrip(node);
    expect(await node.stats()).toMatchObject({ capacityBytes: 16 * 1024 * 1024, storedBytes: 3 * PAGE_SIZE, connections: 1 });
    await node.stop();
    await node.stop(); // idempotent
    await expect(node.stats()).rejects.toMatchObject({ code: 'FARMEM_CLOSED' });
    await expect(RawClient.connect(node.port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('runs inline on the calling thread and serves', async () => {
    const node = await MemoryNode.start({ inline: true, capacity: 1 << 20, token: 't' });
    nodes.push(node);
    const client = await connect(node.port);
    client.send(encodeHello(1, newKey(), 'nope'));
    await client.expectError(ErrorCode.AUTH_FAILED, true);
    const { client: ok } = await RawClient.hello(node.port, newKey(), 't');
    clients.push(ok);
    expectType(await ok.request(encodePing(1)), FrameType.Pong);
    expect((await node.stats()).protocolErrors).toBe(1);
    await node.stop();
    await node.stop();
  });

  it('validates its options with helpful messages', async () => {
    const rejects = async (options: unknown, message: RegExp) => {
      const err = await MemoryNode.start(options as never).then(
        () => expect.unreachable('start() should have failed'),
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(FarmemError);
      expect(err).toMatchObject({ code: 'FARMEM_INVALID_OPTION' });
      expect((err as Error).message).toMatch(message);
    };
    await rejects({ capacity: '12XB' }, /option capacity: expected a size such as .*got "12XB"/);
    await rejects({ capacty: '1GiB' }, /unknown option 'capacty' .*did you mean 'capacity'\?/);
    await rejects({ inlined: true }, /unknown option 'inlined' .*did you mean 'inline'\?/);
    await rejects({ zzz: 1 }, /unknown option 'zzz' .*known options: host, port/);
    await rejects({ slabPages: 4 }, /unknown option 'slabPages'/);
    await rejects({ port: 70000 }, /option port: expected an integer port from 0 to 65535/);
    await rejects({ capacity: 100 }, /option capacity: expected a size from 4096 bytes/);
    await rejects({ token: 5 }, /option token: expected a string/);
    await rejects({ maxFrameBytes: 100 }, /option maxFrameBytes/);
    await rejects({ idleTimeoutMs: -1 }, /option idleTimeoutMs: expected a non-negative integer/);
    await rejects({ orphanTimeoutMs: 1.5 }, /option orphanTimeoutMs/);
    await rejects({ inline: 'yes' }, /option inline: expected true or false/);
    await rejects({ host: '' }, /option host/);
    await rejects('1GiB', /expected an object of options/);
  });

  it('reports a port in use as FARMEM_SYSCALL, inline and on a worker', async () => {
    const taken = await MemoryNode.start({ inline: true });
    nodes.push(taken);
    for (const inline of [true, false]) {
      const err = await MemoryNode.start({ port: taken.port, inline }).then(
        () => expect.unreachable('start() should have failed'),
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(FarmemError);
      expect(err).toMatchObject({ code: 'FARMEM_SYSCALL', syscall: 'listen', errno: 98 });
      expect((err as Error).message).toBe(
        `cannot listen on 127.0.0.1:${taken.port}: address in use — pick another --port or 0`,
      );
    }
  });
});

// readHeader is what a client uses on the first 16 bytes of each reply.
it('readHeader reads every header field', () => {
  const frame = encodeAlloc(0xfffffffe, 5, 5);
  frame.writeUInt32LE(123, 12);
  expect(readHeader(frame, 0)).toEqual({
    frameLength: 32,
    type: FrameType.Alloc,
    flags: 0,
    reserved: 0,
    requestId: 0xfffffffe,
    regionId: 123,
  });
});
