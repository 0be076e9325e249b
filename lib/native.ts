// Loads the native addon (build/Release/farmem_native.node) and gives it types.
// The addon is mechanism only: mmap, userfaultfd ioctls, madvise, one poll handle.
// Errors it raises become FarmemError here; TypeError and RangeError (a bad
// argument, a bug in the caller) pass through unchanged.
import { constants as bufferConstants } from 'node:buffer';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FarmemError } from './errors';

export interface Capabilities {
  /** false off Linux. */
  platformSupported: boolean;
  /** 'kernel': faults taken inside system calls are served too; 'user-only': the uffd was created with
   *  UFFD_USER_MODE_ONLY, so a system call touching a missing page of a region fails with EFAULT. */
  mode: 'kernel' | 'user-only' | 'unavailable';
  /** How the fd is obtained. */
  source: 'syscall' | 'dev-userfaultfd' | 'none';
  /** 0, or why mode is 'unavailable'. */
  errno: number;
  /** '' or a message naming the fix (the sysctl, /dev/userfaultfd access). Set for 'user-only' too. */
  reason: string;
  /** Feature bits the running kernel offers (UFFDIO_API with features = 0). */
  apiFeatures: number;
  /** UFFD_FEATURE_PAGEFAULT_FLAG_WP offered and a trial MODE_WP register on an anonymous page worked. */
  writeProtect: boolean;
  wpUnpopulated: boolean;
  wpAsync: boolean;
  poison: boolean;
  move: boolean;
  threadId: boolean;
  /** The ioctls bitmask (1 << _UFFDIO_*) a trial UFFDIO_REGISTER returned. */
  registerIoctls: number;
  pageSize: number;
  /** uname -r */
  kernelRelease: string;
  /** The mode in /sys/kernel/mm/transparent_hugepage/enabled: 'always', 'madvise' or 'never'; '' if absent. */
  transparentHugepages: string;
}

export interface UffdOptions {
  /** Forces UFFD_USER_MODE_ONLY even where kernel-mode faults are allowed. */
  userModeOnly: boolean;
  /** Enables UFFD_FEATURE_PAGEFAULT_FLAG_WP (FARMEM_FEATURE_MISSING when the kernel lacks it). */
  writeProtect: boolean;
  /** Filled with [address, flags, tid] per fault before each onFaults call; length / 3 faults per batch. */
  events: Float64Array;
  /** Called on the constructing thread with the number of faults written to events. */
  onFaults: (count: number) => void;
}

export interface UffdHandle {
  /** The userfaultfd, or -1 once closed. */
  readonly fd: number;
  /** UFFDIO_REGISTER with MODE_MISSING (| MODE_WP); returns the ioctls bitmask. */
  register(address: number, length: number, writeProtect: boolean): number;
  /** UFFDIO_UNREGISTER: waiters wake and then see plain anonymous memory. */
  unregister(address: number, length: number): void;
  /** UFFDIO_COPY of src bytes [srcOffset, srcOffset + length) to dst. flags: COPY_DONTWAKE | COPY_WP.
   *  Pages already present are stepped over (and their waiters woken, unless COPY_DONTWAKE);
   *  returns how many bytes were already present. */
  copy(dst: number, src: ArrayBufferView, srcOffset: number, length: number, flags: number): number;
  /** UFFDIO_ZEROPAGE; same rules and result as copy. */
  zeropage(dst: number, length: number, dontWake: boolean): number;
  /** UFFDIO_WRITEPROTECT. dontWake matters only when protect is false (protecting never wakes). */
  writeProtect(address: number, length: number, protect: boolean, dontWake: boolean): void;
  /** UFFDIO_WAKE */
  wake(address: number, length: number): void;
  /**
   * Lands src bytes [srcOffset, srcOffset + length) at dst write-protected, without waking, as
   * copy(COPY_WP | COPY_DONTWAKE) does, but by UFFDIO_MOVE from a staging area: one transparent huge
   * page for an aligned 2 MiB, where the kernel has one. length: at most 2 MiB. A moved page is
   * writable until it is protected, so each is compared with src afterwards: written[i] = 1 where page
   * i differs (a thread wrote it in between; treat it as dirty). Returns the bytes moved; less than
   * length when the kernel stopped part way: copy() the rest, which steps over any page the kernel moved
   * without counting (protected and compared like the others). written[i] is set for every page of
   * length, 0 where nothing is mapped. Throws when nothing was mapped. Needs capabilities().move.
   */
  moveIn(dst: number, src: ArrayBufferView, srcOffset: number, length: number, written: Uint8Array): number;
  /**
   * Lands an aligned 2 MiB block of zeros at dst, writable and without waking, as one transparent huge
   * page (a fresh one the kernel cleared, moved in by UFFDIO_MOVE). For never-written pages a writer is
   * about to fill: the caller counts them dirty. Returns the bytes mapped: 2 MiB, or 0 where the kernel
   * gave no huge page (nothing mapped), or, should the kernel stop part way, the length of the mapped
   * start. Needs capabilities().move.
   */
  zeroBlockIn(dst: number): number;
  /** Stops the poll handle and closes the fd, which wakes every blocked faulter. Idempotent. */
  close(): void;
}

