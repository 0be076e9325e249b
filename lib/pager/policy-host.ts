// Loading and calling the code that decides prefetches: built-in policies, policy modules and guides.
// Runs on the pager thread. Built-in policies are ours and are called directly; code from a module is the
// application's and is called under a deadline (native callWithDeadline), so an endless loop in it costs
// one region its policy, not every faulting thread its progress.
import { FarmemError } from '../errors';
import { importModule } from '../import-module';
import type { NativeBinding } from '../native';
import { type FaultEvent, type PolicyContext, type PolicyFactory, type PrefetchAnswer, type PrefetchPolicy } from '../policies/types';
import { createPolicy } from '../policies';
import { PAGE_SIZE } from '../protocol';

/** How the main thread names a policy to the pager (a module by its file: URL). */
export type PolicySpec =
  | { kind: 'builtin'; name: string; options: Record<string, unknown> }
  | { kind: 'module'; url: string; options: Record<string, unknown>; timeBudgetMs: number };

/** A guide module's function: the bytes of a page just fetched in, out: byte offsets in the region to fetch. */
export type GuideFunction = (page: Uint8Array, info: GuideInfo) => Iterable<number> | null | undefined | void;

export interface GuideInfo {
  /** Byte offset of this page in the region. */
  offset: number;
  /** Bytes in the region. */
  regionSize: number;
  /** Hops from the page the application faulted on (0 for that page). */
  hop: number;
}

export interface GuideSpec {
  url: string;
  options: Record<string, unknown>;
  /** Most hops a chain of guided fetches runs ahead of the application's last known position. */
  depth: number;
  timeBudgetMs: number;
}

export interface ActivePolicy {
  impl: PrefetchPolicy;
  /** What the stats call it: the built-in name or the module's file. */
  name: string;
  /** Built-ins run directly; module code runs under a deadline. */
  trusted: boolean;
  timeBudgetMs: number;
}

export interface ActiveGuide {
  fn: GuideFunction;
  name: string;
  depth: number;
  timeBudgetMs: number;
}

/** Returned by a guarded call that ran past its deadline. */
export const TIMED_OUT: unique symbol = Symbol('timed out');


