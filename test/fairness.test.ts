// Weighted fair queueing on the memory node: one client's pipelined bulk must not starve another namespace,
// weights share the node, and each connection's requests still take effect in order. Real sockets on
// 127.0.0.1, the node in this process; every assertion is about the order or the amount of replies received,
// never about time.

import * as crypto from 'node:crypto';
import * as net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryNodeServer, type MemoryNodeServerOptions } from '../lib/node/server';
import { Transport, type TransportOptions } from '../lib/transport/transport';
import {
  DEFAULT_MAX_FRAME_BYTES,
  FrameReader,
  FrameType,
  PAGE_SIZE,
  READ_OK_DATA_OFFSET,
  decodeError,
  decodeHello,
  encodeAlloc,
  encodeFree,
  encodeHello,
  encodeHelloOk,
  encodePing,
  encodeRead,
  encodeWrite,
  errorCodeName,
} from '../lib/protocol';

interface Reply {
  type: number;
  requestId: number;
  regionId: number;
  /** The whole frame's length. */
  bytes: number;
  /** READ_OK pages (copied), when the client keeps them. */
  data?: Buffer;
}

/** A raw protocol client that counts what it receives and, when asked, keeps READ_OK pages. */
class Client {
  readonly replies: Reply[] = [];
  bytesReceived = 0;
  /** Called after each complete reply, in arrival order across every client of the test (one thread). */
  onReply: ((reply: Reply) => void) | null = null;
  private readonly reader = new FrameReader(DEFAULT_MAX_FRAME_BYTES);
  private waiters: Array<() => void> = [];

  private constructor(
    readonly socket: net.Socket,
    readonly name: string,
    private readonly keepData: boolean,
  ) {
    socket.on('data', (chunk: Buffer) => {
      this.reader.push(chunk);
      for (let f = this.reader.next(); f !== null; f = this.reader.next()) {
        const reply: Reply = {
          type: f.header.type,
          requestId: f.header.requestId,
          regionId: f.header.regionId,
          bytes: f.frame.length,
        };
        if (f.header.type === FrameType.Error) {
          const { code, message } = decodeError(f.frame);
          throw new Error(`${name}: ERROR ${errorCodeName(code)} for request ${f.header.requestId}: ${message}`);
        }
        if (keepData && f.header.type === FrameType.ReadOk) reply.data = Buffer.from(f.frame.subarray(READ_OK_DATA_OFFSET));
        this.bytesReceived += reply.bytes;
        this.replies.push(reply);
        this.onReply?.(reply);
      }
      for (const wake of this.waiters.splice(0)) wake();
    });
    socket.on('error', () => {});
  }

