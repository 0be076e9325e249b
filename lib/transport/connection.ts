// One TCP connection to a memory node: handshake, pipelined requests, streaming replies,
// reconnect with backoff. Runs on the pager thread.
import * as net from 'node:net';
import { FarmemError, type FarmemErrorCode } from '../errors';
import {
  DEFAULT_WEIGHT,
  FrameType,
  ErrorCode,
  HEADER_BYTES,
  PAGE_SIZE,
  PROTOCOL_VERSION,
  READ_OK_DATA_OFFSET,
  decodeError,
  decodeHelloOk,
  encodeHello,
  readHeader,
} from '../protocol';

export interface Request {
  id: number;
  type: number;
  /** Frame bytes to send: the header (and body); for writes, `data` follows. */
  frame: Buffer;
  data?: Uint8Array;
  firstPage: number;
  pageCount: number;
  /** Pages of a READ already delivered; on a resend only the rest is asked for again. */
  delivered: number;
  /** Re-encodes the frame for a resend (reads after a partial delivery). */
  reencode?: (req: Request) => void;
  sentAt: number;
  /** The reply frame of a small answer (ALLOC_OK carries the region id). */
  reply?: Buffer;
  /** READ_OK pages as they arrive: `count` whole pages of `src` at `srcOffset`, starting at request page `index`. */
  onPages?: (req: Request, index: number, src: Buffer, srcOffset: number, count: number) => void;
  /**
   * Where the READ_OK pages [index, index + count) of this request may be received in place: a view of
   * exactly `count` pages, which the socket then reads into directly (no copy out of the receive buffer),
   * or null. Pages received so reach onPages with `src` that view. The view must stay valid and unused
   * by anything else until the request is done or the connection is gone.
   */
  receiveInto?: (req: Request, index: number, count: number) => Buffer | null;
  onDone: (error: FarmemError | null, req: Request) => void;
}

export interface ConnectionOptions {
  host: string;
  port: number;
  token: string;
  namespaceKey: Buffer;
  /** This client's share of the node against other clients (HELLO weight, 1..1000). Default 1. */
  weight?: number;
  connectTimeoutMs: number;
  requestTimeoutMs: number;
  reconnectInitialMs: number;
  reconnectMaxMs: number;
  label: string;
}

type ConnectionState = 'idle' | 'connecting' | 'ready' | 'backoff' | 'failed' | 'closed';

export interface ConnectionEvents {
  onReady(info: { resumed: boolean; capacityBytes: number; maxFrameBytes: number }): void;
  onDown(error: FarmemError): void;
  /** A fatal answer (wrong token, protocol mismatch): no reconnect will help. */
  onFailed(error: FarmemError): void;
}

const RECEIVE_BUFFER_BYTES = 512 * 1024;
const SMALL_FRAME_LIMIT = 64 * 1024;

const PROTOCOL_TO_FARMEM: Record<number, FarmemErrorCode> = {
  [ErrorCode.CAPACITY]: 'FARMEM_CAPACITY',
  [ErrorCode.AUTH_FAILED]: 'FARMEM_AUTH',
  [ErrorCode.NO_SUCH_REGION]: 'FARMEM_NO_SUCH_REGION',
  [ErrorCode.OUT_OF_RANGE]: 'FARMEM_OUT_OF_RANGE',
};

const HINTS: Partial<Record<FarmemErrorCode, string>> = {
  FARMEM_CAPACITY: 'start the node with a larger --capacity, add nodes, or free regions',
  FARMEM_AUTH: 'pass the token the node was started with (--token / { token })',
  FARMEM_PROTOCOL: 'check that client and node run the same farmem version',
};

export function nodeError(code: number, message: string, where: string): FarmemError {
  const farmemCode = PROTOCOL_TO_FARMEM[code] ?? 'FARMEM_PROTOCOL';
  const hint = HINTS[farmemCode];
  return new FarmemError(farmemCode, `${where}: ${message}${hint ? ` — ${hint}` : ''}`, {
    protocolCode: code,
  });
}

const enum Parse {
  Header,
  ReadPrefix,
  ReadData,
  Body,
}

export class Connection {
  state: ConnectionState = 'idle';
  /** Requests written to the socket and not yet answered, in send order. */
  readonly inflight = new Map<number, Request>();
  /** Requests waiting for the connection to be ready. */
  private readonly queue: Request[] = [];
  private socket: net.Socket | null = null;
  private helloId = 0;
  private backoffMs: number;
  private timer: NodeJS.Timeout | null = null;
  private watchdog: NodeJS.Timeout | null = null;
  private connectTimer: NodeJS.Timeout | null = null;
  private corked = false;
  maxFrameBytes = 0;
  /** Why the last connection attempt or connection ended, for error messages. */
  lastError = '';
  /** Set while the client says goodbye: the node may end the connection, and that is no outage. */
  retiring = false;