export interface NativeBinding {
  probe(): Capabilities;
  /** Construct on the thread whose event loop serves the faults (the pager worker). An open Uffd keeps
   *  that loop alive and is not garbage-collected: close() it. */
  Uffd: new (options: UffdOptions) => UffdHandle;
  /** mmap(PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE), MADV_NOHUGEPAGE; aligned to
   *  2 MiB when size is at least that, so that moveIn can land whole huge pages. */
  mapCreate(size: number): { address: number; buffer: ArrayBuffer };
  /** A memory node's page storage: an ArrayBuffer over a fresh anonymous mapping that transparent huge
   *  pages may back (MADV_HUGEPAGE), so that its first write faults once a 2 MiB page. Unmapped when
   *  collected; not a region (no mapAttach, no registry). */
  storageCreate(size: number): ArrayBuffer;
  /** Another ArrayBuffer over a live mapping (any thread). FARMEM_REGION_FREED once released. */
  mapAttach(address: number): ArrayBuffer;
  /** Detaches buffer (if given) and drops the registry's reference; the memory is unmapped when the
   *  last ArrayBuffer over it is collected. Releasing twice is harmless. */
  mapRelease(address: number, buffer?: ArrayBuffer): void;
  /** madvise(MADV_DONTNEED): the next access faults MISSING again. Works on a released mapping that a
   *  buffer still holds; returns false (dropping nothing) once the mapping is unmapped. */
  dropRange(address: number, length: number): boolean;
  /** dropRange over the first `count` (address, length) pairs of `list`, as one batch: process_madvise
   *  where the kernel allows it (6.13; from 6.16 one TLB flush for all), else madvise range by range.
   *  Ranges no mapping holds any more are skipped; returns how many were dropped. */
  dropRanges(list: Float64Array, count: number): number;
  /** memcpy out of a mapping (released or not, while still mapped; else FARMEM_REGION_FREED). The pages
   *  must be resident, or the caller faults (and, on the pager thread, waits for itself). */
  readOut(address: number, length: number, dst: Uint8Array, dstOffset: number): void;
  /** fn.apply(thisArg, args), or timedOutValue once fn has run past timeoutMs (interrupted as vm's
   *  `timeout` interrupts a script; stopped within about twice timeoutMs). What fn throws propagates. */
  callWithDeadline(timeoutMs: number, timedOutValue: unknown, fn: Function, thisArg: unknown, ...args: unknown[]): unknown;
  /** Irreversibly restricts this thread: mapAttach, mapRelease, dropRange(s), readOut and Uffd.register
   *  reach only mappings this thread (or thread `alsoReaches`) created, and new Uffd() is refused
   *  (FARMEM_ISOLATION). A coffer's bootstrap calls it, and so does its pager thread once open. */
  restrictEnv(alsoReaches?: number): void;
  /** This thread's never-reused addon id, for another thread's restrictEnv(alsoReaches). */
  envId(): number;
  /** Process-wide: mappings made by mapCreate and not released, and mappings still mapped. For leak checks. */
  mappingCounts(): { live: number; mapped: number };
  /** Tests only: the next moveIn (any thread) flips the byte at dst + offset between its move and its
   *  write protection, as a racing writer could. -1 disarms. */
  setMoveWindowWriteForTest(offset: number): void;
  /** Tests only: the next UFFDIO_MOVE of moveIn or zeroBlockIn (any thread) moves only its first `bytes`
   *  and stops, counting them, or (counted false) counting nothing though they moved. -1 disarms. */
  setPartialMoveForTest(bytes: number, counted: boolean): void;
}