  static async open(port: number, name: string, key: Buffer, weight: number, keepData = false): Promise<Client> {
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1', () => resolve(s));
      s.once('error', reject);
    });
    const client = new Client(socket, name, keepData);
    clients.push(client);
    client.send(encodeHello(1, key, '', weight));
    await client.until(1);
    expect(client.replies[0].type).toBe(FrameType.HelloOk);
    client.replies.length = 0;
    client.bytesReceived = 0;
    return client;
  }

  send(...frames: Buffer[]): void {
    this.socket.write(frames.length === 1 ? frames[0] : Buffer.concat(frames));
  }

  /** Resolves once `count` replies have arrived in all. */
  async until(count: number): Promise<void> {
    while (this.replies.length < count) {
      if (this.socket.destroyed) throw new Error(`${this.name}: connection closed after ${this.replies.length} of ${count} replies`);
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  /** ALLOCs a region of `pages` and fills it with pattern pages; returns its id. */
  async region(pages: number, seed: number): Promise<number> {
    const start = this.replies.length;
    this.send(encodeAlloc(2, pages, pages));
    await this.until(start + 1);
    const regionId = this.replies[start].regionId;
    for (let first = 0; first < pages; first += 256) {
      this.send(encodeWrite(3, regionId, first, pattern(Math.min(256, pages - first), seed + first)));
    }
    await this.until(start + 1 + Math.ceil(pages / 256));
    this.replies.length = 0;
    this.bytesReceived = 0;
    return regionId;
  }
}

/** `count` pages, each distinct for (seed, page). */
function pattern(count: number, seed: number): Buffer {
  const data = Buffer.alloc(count * PAGE_SIZE);
  for (let p = 0; p < count; p++) {
    data.fill((seed + p) & 0xff, p * PAGE_SIZE, (p + 1) * PAGE_SIZE);
    data.writeUInt32LE(seed * 7919 + p, p * PAGE_SIZE);
  }
  return data;
}

const servers: MemoryNodeServer[] = [];
const clients: Client[] = [];

async function startServer(options: MemoryNodeServerOptions = {}): Promise<MemoryNodeServer & { port: number }> {
  const server = new MemoryNodeServer({ capacity: '512MiB', ...options });
  servers.push(server);
  const { port } = await server.listen();
  return Object.assign(server, { port });
}

afterEach(async () => {
  for (const client of clients.splice(0)) client.socket.destroy();
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

const key = (): Buffer => crypto.randomBytes(16);

/** `count` READs of `pages` pages from page 0, request ids from `firstId`, in one buffer (all in flight at once). */
function reads(count: number, regionId: number, pages: number, firstId = 100): Buffer {
  const frames: Buffer[] = [];
  for (let i = 0; i < count; i++) frames.push(encodeRead(firstId + i, regionId, 0, pages));
  return Buffer.concat(frames);
}

describe('fair queueing on the memory node', () => {
  it("answers another namespace's small READs while one client has hundreds of large READs pipelined", async () => {
    const server = await startServer();
    const bulk = await Client.open(server.port, 'bulk', key(), 1);
    const small = await Client.open(server.port, 'small', key(), 1, true);
    const bulkRegion = await bulk.region(256, 1);
    const smallRegion = await small.region(8, 2);
    const framesBefore = server.stats().framesIn;

    // When small's last reply arrives: how many replies bulk had received, and how many of bulk's READs the
    // node had handled (an order, read from the node's counter; small's 4 frames are in it).
    let bulkRepliesWhenSmallDone = -1;
    let bulkHandledWhenSmallDone = -1;
    small.onReply = () => {
      if (small.replies.length < 4) return;
      bulkRepliesWhenSmallDone = bulk.replies.length;
      bulkHandledWhenSmallDone = server.stats().framesIn - framesBefore - 4;
    };
    // 200 × 32 pages (25 MiB): without fair queueing the node handled 64 of them (8 MiB of replies, its
    // per-connection output limit) before it even read small's requests; with it, one pass of bulk alone
    // (4 MiB, as bulk's READs arrive first) and bulk's quantum in the round that serves small.
    bulk.send(reads(200, bulkRegion, 32));
    small.send(encodeRead(1, smallRegion, 0, 1), encodeRead(2, smallRegion, 3, 1), encodeRead(3, smallRegion, 7, 1), encodeRead(4, smallRegion, 2, 1));
    await small.until(4);
    await bulk.until(200);

    console.log(
      `small's 4 READs all answered when bulk had received ${bulkRepliesWhenSmallDone} of its 200 replies ` +
        `and the node had handled ${bulkHandledWhenSmallDone} of bulk's READs`,
    );
    expect(bulkRepliesWhenSmallDone).toBeGreaterThanOrEqual(0);
    expect(bulkRepliesWhenSmallDone).toBeLessThan(100);
    expect(bulkHandledWhenSmallDone).toBeLessThan(48);
    expect(small.replies.map((r) => r.requestId)).toEqual([1, 2, 3, 4]);
    [0, 3, 7, 2].forEach((page, i) => expect(small.replies[i].data!.equals(pattern(8, 2).subarray(page * PAGE_SIZE, (page + 1) * PAGE_SIZE))).toBe(true));
    expect(bulk.replies.map((r) => r.requestId)).toEqual(Array.from({ length: 200 }, (_, i) => 100 + i));
    expect(bulk.replies.every((r) => r.type === FrameType.ReadOk && r.bytes === READ_OK_DATA_OFFSET + 32 * PAGE_SIZE)).toBe(true);
    const stats = server.stats();
    expect(stats.schedulerRounds).toBeGreaterThan(0);
    expect(stats).toMatchObject({ backloggedNamespaces: 0, pendingRequestBytes: 0 });
  }, 60_000);

  it('shares the node 3:1 between two saturating namespaces of weights 3 and 1', async () => {
    const server = await startServer();
    const heavyKey = key();
    // The namespace's weight is its most recent HELLO's: this connection says 1, the next one of the same
    // namespace says 3, and the READs go over this one.
    const heavy = await Client.open(server.port, 'heavy', heavyKey, 1);
    await Client.open(server.port, 'heavy (second HELLO)', heavyKey, 3);
    const light = await Client.open(server.port, 'light', key(), 1);
    const heavyRegion = await heavy.region(64, 3);
    const lightRegion = await light.region(64, 4);

    const count = 240; // READs of 64 pages (256 KiB) each: 60 MiB per client
    let heavyBytesAtFirstFinish = -1;
    let lightBytesAtFirstFinish = -1;
    let firstToFinish = '';
    const check = (client: Client) => () => {
      if (firstToFinish !== '' || client.replies.length < count) return;
      firstToFinish = client.name;
      heavyBytesAtFirstFinish = heavy.bytesReceived;
      lightBytesAtFirstFinish = light.bytesReceived;
    };
    heavy.onReply = check(heavy);
    light.onReply = check(light);
    heavy.send(reads(count, heavyRegion, 64));
    light.send(reads(count, lightRegion, 64));
    await heavy.until(count);
    await light.until(count);

    const ratio = heavyBytesAtFirstFinish / lightBytesAtFirstFinish;
    console.log(
      `${firstToFinish} finished first; by then heavy had ${(heavyBytesAtFirstFinish / 2 ** 20).toFixed(1)} MiB, ` +
        `light ${(lightBytesAtFirstFinish / 2 ** 20).toFixed(1)} MiB: ratio ${ratio.toFixed(2)} (rounds: ${server.stats().schedulerRounds})`,
    );
    expect(firstToFinish).toBe('heavy');
    expect(ratio).toBeGreaterThan(2.5);
    expect(ratio).toBeLessThan(3.6);
  }, 60_000);

  it("lets a namespace's connections take turns: an urgent READ does not wait behind the bulk connection", async () => {
    const server = await startServer();
    const k = key();
    const bulk = await Client.open(server.port, 'bulk', k, 1);
    const urgent = await Client.open(server.port, 'urgent', k, 1, true);
    const regionId = await bulk.region(256, 5);
    const framesBefore = server.stats().framesIn;

    let bulkRepliesWhenUrgentDone = -1;
    let bulkHandledWhenUrgentDone = -1;
    urgent.onReply = () => {
      if (urgent.replies.length < 3) return;
      bulkRepliesWhenUrgentDone = bulk.replies.length;
      bulkHandledWhenUrgentDone = server.stats().framesIn - framesBefore - 3;
    };
    bulk.send(reads(200, regionId, 32));
    urgent.send(encodeRead(1, regionId, 10, 1), encodeRead(2, regionId, 20, 1), encodeRead(3, regionId, 30, 1));
    await urgent.until(3);
    await bulk.until(200);
    console.log(
      `urgent's 3 READs all answered when bulk had received ${bulkRepliesWhenUrgentDone} of its 200 replies ` +
        `and the node had handled ${bulkHandledWhenUrgentDone} of bulk's READs`,
    );
    expect(bulkRepliesWhenUrgentDone).toBeGreaterThanOrEqual(0);
    expect(bulkRepliesWhenUrgentDone).toBeLessThan(100);
    expect(bulkHandledWhenUrgentDone).toBeLessThan(48);
    const region = pattern(256, 5);
    [10, 20, 30].forEach((page, i) => expect(urgent.replies[i].data!.equals(region.subarray(page * PAGE_SIZE, (page + 1) * PAGE_SIZE))).toBe(true));
  }, 60_000);

  it("keeps each connection's requests in order while another namespace saturates the node", async () => {
    const server = await startServer();
    const hog = await Client.open(server.port, 'hog', key(), 5);
    const client = await Client.open(server.port, 'client', key(), 1, true);
    const hogRegion = await hog.region(256, 6);
    const regionId = await client.region(16, 7);
    const doomed = await client.region(4, 8);
    hog.send(reads(100, hogRegion, 256));

    // Cheap frames (PING, FREE, ALLOC) must not overtake the READs and WRITEs queued before them.
    client.send(
      encodeWrite(10, regionId, 5, pattern(1, 100)),
      encodeRead(11, regionId, 5, 1),
      encodeWrite(12, regionId, 5, pattern(1, 200)),
      encodePing(13),
      encodeRead(14, regionId, 4, 3),
      encodeRead(15, doomed, 0, 4),
      encodeFree(16, doomed),
      encodeAlloc(17, 4, 4),
      encodeRead(18, regionId, 5, 1),
    );
    await client.until(9);
    expect(client.replies.map((r) => [r.requestId, r.type])).toEqual([
      [10, FrameType.WriteOk],
      [11, FrameType.ReadOk],
      [12, FrameType.WriteOk],
      [13, FrameType.Pong],
      [14, FrameType.ReadOk],
      [15, FrameType.ReadOk],
      [16, FrameType.FreeOk],
      [17, FrameType.AllocOk],
      [18, FrameType.ReadOk],
    ]);
    expect(client.replies[1].data!.equals(pattern(1, 100))).toBe(true);
    const three = Buffer.concat([pattern(16, 7).subarray(4 * PAGE_SIZE, 5 * PAGE_SIZE), pattern(1, 200), pattern(16, 7).subarray(6 * PAGE_SIZE, 7 * PAGE_SIZE)]);
    expect(client.replies[4].data!.equals(three)).toBe(true);
    expect(client.replies[5].data!.equals(pattern(4, 8))).toBe(true);
    expect(client.replies[8].data!.equals(pattern(1, 200))).toBe(true);
    await hog.until(100);
  }, 60_000);

  it('holds back a client whose queued WRITEs wait for their turn, rather than buffering them all', async () => {
    const server = await startServer();
    const hog = await Client.open(server.port, 'hog', key(), 1000);
    const writer = await Client.open(server.port, 'writer', key(), 1, true);
    const hogRegion = await hog.region(256, 9);
    const writerRegion = await writer.region(256, 10);
    let maxPending = 0;
    let sampling = true;
    const sample = (): void => {
      maxPending = Math.max(maxPending, server.stats().pendingRequestBytes);
      if (sampling) setImmediate(sample);
    };
    sample();
    hog.send(reads(300, hogRegion, 256));
    const writes: Buffer[] = [];
    for (let i = 0; i < 48; i++) writes.push(encodeWrite(1000 + i, writerRegion, 0, pattern(256, 11 + i))); // 48 MiB
    writer.send(...writes);
    await writer.until(48);
    await hog.until(300);
    sampling = false;
    console.log(`most request bytes waiting in the node at once: ${(maxPending / 2 ** 20).toFixed(2)} MiB of 48 MiB sent`);
    // Per connection: one frame limit, plus what one socket read can add on top.
    expect(maxPending).toBeLessThanOrEqual(2 * (DEFAULT_MAX_FRAME_BYTES + 64 * 1024));
    expect(writer.replies.every((r, i) => r.type === FrameType.WriteOk && r.requestId === 1000 + i)).toBe(true);
    writer.send(encodeRead(2000, writerRegion, 0, 256));
    await writer.until(49);
    expect(writer.replies[48].data!.equals(pattern(256, 11 + 47))).toBe(true);
    expect(server.stats().pendingRequestBytes).toBe(0);
  }, 60_000);
});

describe('the client transport', () => {
  const options = (port: number, weight?: number): TransportOptions => ({
    nodes: [{ host: '127.0.0.1', port }],
    token: '',
    namespaceKey: key(),
    weight,
    stripePages: 64,
    connectTimeoutMs: 5000,
    requestTimeoutMs: 0,
    reconnectInitialMs: 50,
    reconnectMaxMs: 100,
  });
  const events = { onNodeDown: () => {}, onNodeUp: () => {}, onNodeLost: () => {} };

  it('sends its weight in HELLO (version 2, default 1) on both connections, and refuses a bad one', async () => {
    // A stand-in node that records each HELLO and answers it.
    const hellos: Array<{ version: number; weight: number }> = [];
    const sockets: net.Socket[] = [];
    const fake = net.createServer((socket) => {
      sockets.push(socket);
      const reader = new FrameReader();
      socket.on('error', () => {});
      socket.on('data', (chunk: Buffer) => {
        reader.push(chunk);
        for (let f = reader.next(); f !== null; f = reader.next()) {
          if (f.header.type !== FrameType.Hello) continue;
          const { version, weight } = decodeHello(f.frame);
          hellos.push({ version, weight });
          socket.write(
            encodeHelloOk(f.header.requestId, { pageSize: PAGE_SIZE, maxFrameBytes: DEFAULT_MAX_FRAME_BYTES, capacityBytes: 1 << 30, reservedBytes: 0, resumed: false }),
          );
        }
      });
    });
    await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve));
    const port = (fake.address() as net.AddressInfo).port;
    try {
      for (const weight of [undefined, 7]) {
        const transport = new Transport(options(port, weight), events);
        await transport.open();
        await transport.close(10);
      }
      expect(hellos).toEqual([
        { version: 2, weight: 1 },
        { version: 2, weight: 1 },
        { version: 2, weight: 7 },
        { version: 2, weight: 7 },
      ]);
      for (const weight of [0, 1001, 2.5]) {
        expect(() => new Transport(options(port, weight), events)).toThrow(
          expect.objectContaining({ code: 'FARMEM_INVALID_OPTION', message: `option weight: expected an integer from 1 to 1000, got ${weight}` }),
        );
      }
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => fake.close(resolve));
    }
  });
});