  // Parser state for the byte stream; see onData.
  private parse = Parse.Header;
  private readonly head = Buffer.alloc(READ_OK_DATA_OFFSET);
  private headFill = 0;
  private frameLength = 0;
  private frameType = 0;
  private frameRequestId = 0;
  private body = Buffer.alloc(SMALL_FRAME_LIMIT);
  private bodyFill = 0;
  private readRequest: Request | null = null;
  private readIndex = 0;
  private readRemaining = 0;
  private readonly carry = Buffer.alloc(PAGE_SIZE);
  private carryFill = 0;
  private readonly receiveBuffer = Buffer.allocUnsafe(RECEIVE_BUFFER_BYTES);
  /** While the rest of a READ_OK's pages are received in place (receiveInto): their view, and how much has arrived. */
  private direct: Buffer | null = null;
  private directFilled = 0;
  /** The buffer the socket reads into next, as last handed to it. */
  private given: Buffer = this.receiveBuffer;

  constructor(
    private readonly options: ConnectionOptions,
    private readonly events: ConnectionEvents,
    private readonly nextId: () => number,
  ) {
    this.backoffMs = options.reconnectInitialMs;
  }

  connect(): void {
    if (this.state === 'closed' || this.state === 'failed') return;
    this.state = 'connecting';
    // Before connect: the new socket asks for its first buffer at once.
    this.resetParser();
    const socket = net.connect({
      host: this.options.host,
      port: this.options.port,
      noDelay: true,
      onread: {
        // Node asks for the next buffer after each read's callback, so it follows the parser's state.
        buffer: () => (this.given = this.direct === null ? this.receiveBuffer : this.direct.subarray(this.directFilled)),
        callback: (bytes: number, buffer: Uint8Array) => {
          if (this.socket !== socket) return true;
          if (this.direct !== null && buffer === this.given && buffer !== this.receiveBuffer) this.directArrived(bytes);
          else this.onData(buffer as Buffer, bytes);
          return true;
        },
      },
    });
    this.socket = socket;
    this.connectTimer = setTimeout(() => {
      socket.destroy(
        new FarmemError('FARMEM_NODE_UNREACHABLE', `${this.options.label}: no answer within ${this.options.connectTimeoutMs} ms`),
      );
    }, this.options.connectTimeoutMs);
    socket.once('connect', () => {
      this.helloId = this.nextId();
      socket.write(
        encodeHello(this.helloId, this.options.namespaceKey, this.options.token, this.options.weight ?? DEFAULT_WEIGHT),
      );
    });
    socket.on('error', (error: Error) => {
      // 'close' follows and decides what happens; the cause is kept for the messages of open().
      this.lastError = error.message;
    });
    socket.once('close', () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.onClosed();
    });
  }

  /** Queues or sends a request. Urgent requests go ahead of everything queued. */
  send(req: Request, urgent = false): void {
    if (this.state === 'failed' || this.state === 'closed') {
      req.onDone(new FarmemError('FARMEM_CLOSED', `${this.options.label}: connection is closed`), req);
      return;
    }
    if (this.state !== 'ready' || this.socket === null) {
      if (urgent) this.queue.unshift(req);
      else this.queue.push(req);
      return;
    }
    this.write(req, urgent);
  }

  get pending(): number {
    return this.inflight.size + this.queue.length;
  }

  oldestSentAt(): number {
    for (const req of this.inflight.values()) return req.sentAt;
    return Infinity;
  }

  close(): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.clearTimers();
    const error = new FarmemError('FARMEM_CLOSED', `${this.options.label}: closed`);
    this.failAll(error);
    this.socket?.destroy();
    this.socket = null;
  }

  /** Urgent requests go to the kernel at once; others are corked and leave together at the end of the tick. */
  private write(req: Request, urgent = false): void {
    const socket = this.socket!;
    if (!urgent && !this.corked) {
      this.corked = true;
      socket.cork();
      process.nextTick(() => {
        this.corked = false;
        socket.uncork();
      });
    }
    req.sentAt = performance.now();
    this.inflight.set(req.id, req);
    socket.write(req.frame);
    if (req.data) socket.write(req.data);
  }

  private onClosed(): void {
    this.clearTimers();
    if (this.state === 'closed' || this.state === 'failed') return;
    if (this.retiring) {
      this.close();
      return;
    }
    const wasReady = this.state === 'ready';
    // Everything in flight goes back to the front of the queue, in order, to be resent.
    const resend = [...this.inflight.values()];
    this.inflight.clear();
    for (const req of resend) {
      if (req.delivered > 0 && req.reencode) req.reencode(req);
    }
    this.queue.unshift(...resend);
    this.state = 'backoff';
    if (wasReady) {
      this.events.onDown(new FarmemError('FARMEM_NODE_UNREACHABLE', `${this.options.label}: connection lost; reconnecting`));
    }
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect();
    }, this.backoffMs);
    this.backoffMs = Math.min(this.backoffMs * 2, this.options.reconnectMaxMs);
  }

  private onReady(frame: Buffer): void {
    const hello = decodeHelloOk(frame);
    if (hello.version !== PROTOCOL_VERSION) {
      this.fail(
        nodeError(
          ErrorCode.BAD_HELLO,
          `answered HELLO of protocol version ${PROTOCOL_VERSION} with version ${hello.version}`,
          this.options.label,
        ),
      );
      return;
    }
    this.state = 'ready';
    this.maxFrameBytes = hello.maxFrameBytes;
    this.backoffMs = this.options.reconnectInitialMs;
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = null;
    this.startWatchdog();
    this.events.onReady({
      resumed: hello.resumed,
      capacityBytes: Number(hello.capacityBytes),
      maxFrameBytes: hello.maxFrameBytes,
    });
    const queued = this.queue.splice(0);
    for (const req of queued) this.write(req);
  }

  /** A silent node: if the oldest request waits past requestTimeoutMs, drop the connection and resend. */
  private startWatchdog(): void {
    const limit = this.options.requestTimeoutMs;
    if (limit <= 0) return;
    this.watchdog = setInterval(
      () => {
        if (performance.now() - this.oldestSentAt() > limit) {
          this.socket?.destroy();
        }
      },
      Math.max(10, limit / 4),
    );
    this.watchdog.unref();
  }

  private clearTimers(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.watchdog) clearInterval(this.watchdog);
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = null;
    this.timer = null;
    this.watchdog = null;
  }

  private failAll(error: FarmemError): void {
    const all = [...this.inflight.values(), ...this.queue];
    this.inflight.clear();
    this.queue.length = 0;
    for (const req of all) req.onDone(error, req);
  }

  private fail(error: FarmemError): void {
    this.state = 'failed';
    this.clearTimers();
    this.socket?.destroy();
    this.socket = null;
    this.events.onFailed(error);
    this.failAll(error);
  }

  private protocolViolation(what: string): void {
    // The node sent something we cannot parse: drop the connection and resend on a fresh one.
    this.socket?.destroy(new FarmemError('FARMEM_PROTOCOL', `${this.options.label}: ${what}`));
  }

  private resetParser(): void {
    this.parse = Parse.Header;
    this.headFill = 0;
    this.bodyFill = 0;
    this.readRequest = null;
    this.carryFill = 0;
    this.direct = null;
    this.directFilled = 0;
  }

  // Runs on the pager thread, from the socket's onread callback; `buf` is valid only during the call.
  private onData(buf: Buffer, length: number): void {
    let off = 0;
    while (off < length) {
      switch (this.parse) {
        case Parse.Header: {
          const take = Math.min(HEADER_BYTES - this.headFill, length - off);
          buf.copy(this.head, this.headFill, off, off + take);
          this.headFill += take;
          off += take;
          if (this.headFill < HEADER_BYTES) return;
          const header = readHeader(this.head, 0);
          this.frameLength = header.frameLength;
          this.frameType = header.type;
          this.frameRequestId = header.requestId;
          if (this.state === 'connecting' && header.type !== FrameType.HelloOk && header.type !== FrameType.Error) {
            this.protocolViolation('the peer does not answer HELLO as a farmem memory node does (is it one?)');
            return;
          }
          if (header.frameLength < HEADER_BYTES || (this.maxFrameBytes > 0 && header.frameLength > this.maxFrameBytes)) {
            this.protocolViolation(`bad frame length ${header.frameLength}`);
            return;
          }
          if (header.type === FrameType.ReadOk) {
            this.parse = Parse.ReadPrefix;
          } else if (header.frameLength - HEADER_BYTES > SMALL_FRAME_LIMIT) {
            this.protocolViolation(`unexpected ${header.frameLength}-byte frame of type ${header.type}`);
            return;
          } else {
            this.parse = Parse.Body;
            this.bodyFill = 0;
            if (header.frameLength === HEADER_BYTES) this.onFrame();
          }
          break;
        }
        case Parse.ReadPrefix: {
          const take = Math.min(READ_OK_DATA_OFFSET - this.headFill, length - off);
          buf.copy(this.head, this.headFill, off, off + take);
          this.headFill += take;
          off += take;
          if (this.headFill < READ_OK_DATA_OFFSET) return;
          const pageCount = this.head.readUInt32LE(HEADER_BYTES + 8);
          const req = this.inflight.get(this.frameRequestId);
          if (!req || req.type !== FrameType.Read || pageCount !== req.pageCount - req.delivered ||
              this.frameLength !== READ_OK_DATA_OFFSET + pageCount * PAGE_SIZE) {
            this.protocolViolation(`READ_OK ${this.frameRequestId} does not match a read in flight`);
            return;
          }
          this.readRequest = req;
          this.readIndex = req.delivered;
          this.readRemaining = pageCount;
          this.carryFill = 0;
          this.parse = Parse.ReadData;
          if (pageCount === 0) this.finishRead();
          break;
        }
        case Parse.ReadData: {
          const req = this.readRequest!;
          if (this.carryFill === 0 && this.direct === null && req.receiveInto !== undefined) {
            const target = req.receiveInto(req, this.readIndex, this.readRemaining);
            if (target !== null) {
              // What already sits in the receive buffer is copied; the socket reads the rest in place.
              this.direct = target;
              this.directFilled = 0;
              const take = Math.min(length - off, target.length);
              buf.copy(target, 0, off, off + take);
              off += take;
              this.directArrived(take);
              break;
            }
          }
          if (this.carryFill > 0) {
            const take = Math.min(PAGE_SIZE - this.carryFill, length - off);
            buf.copy(this.carry, this.carryFill, off, off + take);
            this.carryFill += take;
            off += take;
            if (this.carryFill < PAGE_SIZE) return;
            this.carryFill = 0;
            this.deliver(req, this.carry, 0, 1);
            if (this.readRemaining === 0) {
              this.finishRead();
              break;
            }
          }
          const whole = Math.min(Math.floor((length - off) / PAGE_SIZE), this.readRemaining);
          if (whole > 0) {
            this.deliver(req, buf, off, whole);
            off += whole * PAGE_SIZE;
            if (this.readRemaining === 0) {
              this.finishRead();
              break;
            }
          }
          const rest = Math.min(length - off, PAGE_SIZE);
          if (rest > 0 && rest < PAGE_SIZE) {
            buf.copy(this.carry, 0, off, off + rest);
            this.carryFill = rest;
            off += rest;
          }
          break;
        }
        case Parse.Body: {
          const need = this.frameLength - HEADER_BYTES;
          const take = Math.min(need - this.bodyFill, length - off);
          buf.copy(this.body, this.bodyFill, off, off + take);
          this.bodyFill += take;
          off += take;
          if (this.bodyFill === need) this.onFrame();
          break;
        }
      }
      if (this.socket === null && this.state !== 'ready') return;
    }
  }

  /** `bytes` more of the in-place pages arrived: hands on those now whole, and ends the read once all are in. */
  private directArrived(bytes: number): void {
    const target = this.direct!;
    const before = Math.floor(this.directFilled / PAGE_SIZE);
    this.directFilled += bytes;
    const after = Math.floor(this.directFilled / PAGE_SIZE);
    if (after > before) this.deliver(this.readRequest!, target, before * PAGE_SIZE, after - before);
    // deliver may have ended the connection (and reset the parser).
    if (this.direct !== target || this.directFilled < target.length) return;
    this.direct = null;
    this.directFilled = 0;
    this.finishRead();
  }

  private deliver(req: Request, src: Buffer, srcOffset: number, count: number): void {
    this.readRemaining -= count;
    const index = this.readIndex;
    this.readIndex += count;
    req.delivered += count;
    req.onPages?.(req, index, src, srcOffset, count);
  }

  private finishRead(): void {
    const req = this.readRequest!;
    this.readRequest = null;
    this.parse = Parse.Header;
    this.headFill = 0;
    this.inflight.delete(req.id);
    req.onDone(null, req);
  }

  /** A complete small frame: header in `head`, body in `body[0..bodyFill)`. */
  private onFrame(): void {
    const type = this.frameType;
    const id = this.frameRequestId;
    const frame = Buffer.concat([this.head.subarray(0, HEADER_BYTES), this.body.subarray(0, this.bodyFill)]);
    this.parse = Parse.Header;
    this.headFill = 0;
    this.bodyFill = 0;
    if (type === FrameType.Error) {
      const { code, message } = decodeError(frame);
      const error = nodeError(code, message, this.options.label);
      const req = id === 0 ? undefined : this.inflight.get(id);
      if (id === this.helloId || id === 0 || !req) {
        if (code === ErrorCode.AUTH_FAILED || code === ErrorCode.BAD_HELLO || id === this.helloId) this.fail(error);
        else this.protocolViolation(`connection error: ${message}`);
        return;
      }
      this.inflight.delete(id);
      req.onDone(error, req);
      return;
    }
    if (type === FrameType.HelloOk && id === this.helloId && this.state === 'connecting') {
      this.onReady(frame);
      return;
    }
    const req = this.inflight.get(id);
    if (!req || (req.type | 0x80) !== type) {
      this.protocolViolation(`reply of type 0x${type.toString(16)} to request ${id} that is not in flight`);
      return;
    }
    this.inflight.delete(id);
    req.reply = frame;
    req.onDone(null, req);
  }
}