/** copy() flags. */
export const COPY_DONTWAKE = 1;
export const COPY_WP = 2;
/** UFFD_PAGEFAULT_FLAG_* as they appear in events[i * 3 + 1]. */
export const FAULT_FLAG_WRITE = 1;
export const FAULT_FLAG_WP = 2;

/** What the addon throws: an Error with a farmem code, or a syscall error (code = errno name). */
interface RawError extends Error {
  code?: unknown;
  errno?: unknown;
  syscall?: unknown;
}

function toFarmemError(error: unknown): unknown {
  if (!(error instanceof Error) || error instanceof TypeError || error instanceof RangeError) return error;
  const raw = error as RawError;
  if (typeof raw.code === 'string' && raw.code.startsWith('FARMEM_')) {
    return new FarmemError(raw.code as FarmemError['code'], raw.message, { cause: error });
  }
  if (typeof raw.errno === 'number' && typeof raw.syscall === 'string') {
    return new FarmemError('FARMEM_SYSCALL', raw.message, { errno: raw.errno, syscall: raw.syscall, cause: error });
  }
  return error;
}

/** Failures to obtain a userfaultfd at all are FARMEM_UFFD_UNAVAILABLE, not FARMEM_SYSCALL. */
const UNAVAILABLE_ERRNOS = new Set([1 /* EPERM */, 13 /* EACCES */, 38 /* ENOSYS */]);
const OPEN_SYSCALLS = new Set(['userfaultfd', 'open(/dev/userfaultfd)', 'ioctl(USERFAULTFD_IOC_NEW)']);

function toCreateError(error: unknown): unknown {
  const converted = toFarmemError(error);
  if (
    converted instanceof FarmemError &&
    converted.code === 'FARMEM_SYSCALL' &&
    UNAVAILABLE_ERRNOS.has(converted.errno ?? 0) &&
    OPEN_SYSCALLS.has(converted.syscall ?? '')
  ) {
    return new FarmemError('FARMEM_UFFD_UNAVAILABLE', converted.message, {
      errno: converted.errno,
      syscall: converted.syscall,
      cause: error,
    });
  }
  return converted;
}

/** The largest ArrayBuffer this Node.js makes (V8's limit: 2^32 bytes on Node 20, more on later versions). */
export const MAX_BUFFER_BYTES = bufferConstants.MAX_LENGTH;

