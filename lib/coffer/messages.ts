// What crosses between the host and a coffer, and the check that keeps shared memory from crossing.
// Used on both sides: the host thread checks what it sends, the coffer thread checks what it sends back.
import { MessagePort } from 'node:worker_threads';
import { FarmemError } from '../errors';

/** Host → coffer. */
export type HostMessage =
  | { kind: 'call'; id: number; name: string; args: unknown[] }
  | { kind: 'close' };

/** Coffer → host. Only the bootstrap posts these; tenant code has no port to post on. */
export type CofferMessage =
  | { kind: 'ready'; exports: string[]; hasMain: boolean }
  | { kind: 'start-failed'; error: SerializedError }
  | { kind: 'result'; id: number; ok: true; value: unknown }
  | { kind: 'result'; id: number; ok: false; error: SerializedError }
  | { kind: 'region'; id: number; stats: SharedArrayBuffer }
  | { kind: 'region-freed'; id: number }
  | { kind: 'main-returned'; value: unknown }
  | { kind: 'policy-error'; detail: Record<string, unknown> }
  | { kind: 'pager-died'; error: SerializedError };

export interface SerializedError {
  name: string;
  message: string;
  code?: string;
  stack?: string;
}

export function serializeError(error: unknown): SerializedError {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return { name: error.name, message: error.message, code: typeof code === 'string' ? code : undefined, stack: error.stack };
  }
  return { name: 'Error', message: `a non-Error value was thrown: ${safeString(error)}` };
}

/** A tenant's error on the host side: a copy, with the tenant's stack kept as text. */
export class CofferError extends Error {
  readonly code: string | undefined;
  readonly tenantStack: string | undefined;
  constructor(serialized: SerializedError, where: string) {
    super(`${where}: ${serialized.message}`);
    this.name = serialized.name === 'Error' ? 'CofferError' : serialized.name;
    this.code = serialized.code;
    this.tenantStack = serialized.stack;
  }
}

function safeString(value: unknown): string {
  try {
    return String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

/**
 * Throws FARMEM_ISOLATION if `value` holds anything that would share memory or a channel across the
 * coffer boundary: a SharedArrayBuffer (or a view of one), a MessagePort, or one of `regionBuffers`
 * (or a view of one). Everything else crosses as a structured-clone copy.
 */
export function assertNothingShared(value: unknown, what: string, regionBuffers?: WeakSet<ArrayBuffer>): void {
  const seen = new Set<object>();
  // Depth-first with an explicit stack: a deeply nested value must not overflow this thread's stack.
  const stack: Array<[unknown, string]> = [[value, 'value']];
  while (stack.length > 0) {
    const [v, path] = stack.pop()!;
    if (v === null || (typeof v !== 'object' && typeof v !== 'function')) continue;
    const object = v as object;
    if (seen.has(object)) continue;
    seen.add(object);
    if (object instanceof SharedArrayBuffer) refuse(path, 'a SharedArrayBuffer', 'share memory');
    if (object instanceof MessagePort) refuse(path, 'a MessagePort', 'open a channel');
    if (ArrayBuffer.isView(object)) {
      const buffer = (object as ArrayBufferView).buffer;
      if (buffer instanceof SharedArrayBuffer) refuse(path, 'a view of a SharedArrayBuffer', 'share memory');
      if (regionBuffers?.has(buffer as ArrayBuffer)) refuse(path, "a view of a far-memory region's buffer", 'hand out the region');
      continue;
    }
    if (object instanceof ArrayBuffer) {
      if (regionBuffers?.has(object)) refuse(path, "a far-memory region's buffer", 'hand out the region');
      continue;
    }
    if (object instanceof Map) {
      let i = 0;
      for (const [k, item] of object) {
        stack.push([k, `${path}.<key ${i}>`], [item, `${path}.<value ${i}>`]);
        i++;
      }
      continue;
    }
    if (object instanceof Set) {
      let i = 0;
      for (const item of object) stack.push([item, `${path}.<item ${i++}>`]);
      continue;
    }
    for (const key of Object.keys(object)) stack.push([(object as Record<string, unknown>)[key], `${path}.${key}`]);
  }

  function refuse(path: string, thing: string, wouldDo: string): never {
    throw new FarmemError(
      'FARMEM_ISOLATION',
      `${what} holds ${thing} at ${path}: that would ${wouldDo} across the coffer boundary, so it is refused. ` +
        `Messages between a coffer and its host are copies: send the bytes (e.g. a copy made with slice()), not the memory`,
    );
  }
}