async function importFrom(url: string, what: string): Promise<Record<string, unknown>> {
  try {
    return await importModule(url);
  } catch (error) {
    throw new FarmemError('FARMEM_POLICY_LOAD_FAILED', `cannot load the ${what} module ${url}: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

/** How long a module's factory (createPolicy, createGuide) may run. Its top-level code runs unguarded, in import(). */
const FACTORY_BUDGET_MS = 1000;

/** Calls a module's factory under FACTORY_BUDGET_MS; throws FARMEM_POLICY_LOAD_FAILED if it throws or overruns. */
function callFactory(native: NativeBinding, url: string, factory: Function, ...args: unknown[]): unknown {
  let result: unknown;
  try {
    result = native.callWithDeadline(FACTORY_BUDGET_MS, TIMED_OUT, factory, undefined, ...args);
  } catch (error) {
    if (error instanceof FarmemError) throw error;
    throw new FarmemError('FARMEM_POLICY_LOAD_FAILED', `the factory of ${url} threw: ${String(error)}`, { cause: error });
  }
  if (result === TIMED_OUT) {
    throw new FarmemError('FARMEM_POLICY_LOAD_FAILED', `the factory of ${url} ran for more than ${FACTORY_BUDGET_MS} ms and was stopped`);
  }
  return result;
}

/** Loads a policy for a region of `regionPages` pages, served from `localPages` pages of local memory. */
export async function loadPolicy(native: NativeBinding, spec: PolicySpec, regionPages: number, localPages: number): Promise<ActivePolicy> {
  const context: PolicyContext = { regionPages, pageSize: PAGE_SIZE, localPages };
  if (spec.kind === 'builtin') {
    return { impl: createPolicy(spec.name, spec.options, context), name: spec.name, trusted: true, timeBudgetMs: Infinity };
  }
  const exports = await importFrom(spec.url, 'policy');
  const factory = (typeof exports.createPolicy === 'function' ? exports.createPolicy : exports.default) as PolicyFactory | undefined;
  if (typeof factory !== 'function') {
    throw new FarmemError(
      'FARMEM_POLICY_LOAD_FAILED',
      `the policy module ${spec.url} exports no factory: export createPolicy(options, context) or a default function`,
    );
  }
  const impl = callFactory(native, spec.url, factory, spec.options, context) as PrefetchPolicy;
  if (impl === null || typeof impl !== 'object' || typeof impl.onFault !== 'function') {
    throw new FarmemError(
      'FARMEM_POLICY_LOAD_FAILED',
      `the factory of ${spec.url} returned ${impl === null ? 'null' : typeof impl}, not an object with an onFault(event) method`,
    );
  }
  const name = typeof impl.name === 'string' && impl.name !== '' ? impl.name : spec.url;
  return { impl, name, trusted: false, timeBudgetMs: spec.timeBudgetMs };
}

export async function loadGuide(native: NativeBinding, spec: GuideSpec): Promise<ActiveGuide> {
  const exports = await importFrom(spec.url, 'guide');
  let fn: unknown = typeof exports.guide === 'function' ? exports.guide : exports.default;
  if (typeof exports.createGuide === 'function') {
    // A guide with options: createGuide(options) returns the function.
    fn = callFactory(native, spec.url, exports.createGuide as Function, spec.options);
  }
  if (typeof fn !== 'function') {
    throw new FarmemError(
      'FARMEM_POLICY_LOAD_FAILED',
      `the guide module ${spec.url} exports no guide: export guide(page, info), a default function, or createGuide(options)`,
    );
  }
  return { fn: fn as GuideFunction, name: spec.url, depth: spec.depth, timeBudgetMs: spec.timeBudgetMs };
}

/** Calls the policy: its answer, TIMED_OUT, or throws what it threw. */
export function callPolicy(native: NativeBinding, policy: ActivePolicy, event: FaultEvent): PrefetchAnswer | typeof TIMED_OUT {
  if (policy.trusted) return policy.impl.onFault(event);
  return native.callWithDeadline(policy.timeBudgetMs, TIMED_OUT, policy.impl.onFault, policy.impl, event) as PrefetchAnswer | typeof TIMED_OUT;
}

export function callGuide(native: NativeBinding, guide: ActiveGuide, page: Uint8Array, info: GuideInfo): unknown {
  return native.callWithDeadline(guide.timeBudgetMs, TIMED_OUT, guide.fn, undefined, page, info);
}

/** Byte offsets a guide returned, as page indexes in [0, regionPages); throws FARMEM_POLICY_ERROR on garbage. */
export function guidePages(answer: unknown, regionSize: number, limit: number): number[] {
  if (answer === null || answer === undefined) return [];
  if (typeof (answer as Iterable<number>)[Symbol.iterator] !== 'function' || typeof answer === 'string') {
    throw new FarmemError('FARMEM_POLICY_ERROR', `a guide must return an array of byte offsets (or nothing), got ${typeof answer}`);
  }
  const pages: number[] = [];
  for (const offset of answer as Iterable<unknown>) {
    if (typeof offset !== 'number' || !Number.isInteger(offset) || offset < 0 || offset >= regionSize) {
      throw new FarmemError(
        'FARMEM_POLICY_ERROR',
        `a guide returned ${String(offset)}: offsets must be integers in [0, ${regionSize}), the region's size`,
      );
    }
    if (pages.length === limit) {
      throw new FarmemError('FARMEM_POLICY_ERROR', `a guide returned more than ${limit} offsets for one page`);
    }
    pages.push(Math.floor(offset / PAGE_SIZE));
  }
  return pages;
}
