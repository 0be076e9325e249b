import { invalidOption } from '../errors';
import { checkOptionNames } from '../options';
import { ReadaheadPolicy, type ReadaheadOptions } from './readahead';
import type { PrefetchPolicy } from './types';

export type { FaultEvent, PrefetchPolicy, PrefetchRanges } from './types';
export { ReadaheadPolicy, type ReadaheadOptions } from './readahead';

export class NoPrefetch implements PrefetchPolicy {
  readonly name = 'none';
  onFault(): null {
    return null;
  }
}

export const BUILTIN_POLICIES = ['none', 'readahead'] as const;
export type BuiltinPolicy = (typeof BUILTIN_POLICIES)[number];

export function createPolicy(name: string, options: Record<string, unknown> = {}): PrefetchPolicy {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw invalidOption('prefetchOptions', options, 'an object of policy options');
  }
  switch (name) {
    case 'none':
      checkOptionNames(options, [], "the 'none' policy");
      return new NoPrefetch();
    case 'readahead':
      return new ReadaheadPolicy(options as ReadaheadOptions);
    default:
      throw invalidOption('prefetch', name, `one of ${BUILTIN_POLICIES.map((p) => `'${p}'`).join(', ')}`);
  }
}
