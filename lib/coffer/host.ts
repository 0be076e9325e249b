// The host's side of a coffer: spawns its thread, relays calls, watches its time, and cleans up after it
// however it ends. Everything here runs on the thread that called Coffer.spawn (the host).
import { createHmac, randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { deriveCredential } from '../credentials';
import { FarmemError, invalidOption } from '../errors';
import { moduleUrl } from '../far-memory';
import { checkOptionNames, intOption, parseNodeAddress, sizeOption, stringOption } from '../options';
import { BUILTIN_POLICIES } from '../policies';
import { PAGE_SIZE } from '../protocol';
import { StatsLedger, readRegionStats, type RegionStats } from '../stats';
import { releaseNamespace, type ReleaseResult } from '../transport/release';
import type { CofferBootData } from './bootstrap';
import { CofferError, assertNothingShared, type CofferMessage, type HostMessage, type SerializedError } from './messages';

export interface CofferOptions {
  /** Memory nodes, as 'host:port' or { host, port }. Required. */
  nodes: Array<string | { host: string; port: number }>;
  /** The nodes' token. Default ''. */
  token?: string;
  /** The coffer's V8 old-generation heap limit, in MiB. Default 64. */
  heapMb?: number;
  /** Bytes of local memory the coffer's regions may keep resident: a hard limit. Default '32MiB'. */
  localBudget?: number | string;
  /** Default prefetch policy of the coffer's regions (a built-in name). Default 'readahead'. */
  prefetch?: string;
  /** Longest a call (or the start, or main()) may run before the coffer is killed; 0: no limit. Default 0. */
  timeoutMs?: number;
  /** The coffer's share of each memory node's bandwidth against other coffers. 1..1000. Default 1. */
  weight?: number;
  /** Most bytes the coffer may reserve on each node (its regions' shares); 0: no quota but the node's capacity. Default 0. */
  remoteCapacity?: number | string;
  /** Environment variables the coffer sees (its own copy). Default {}: none of the host's. */
  env?: Record<string, string>;
}

export type CofferExitReason =
  | 'returned' // main() returned
  | 'threw' // an exception no one caught (in main(), a timer, a callback)
  | 'out-of-memory' // its heap limit
  | 'terminated' // terminate() was called
  | 'timeout' // a call, the start or main() ran past timeoutMs
  | 'exited' // it called process.exit()
  | 'pager-died' // the thread serving its far memory ended (a policy module killed it)
  | 'start-failed'; // its far memory could not open, or its module could not load

export interface CofferExit {
  reason: CofferExitReason;
  /** The thread's exit code. */
  code: number;
  /** What it threw, or why it could not start. */
  error?: Error;
  /** What main() returned, for 'returned'. */
  value?: unknown;
  /** Its pages on each node, freed after it ended. */
  released: ReleaseResult[];
}

export interface CofferStats {
  id: number;
  state: 'starting' | 'running' | 'exited';
  calls: { started: number; succeeded: number; failed: number; pending: number };
  heapMb: number;
  localBudget: number;
  /** Its regions' counters, summed (live regions, plus every freed one's). */
  farMemory: RegionStats & { regions: number };
}

const OPTION_NAMES = ['nodes', 'token', 'heapMb', 'localBudget', 'prefetch', 'timeoutMs', 'weight', 'remoteCapacity', 'env'];
// Per host process: credentials derive from it, so a tenant cannot compute another coffer's.
const HOST_SECRET = randomBytes(32);
let nextCofferId = 1;

export class Coffer extends EventEmitter {
  readonly id: number;
  private readonly worker: Worker;
  private readonly options: Required<Omit<CofferOptions, 'nodes' | 'env' | 'localBudget' | 'remoteCapacity'>> & {
    nodes: Array<{ host: string; port: number }>;
    localBudget: number;
    remoteCapacity: number;
  };
  private readonly namespaceKey: Buffer;
  /** What the coffer presents to the nodes instead of their token: good for its namespace only. */
  private readonly credential: string;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer?: NodeJS.Timeout }>();
  private readonly regions = new Map<number, Float64Array>();
  private readonly ledger = new StatsLedger();
  private readonly counts = { started: 0, succeeded: 0, failed: 0 };
  private state: CofferStats['state'] = 'starting';
  private nextCall = 1;
  /** Why the host ended it, when it did. */
  private endedBy: 'terminated' | 'timeout' | null = null;
  private outcome: { reason: CofferExitReason; error?: Error; value?: unknown } | null = null;
  private exitInfo: Promise<CofferExit>;
  private startTimer: NodeJS.Timeout | undefined;

  private constructor(url: string, options: Coffer['options'], env: Record<string, string>) {
    super();
    this.id = nextCofferId++;
    this.options = options;
    this.namespaceKey = createHmac('sha256', HOST_SECRET).update(`coffer ${this.id}`).digest().subarray(0, 16);
    this.credential = deriveCredential(options.token, this.namespaceKey, Math.ceil(options.remoteCapacity / PAGE_SIZE));
    const boot: CofferBootData = {
      url,
      farMemory: {
        nodes: options.nodes.map((n) => `${n.host}:${n.port}`),
        // Never the nodes' token itself: a tenant that finds this can open its own namespace and no other.
        token: this.credential,
        localBudget: options.localBudget,
        prefetch: options.prefetch,
        namespaceKey: this.namespaceKey,
        weight: options.weight,
      },
    };
    this.worker = new Worker(path.join(__dirname, 'bootstrap.js'), {
      workerData: boot,
      env,
      name: `coffer ${this.id}`,
      resourceLimits: { maxOldGenerationSizeMb: options.heapMb },
      // The coffer's output is its own business; the host sees it only if it asks.
      stdout: false,
      stderr: false,
    });
    this.worker.on('message', (message: CofferMessage) => this.onMessage(message));
    let thrown: Error | undefined;
    this.worker.on('error', (error) => (thrown = error));
    this.exitInfo = new Promise((resolve) => {
      this.worker.once('exit', (code) => resolve(this.onExit(code, thrown)));
    });
  }

  /** Starts a coffer running `module` (a file: URL or path) and resolves once it is ready for calls. */
  static async spawn(module: URL | string, options: CofferOptions): Promise<Coffer> {
    const url = moduleUrl('module', module);
    if (options === null || typeof options !== 'object') throw invalidOption('options', options, 'an object with at least { nodes }');
    checkOptionNames(options, OPTION_NAMES, 'Coffer.spawn()');
    if (!Array.isArray(options.nodes) || options.nodes.length === 0) {
      throw invalidOption('nodes', options.nodes, "a non-empty array of 'host:port' strings");
    }
    const prefetch = stringOption('prefetch', options.prefetch, 'readahead');
    if (!(BUILTIN_POLICIES as readonly string[]).includes(prefetch)) {
      throw invalidOption('prefetch', prefetch, `one of ${BUILTIN_POLICIES.map((p) => `'${p}'`).join(', ')} (a tenant may setPrefetch() its own)`);
    }
    const env = options.env ?? {};
    if (env === null || typeof env !== 'object' || Object.values(env).some((v) => typeof v !== 'string')) {
      throw invalidOption('env', env, 'an object of string values');
    }
    const resolved: Coffer['options'] = {
      nodes: options.nodes.map((n) => parseNodeAddress(n)),
      token: stringOption('token', options.token, ''),
      heapMb: intOption('heapMb', options.heapMb, 64, 8, 1 << 20),
      localBudget: sizeOption('localBudget', options.localBudget, 32 * 1024 * 1024, 64 * PAGE_SIZE),
      prefetch,
      timeoutMs: intOption('timeoutMs', options.timeoutMs, 0, 0, 2 ** 31 - 1),
      weight: intOption('weight', options.weight, 1, 1, 1000),
      remoteCapacity: options.remoteCapacity === undefined || options.remoteCapacity === 0 ? 0 : sizeOption('remoteCapacity', options.remoteCapacity, 0, PAGE_SIZE),
    };
    // Every thread of the process must load the same addon build (its registry of mappings is process-wide).
    const addon: Record<string, string> = process.env.FARMEM_NATIVE_ADDON ? { FARMEM_NATIVE_ADDON: process.env.FARMEM_NATIVE_ADDON } : {};
    const coffer = new Coffer(url, resolved, { ...env, ...addon });
    await coffer.started();
    return coffer;
  }

  /**
   * Calls the tenant module's exported function `name` with copies of `args`; resolves with a copy of
   * what it returns (awaited). Rejects with the tenant's error if it throws, with FARMEM_ISOLATION if
   * the arguments or the result would share memory, and with FARMEM_COFFER_EXITED if the coffer ends.
   */
  call(name: string, ...args: unknown[]): Promise<unknown> {
    if (this.state === 'exited') {
      return Promise.reject(new FarmemError('FARMEM_COFFER_EXITED', `coffer ${this.id} has exited (${this.outcome?.reason}): spawn a new one`));
    }
    if (typeof name !== 'string' || name === '') return Promise.reject(invalidOption('name', name, "the name of a function the tenant module exports"));
    try {
      assertNothingShared(args, `the arguments of call('${name}')`);
    } catch (error) {
      return Promise.reject(error);
    }
    const id = this.nextCall++;
    this.counts.started++;
    return new Promise((resolve, reject) => {
      const entry: { resolve: (v: unknown) => void; reject: (e: Error) => void; timer?: NodeJS.Timeout } = { resolve, reject };
      if (this.options.timeoutMs > 0) {
        entry.timer = setTimeout(() => this.kill('timeout'), this.options.timeoutMs);
      }
      this.pending.set(id, entry);
      try {
        this.worker.postMessage({ kind: 'call', id, name, args } satisfies HostMessage);
      } catch (error) {
        // DataCloneError: a function or the like among the arguments.
        this.settle(id, false, undefined, error as Error);
      }
    });
  }

  /** The coffer's counters: calls, and its far memory summed over its regions. Synchronous. */
  stats(): CofferStats {
    const sum = this.ledger.total(this.regions.values());
    return {
      id: this.id,
      state: this.state,
      calls: { ...this.counts, pending: this.pending.size },
      heapMb: this.options.heapMb,
      localBudget: this.options.localBudget,
      farMemory: { ...readRegionStats(sum, PAGE_SIZE), regions: this.regions.size },
    };
  }

  /**
   * Ends the coffer: asks it to close its far memory (freeing its pages on the nodes), and kills it if it
   * has not ended within `graceMs`. Resolves with how it ended. Idempotent.
   */
  async terminate(graceMs = 2000): Promise<CofferExit> {
    if (this.state !== 'exited' && this.endedBy === null) {
      this.endedBy = 'terminated';
      this.worker.postMessage({ kind: 'close' } satisfies HostMessage);
      const timer = setTimeout(() => void this.worker.terminate(), graceMs);
      const info = await this.exitInfo;
      clearTimeout(timer);
      return info;
    }
    return this.exitInfo;
  }

  /** Resolves with how the coffer ended, once it has (and its pages on the nodes were freed). */
  exited(): Promise<CofferExit> {
    return this.exitInfo;
  }

  private async started(): Promise<void> {
    if (this.options.timeoutMs > 0) this.startTimer = setTimeout(() => this.kill('timeout'), this.options.timeoutMs);
    await new Promise<void>((resolve, reject) => {
      const onReady = (): void => {
        this.off('_start-failed', onFailed);
        resolve();
      };
      const onFailed = (error: Error): void => {
        this.off('_ready', onReady);
        reject(error);
      };
      this.once('_ready', onReady);
      this.once('_start-failed', onFailed);
    });
  }

  private kill(reason: 'timeout' | 'terminated'): void {
    if (this.state === 'exited' || this.endedBy !== null) return;
    this.endedBy = reason;
    void this.worker.terminate();
  }

  private onMessage(message: CofferMessage): void {
    switch (message.kind) {
      case 'ready':
        this.state = 'running';
        if (!message.hasMain) clearTimeout(this.startTimer);
        this.emit('_ready');
        break;
      case 'start-failed':
        this.outcome = { reason: 'start-failed', error: new CofferError(message.error, `coffer ${this.id} could not start`) };
        break;
      case 'result':
        if (message.ok) this.settle(message.id, true, message.value);
        else this.settle(message.id, false, undefined, new CofferError(message.error, `coffer ${this.id}`));
        break;
      case 'region':
        this.regions.set(message.id, new Float64Array(message.stats));
        break;
      case 'region-freed': {
        const stats = this.regions.get(message.id);
        if (!stats) break;
        this.ledger.retire(stats);
        this.regions.delete(message.id);
        break;
      }
      case 'main-returned':
        this.outcome = { reason: 'returned', value: message.value };
        break;
      case 'policy-error':
        this.emit('policy-error', message.detail);
        break;
      case 'pager-died':
        this.outcome = { reason: 'pager-died', error: new CofferError(message.error, `coffer ${this.id}'s far memory failed`) };
        break;
    }
  }

  private settle(id: number, ok: boolean, value: unknown, error?: Error): void {
    const entry = this.pending.get(id);
    if (!entry) return;
    this.pending.delete(id);
    clearTimeout(entry.timer);
    if (ok) {
      this.counts.succeeded++;
      entry.resolve(value);
    } else {
      this.counts.failed++;
      entry.reject(error!);
    }
  }

  private async onExit(code: number, thrown: Error | undefined): Promise<CofferExit> {
    this.state = 'exited';
    clearTimeout(this.startTimer);
    let reason: CofferExitReason;
    let error: Error | undefined = this.outcome?.error;
    if (this.endedBy === 'timeout') reason = 'timeout';
    else if (thrown && (thrown as { code?: string }).code === 'ERR_WORKER_OUT_OF_MEMORY') reason = 'out-of-memory';
    else if (thrown) {
      reason = 'threw';
      error = thrown;
    } else if (this.outcome) reason = this.outcome.reason;
    else if (this.endedBy === 'terminated') reason = 'terminated';
    else reason = 'exited';
    if (reason === 'out-of-memory') error = thrown;
    const failure = new FarmemError('FARMEM_COFFER_EXITED', `coffer ${this.id} ended (${reason}) before answering`, { reason });
    for (const id of [...this.pending.keys()]) this.settle(id, false, undefined, failure);
    this.emit('_start-failed', error ?? failure);
    // Whatever the coffer managed to free itself, free its namespace on every node now: a killed coffer
    // said no goodbye, and its pages would otherwise wait for the nodes' orphan timeout.
    const released = await Promise.all(
      this.options.nodes.map((node) => releaseNamespace(node, this.credential, this.namespaceKey, 5000)),
    );
    // Its regions are gone with it: their resident, dirty and in-flight gauges no longer count.
    for (const stats of this.regions.values()) this.ledger.retire(stats);
    this.regions.clear();
    const info: CofferExit = { reason, code, released };
    if (error) info.error = error;
    if (reason === 'returned') info.value = this.outcome?.value;
    this.emit('exit', info);
    return info;
  }
}
