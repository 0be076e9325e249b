import type { NativeBinding } from '../native';

/**
 * MADV_DONTNEED of the pages one eviction pass lets go, made in one call at the end of the pass. Each
 * madvise that unmaps pages flushes the TLB of every CPU the process runs on; with the application on the
 * other CPU that is an IPI, which costs tens of µs in a VM, so dropping scattered pages one range at a time
 * cost more than fetching them. Outside begin()/end() a drop is made at once.
 *
 * Pager thread only. A pass is synchronous, so no fault is served and no page lands between a page's
 * drop being queued and made.
 */
export class DropBatch {
  private list = new Float64Array(256);
  private count = 0;
  private depth = 0;

  constructor(private readonly native: Pick<NativeBinding, 'dropRange' | 'dropRanges'>) {}

  begin(): void {
    this.depth++;
  }

  /** Drops what was queued once the outermost pass ends. */
  end(): void {
    if (--this.depth > 0 || this.count === 0) return;
    const count = this.count;
    this.count = 0;
    this.native.dropRanges(this.list, count);
  }

  drop(address: number, length: number): void {
    if (this.depth === 0) {
      this.native.dropRange(address, length);
      return;
    }
    const last = 2 * (this.count - 1);
    if (this.count > 0 && this.list[last] + this.list[last + 1] === address) {
      this.list[last + 1] += length;
      return;
    }
    if (2 * this.count === this.list.length) {
      const grown = new Float64Array(2 * this.list.length);
      grown.set(this.list);
      this.list = grown;
    }
    this.list[2 * this.count] = address;
    this.list[2 * this.count + 1] = length;
    this.count++;
  }
}