function wrap(raw: NativeBinding): NativeBinding {
  const RawUffd = raw.Uffd;

  // Every call goes straight to the native object; only a throw costs anything.
  class Uffd implements UffdHandle {
    readonly #handle: UffdHandle;

    constructor(options: UffdOptions) {
      try {
        this.#handle = new RawUffd(options);
      } catch (error) {
        throw toCreateError(error);
      }
    }

    get fd(): number {
      return this.#handle.fd;
    }

    register(address: number, length: number, writeProtect: boolean): number {
      try {
        return this.#handle.register(address, length, writeProtect);
      } catch (error) {
        throw toFarmemError(error);
      }
    }

    unregister(address: number, length: number): void {
      try {
        this.#handle.unregister(address, length);
      } catch (error) {
        throw toFarmemError(error);
      }
    }

    copy(dst: number, src: ArrayBufferView, srcOffset: number, length: number, flags: number): number {
      try {
        return this.#handle.copy(dst, src, srcOffset, length, flags);
      } catch (error) {
        throw toFarmemError(error);
      }
    }

    zeropage(dst: number, length: number, dontWake: boolean): number {
      try {
        return this.#handle.zeropage(dst, length, dontWake);
      } catch (error) {
        throw toFarmemError(error);
      }
    }

    writeProtect(address: number, length: number, protect: boolean, dontWake: boolean): void {
      try {
        this.#handle.writeProtect(address, length, protect, dontWake);
      } catch (error) {
        throw toFarmemError(error);
      }
    }

    wake(address: number, length: number): void {
      try {
        this.#handle.wake(address, length);
      } catch (error) {
        throw toFarmemError(error);
      }
    }

    moveIn(dst: number, src: ArrayBufferView, srcOffset: number, length: number, written: Uint8Array): number {
      try {
        return this.#handle.moveIn(dst, src, srcOffset, length, written);
      } catch (error) {
        throw toFarmemError(error);
      }
    }

    zeroBlockIn(dst: number): number {
      try {
        return this.#handle.zeroBlockIn(dst);
      } catch (error) {
        throw toFarmemError(error);
      }
    }

    close(): void {
      this.#handle.close();
    }
  }

  function guarded<A extends unknown[], R>(fn: (...args: A) => R): (...args: A) => R {
    return (...args: A): R => {
      try {
        return fn(...args);
      } catch (error) {
        throw toFarmemError(error);
      }
    };
  }

  return {
    probe: guarded(raw.probe),
    Uffd,
    mapCreate: (size: number) => {
      // V8 crashes (it does not throw) on an external ArrayBuffer past its limit: 4 GiB on Node 20.
      if (size > MAX_BUFFER_BYTES) {
        throw new RangeError(`mapCreate: ${size} bytes is more than one ArrayBuffer can hold here (${MAX_BUFFER_BYTES})`);
      }
      return guarded(raw.mapCreate)(size);
    },
    storageCreate: (size: number) => {
      if (size > MAX_BUFFER_BYTES) {
        throw new RangeError(`storageCreate: ${size} bytes is more than one ArrayBuffer can hold here (${MAX_BUFFER_BYTES})`);
      }
      return guarded(raw.storageCreate)(size);
    },
    mapAttach: guarded(raw.mapAttach),
    mapRelease: guarded(raw.mapRelease),
    dropRange: guarded(raw.dropRange),
    dropRanges: guarded(raw.dropRanges),
    readOut: guarded(raw.readOut),
    // Not guarded: what the called function throws is the caller's to see unchanged.
    callWithDeadline: raw.callWithDeadline,
    restrictEnv: guarded(raw.restrictEnv),
    envId: guarded(raw.envId),
    mappingCounts: guarded(raw.mappingCounts),
    setMoveWindowWriteForTest: raw.setMoveWindowWriteForTest,
    setPartialMoveForTest: raw.setPartialMoveForTest,
  };
}

/** Where the addon lies: from dist/cjs/native.js two levels up, from lib/native.ts one. */
function addonPath(): string {
  // FARMEM_NATIVE_ADDON=/abs/path/farmem_native.node loads that build instead (the sanitizer run uses it).
  if (process.env.FARMEM_NATIVE_ADDON) return process.env.FARMEM_NATIVE_ADDON;
  const candidates = [
    path.join(__dirname, '..', '..', 'build', 'Release', 'farmem_native.node'),
    path.join(__dirname, '..', 'build', 'Release', 'farmem_native.node'),
  ];
  return candidates.find((candidate) => fs.existsSync(candidate)) ?? candidates[0];
}

let loaded: NativeBinding | undefined;
let loadError: { message: string; cause: unknown } | undefined;

/** The addon, loaded on first use. Throws FARMEM_UNSUPPORTED_PLATFORM off Linux or when it cannot load. */
export function loadNative(): NativeBinding {
  if (loaded) return loaded;
  if (!loadError) {
    if (process.platform !== 'linux') {
      loadError = {
        message:
          `farmem's pager needs Linux userfaultfd and this is ${process.platform}; ` +
          'run regions and pagers on Linux (a memory node runs anywhere)',
        cause: undefined,
      };
    } else {
      const file = addonPath();
      try {
        loaded = wrap(require(file) as NativeBinding);
        return loaded;
      } catch (error) {
        loadError = {
          message:
            `cannot load farmem's native addon ${file}: ${(error as Error)?.message ?? String(error)}. ` +
            'Rebuild it with `npx node-gyp rebuild` in the farmem package (needs g++, make, python3 and ' +
            'the Node.js headers), and make sure it was built for this Node.js version',
          cause: error,
        };
      }
    }
  }
  throw new FarmemError('FARMEM_UNSUPPORTED_PLATFORM', loadError.message, { cause: loadError.cause });
}

/** loadNative().probe() */
export function capabilities(): Capabilities {
  return loadNative().probe();
}
