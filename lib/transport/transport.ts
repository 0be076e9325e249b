// The client side of the protocol: pages striped over several nodes, two connections per node
// (urgent: demand faults; bulk: prefetch and write-back) so a demand read never waits behind
// megabytes of prefetch replies, as QEMU's postcopy-preempt channel does. Runs on the pager thread.
import { FarmemError, invalidOption } from '../errors';
import {
  DEFAULT_WEIGHT,
  FrameType,
  MAX_WEIGHT,
  encodeAlloc,
  encodeBye,
  encodeFree,
  encodeRead,
  encodeWriteHeader,
} from '../protocol';
import { Connection, type Request } from './connection';

export interface NodeAddress {
  host: string;
  port: number;
}

export interface TransportOptions {
  nodes: NodeAddress[];
  token: string;
  namespaceKey: Buffer;
  /** This client's share of each node against other clients with work queued there (HELLO weight, 1..1000). Default 1. */
  weight?: number;
  stripePages: number;
  connectTimeoutMs: number;
  requestTimeoutMs: number;
  reconnectInitialMs: number;
  reconnectMaxMs: number;
}

export interface TransportEvents {
  onNodeDown(node: string, error: FarmemError): void;
  onNodeUp(node: string): void;
  /** The node answered a reconnect without our namespace: it restarted and its pages are gone. */
  onNodeLost(node: string, error: FarmemError): void;
}

export type PagesCallback = (index: number, src: Buffer, srcOffset: number, count: number) => void;
export type DoneCallback = (error: FarmemError | null) => void;

class NodeLink {
  readonly urgent: Connection;
  readonly bulk: Connection;
  readonly label: string;
  hasRegions = false;
  lost = false;
  up = false;

  constructor(address: NodeAddress, options: TransportOptions, events: TransportEvents, nextId: () => number, onFatal: (e: FarmemError) => void) {
    this.label = `${address.host}:${address.port}`;
    const make = (role: string): Connection =>
      new Connection(
        {
          host: address.host,
          port: address.port,
          token: options.token,
          namespaceKey: options.namespaceKey,
          weight: options.weight,
          connectTimeoutMs: options.connectTimeoutMs,
          requestTimeoutMs: options.requestTimeoutMs,
          reconnectInitialMs: options.reconnectInitialMs,
          reconnectMaxMs: options.reconnectMaxMs,
          label: `memory node ${this.label} (${role} connection)`,
        },
        {
          onReady: ({ resumed }) => {
            if (!resumed && this.hasRegions && !this.lost) {
              this.lost = true;
              events.onNodeLost(
                this.label,
                new FarmemError(
                  'FARMEM_NODE_LOST',
                  `memory node ${this.label} came back without this client's pages (it restarted); ` +
                    `faults on pages it held cannot be served — free the affected regions`,
                ),
              );
            }
            if (this.ready && !this.up) {
              this.up = true;
              events.onNodeUp(this.label);
            }
          },
          onDown: (error) => {
            if (this.up) {
              this.up = false;
              events.onNodeDown(this.label, error);
            }
          },
          onFailed: onFatal,
        },
        nextId,
      );
    this.urgent = make('urgent');
    this.bulk = make('bulk');
  }

  get ready(): boolean {
    return this.urgent.state === 'ready' && this.bulk.state === 'ready';
  }
}

export class Transport {
  private readonly links: NodeLink[];
  private lastId = 0;
  private fatal: FarmemError | null = null;
  private fatalListener: ((e: FarmemError) => void) | null = null;

  constructor(
    private readonly options: TransportOptions,
    events: TransportEvents,
  ) {
    const weight = options.weight ?? DEFAULT_WEIGHT;
    if (!Number.isInteger(weight) || weight < 1 || weight > MAX_WEIGHT) {
      throw invalidOption('weight', options.weight, `an integer from 1 to ${MAX_WEIGHT}`);
    }
    const nextId = (): number => {
      this.lastId = this.lastId >= 0xfffffffe ? 1 : this.lastId + 1;
      return this.lastId;
    };
    const onFatal = (error: FarmemError): void => {
      this.fatal ??= error;
      this.fatalListener?.(error);
    };
    this.links = options.nodes.map((address) => new NodeLink(address, options, events, nextId, onFatal));
    this.nextId = nextId;
  }

  private readonly nextId: () => number;

  get nodeCount(): number {
    return this.links.length;
  }

  /** Where a request must end so that it stays on one node: stripe boundaries, or none with one node. */
  get splitPages(): number {
    return this.links.length === 1 ? Infinity : this.options.stripePages;
  }

  /** Connects every node; rejects with the first fatal answer or when a node is not ready in time. */
  open(): Promise<void> {
    for (const link of this.links) {
      link.urgent.connect();
      link.bulk.connect();
    }
    return new Promise((resolve, reject) => {
      const started = performance.now();
      const check = (): void => {
        if (this.fatal) {
          this.fatalListener = null;
          reject(this.fatal);
          return;
        }
        const waiting = this.links.filter((l) => !l.ready);
        if (waiting.length === 0) {
          this.fatalListener = null;
          for (const link of this.links) link.up = true;
          resolve();
          return;
        }
        if (performance.now() - started > this.options.connectTimeoutMs) {
          this.fatalListener = null;
          const causes = waiting
            .map((l) => l.urgent.lastError || l.bulk.lastError)
            .filter((cause) => cause !== '');
          reject(
            new FarmemError(
              'FARMEM_NODE_UNREACHABLE',
              `cannot reach memory node${waiting.length > 1 ? 's' : ''} ${waiting.map((l) => l.label).join(', ')} ` +
                `within ${this.options.connectTimeoutMs} ms${causes.length > 0 ? ` (${causes.join('; ')})` : ''}` +
                ` — is \`farmem node\` running there, and is the address right?`,
            ),
          );
          return;
        }
        setTimeout(check, 5);
      };
      this.fatalListener = () => check();
      check();
    });
  }

