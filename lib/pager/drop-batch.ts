import type { NativeBinding } from '../native';

/**
 * MADV_DONTNEED of the pages one eviction pass lets go, made in one call at the end of the pass. Each
 * madvise that unmaps pages flushes the TLB of every CPU the process runs on; with the application on the
 * other CPU that is an IPI, so dropping scattered pages one range at a time cost about 50 µs a page in this
 * project's VM (bench/reference/scattered-drop). Every drop belongs to a pass: begin() ... end().
 *
 * Pager thread only. A pass is synchronous, so no fault is served and no page lands between a page's
 * drop being queued and made.
 */
export class DropBatch {
  private list = new Float64Array(256);
  private count = 0;
  private depth = 0;

  constructor(private readonly native: Pick<NativeBinding, 'dropRanges'>) {}

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
    // Queued outside a pass, it would stay mapped while the page table says it is gone.
    if (this.depth === 0) throw new Error('DropBatch.drop() outside begin()/end() (a pager bug: please report it)');
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
