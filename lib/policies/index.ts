import { invalidOption } from '../errors';
import { checkOptionNames } from '../options';
import { HistoryPolicy, type HistoryOptions } from './history';
import { LeapPolicy, type LeapOptions } from './leap';
import { ReadaheadPolicy, type ReadaheadOptions } from './readahead';
import { StridePolicy, type StrideOptions } from './stride';
import type { PolicyContext, PrefetchPolicy } from './types';

export type { FaultEvent, PolicyContext, PolicyFactory, PrefetchAnswer, PrefetchPolicy, PrefetchRanges } from './types';
export { MAX_ANSWER_PAGES } from './types';
export { checkAnswer } from './check-answer';
export { ReadaheadPolicy, type ReadaheadOptions } from './readahead';
export { StridePolicy, type StrideOptions } from './stride';
export { LeapPolicy, type LeapOptions } from './leap';
export { HistoryPolicy, type HistoryOptions } from './history';

export class NoPrefetch implements PrefetchPolicy {
  readonly name = 'none';
  onFault(): null {
    return null;
  }
}

export const BUILTIN_POLICIES = ['none', 'readahead', 'stride', 'leap', 'history'] as const;
export type BuiltinPolicy = (typeof BUILTIN_POLICIES)[number];

/**
 * A built-in policy by name. `context` tells it the region it serves; without one it assumes no local
 * budget (the readahead window is then bounded by its options alone).
 */
export function createPolicy(name: string, options: Record<string, unknown> = {}, context?: Partial<PolicyContext>): PrefetchPolicy {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw invalidOption('prefetchOptions', options, 'an object of policy options');
  }
  switch (name) {
    case 'none':
      checkOptionNames(options, [], "the 'none' policy");
      return new NoPrefetch();
    case 'readahead':
      return new ReadaheadPolicy(options as ReadaheadOptions, context);
    case 'stride':
      return new StridePolicy(options as StrideOptions);
    case 'leap':
      return new LeapPolicy(options as LeapOptions);
    case 'history':
      return new HistoryPolicy(options as HistoryOptions);
    default:
      throw invalidOption('prefetch', name, `one of ${BUILTIN_POLICIES.map((p) => `'${p}'`).join(', ')}`);
  }
}