  /** Which node holds `page`: stripes of stripePages pages, round robin. */
  nodeOf(page: number): number {
    return Math.floor(page / this.options.stripePages) % this.links.length;
  }

  /** Pages of a `pages`-page region that land on node `k`. */
  sharePages(pages: number, k: number): number {
    const stripe = this.options.stripePages;
    const n = this.links.length;
    const fullStripes = Math.floor(pages / stripe);
    const rest = pages % stripe;
    let share = (Math.floor(fullStripes / n) + (k < fullStripes % n ? 1 : 0)) * stripe;
    if (rest > 0 && k === fullStripes % n) share += rest;
    return share;
  }

  /** Reserves a region on every node; returns the per-node region ids. On failure frees what it got. */
  async alloc(pages: number): Promise<number[]> {
    const results = await Promise.allSettled(
      this.links.map((link, k) =>
        this.small(link.bulk, encodeAlloc, FrameType.Alloc, [pages, this.sharePages(pages, k)]).then((reply) => {
          link.hasRegions = true;
          return reply.readUInt32LE(12);
        }),
      ),
    );
    const failed = results.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
    if (failed) {
      const got = results.map((r) => (r.status === 'fulfilled' ? r.value : 0));
      await this.free(got).catch(() => undefined);
      throw failed.reason;
    }
    return results.map((r) => (r as PromiseFulfilledResult<number>).value);
  }

  async free(ids: number[]): Promise<void> {
    await Promise.all(
      ids.map((id, k) => (id === 0 ? undefined : this.small(this.links[k].bulk, encodeFree, FrameType.Free, [id]))),
    );
  }

  /**
   * Reads pages [firstPage, firstPage+count) of one stripe; pages stream to onPages as they arrive.
   * `receiveInto`, if given, may name where pages are received in place (Request.receiveInto).
   */
  read(
    node: number,
    regionId: number,
    firstPage: number,
    count: number,
    urgent: boolean,
    onPages: PagesCallback,
    onDone: DoneCallback,
    receiveInto?: (index: number, count: number) => Buffer | null,
  ): void {
    const link = this.links[node];
    const id = this.nextId();
    const req: Request = {
      id,
      type: FrameType.Read,
      frame: encodeRead(id, regionId, firstPage, count),
      firstPage,
      pageCount: count,
      delivered: 0,
      sentAt: 0,
      reencode: (r) => {
        r.frame = encodeRead(r.id, regionId, r.firstPage + r.delivered, r.pageCount - r.delivered);
      },
      onPages: (_r, index, src, srcOffset, n) => onPages(index, src, srcOffset, n),
      receiveInto: receiveInto === undefined ? undefined : (_r, index, n) => receiveInto(index, n),
      onDone: (error) => onDone(error),
    };
    (urgent ? link.urgent : link.bulk).send(req, urgent);
  }

  /** Writes `count` pages from `data` (whole pages) to one stripe. */
  write(node: number, regionId: number, firstPage: number, count: number, data: Uint8Array, onDone: DoneCallback): void {
    const id = this.nextId();
    const req: Request = {
      id,
      type: FrameType.Write,
      frame: encodeWriteHeader(id, regionId, firstPage, count),
      data,
      firstPage,
      pageCount: count,
      delivered: 0,
      sentAt: 0,
      onDone: (error) => onDone(error),
    };
    this.links[node].bulk.send(req);
  }

  nodeStates(): Array<{ node: string; up: boolean; lost: boolean; inflight: number }> {
    return this.links.map((l) => ({
      node: l.label,
      up: l.ready,
      lost: l.lost,
      inflight: l.urgent.pending + l.bulk.pending,
    }));
  }

  /** Says goodbye to every reachable node (freeing this client's namespace there), then closes. */
  async close(graceMs = 1000): Promise<void> {
    for (const link of this.links) {
      link.urgent.retiring = true;
      link.bulk.retiring = true;
    }
    await Promise.race([
      Promise.allSettled(
        this.links.filter((l) => l.ready).map((l) => this.small(l.bulk, (id: number) => encodeBye(id), FrameType.Bye, [])),
      ),
      new Promise((resolve) => setTimeout(resolve, graceMs).unref()),
    ]);
    for (const link of this.links) {
      link.urgent.close();
      link.bulk.close();
    }
  }

  private small(
    conn: Connection,
    encode: (id: number, ...args: number[]) => Buffer,
    type: number,
    args: number[],
  ): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const id = this.nextId();
      conn.send({
        id,
        type,
        frame: encode(id, ...args),
        firstPage: 0,
        pageCount: 0,
        delivered: 0,
        sentAt: 0,
        onDone: (error, req) => (error ? reject(error) : resolve(req.reply!)),
      });
    });
  }
}
