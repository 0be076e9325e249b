// Typed errors. Every error farmem raises is a FarmemError with a stable `code`;
// syscall failures also carry `errno` (positive) and `syscall`.

export type FarmemErrorCode =
  | 'FARMEM_INVALID_OPTION' // a bad option or argument
  | 'FARMEM_UNSUPPORTED_PLATFORM' // not Linux, or the addon could not load
  | 'FARMEM_UFFD_UNAVAILABLE' // userfaultfd refused (privileges, sysctl, kernel)
  | 'FARMEM_FEATURE_MISSING' // the running kernel lacks a needed uffd feature
  | 'FARMEM_SYSCALL' // a syscall failed; see errno and syscall
  | 'FARMEM_CLOSED' // the FarMemory, region or node was closed
  | 'FARMEM_REGION_FREED' // the region was freed
  | 'FARMEM_NODE_UNREACHABLE' // a memory node cannot be reached
  | 'FARMEM_NODE_LOST' // a memory node restarted and lost this client's pages
  | 'FARMEM_CAPACITY' // a memory node is full
  | 'FARMEM_AUTH' // wrong token
  | 'FARMEM_PROTOCOL' // a malformed frame, wrong magic or version
  | 'FARMEM_NO_SUCH_REGION' // a region id the node does not know in this namespace
  | 'FARMEM_OUT_OF_RANGE' // pages past the end of a region
  | 'FARMEM_PAGER_DIED' // the pager thread exited unexpectedly
  | 'FARMEM_ILLEGAL_TRANSITION' // a pager bug: a page state change that cannot happen (page-table.ts)
  | 'FARMEM_POLICY_ERROR' // a prefetch policy or guide threw, answered garbage or overran its time budget
  | 'FARMEM_POLICY_LOAD_FAILED' // a policy or guide module could not be loaded or built
  | 'FARMEM_BAD_TRACE' // a file that is not a well-formed farmem fault trace
  | 'FARMEM_TRACE_FAILED' // writing a fault trace failed
  | 'FARMEM_ISOLATION' // something would cross a coffer's boundary that must not (shared memory, a port, a worker)
  | 'FARMEM_COFFER_EXITED' // the coffer ended before (or while) answering
  | 'FARMEM_BENCH_DEPS_MISSING' // `farmem bench` outside a clone, or without its dev dependencies
  | 'FARMEM_BENCH_NO_RESULTS'; // `farmem bench --report` found no results file it can read

export interface FarmemErrorDetails {
  errno?: number;
  syscall?: string;
  cause?: unknown;
  [key: string]: unknown;
}

export class FarmemError extends Error {
  readonly code: FarmemErrorCode;
  readonly errno?: number;
  readonly syscall?: string;

  constructor(code: FarmemErrorCode, message: string, details: FarmemErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'FarmemError';
    this.code = code;
    const { cause: _cause, ...rest } = details;
    Object.assign(this, rest);
  }

  /** Plain-object form, for crossing a thread boundary (structured clone drops the class). */
  toJSON(): Record<string, unknown> {
    return { ...(this as unknown as Record<string, unknown>), name: this.name, code: this.code, message: this.message };
  }

  /** Rebuilds an error sent across a thread as toJSON(); anything else becomes FARMEM_PAGER_DIED. */
  static fromJSON(value: unknown): FarmemError {
    if (value instanceof FarmemError) return value;
    if (value && typeof value === 'object' && typeof (value as { code?: unknown }).code === 'string') {
      const { code, message, name: _name, stack: _stack, ...rest } = value as Record<string, unknown>;
      return new FarmemError(code as FarmemErrorCode, String(message), rest);
    }
    return new FarmemError('FARMEM_PAGER_DIED', `pager failed: ${String(value)}`, { cause: value });
  }
}

export function invalidOption(name: string, got: unknown, expected: string): FarmemError {
  let shown: string;
  try {
    shown = typeof got === 'string' ? JSON.stringify(got) : String(got);
  } catch {
    shown = typeof got;
  }
  return new FarmemError('FARMEM_INVALID_OPTION', `option ${name}: expected ${expected}, got ${shown}`, {
    option: name,
  });
}
