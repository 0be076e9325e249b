// `farmem/coffer`: what a tenant module sees of farmem. Inside a coffer, `farMemory` allocates far memory
// within the coffer's own budget; nothing else of farmem is offered. Runs on the coffer's thread.
import { FarmemError } from '../errors';
import type { AllocateOptions, FarMemoryStats, Region } from '../far-memory';

export interface CofferFarMemory {
  /** Allocates a region within this coffer's local budget, on its own node namespace. */
  allocate(size: number | string, options?: AllocateOptions): Promise<Region>;
  /** This coffer's far-memory counters, summed over its regions. */
  stats(): FarMemoryStats;
  /** Bytes of local memory this coffer's regions may keep resident. */
  readonly localBudget: number;
}

/** Where the coffer's bootstrap leaves the facade: a copy of farmem loaded from another path finds it too. */
export const COFFER_FACADE = Symbol.for('farmem.coffer.farMemory');

function facade(): CofferFarMemory {
  const installed = (globalThis as Record<symbol, unknown>)[COFFER_FACADE] as CofferFarMemory | undefined;
  if (!installed) {
    throw new FarmemError(
      'FARMEM_ISOLATION',
      "farmem/coffer works only inside a coffer (started by Coffer.spawn); elsewhere use FarMemory.open() from 'farmem'",
    );
  }
  return installed;
}

export const farMemory: CofferFarMemory = Object.freeze({
  allocate: (size: number | string, options?: AllocateOptions) => facade().allocate(size, options),
  stats: () => facade().stats(),
  get localBudget() {
    return facade().localBudget;
  },
});
