// The local frame table: one entry per page of the local budget. A page holds a frame while it is
// Fetching, Clean or Dirty. The CLOCK hand sweeps it for victims. Runs on the pager thread.

export class FrameTable {
  /** Region id owning the frame, or -1 when free. */
  readonly region: Int32Array;
  readonly page: Int32Array;
  /** Second-chance bit: set when a fault touches the page, cleared by the passing hand. */
  readonly referenced: Uint8Array;
  private readonly freeStack: Int32Array;
  private freeTop: number;
  hand = 0;

  constructor(readonly size: number) {
    this.region = new Int32Array(size).fill(-1);
    this.page = new Int32Array(size);
    this.referenced = new Uint8Array(size);
    this.freeStack = new Int32Array(size);
    for (let i = 0; i < size; i++) this.freeStack[i] = size - 1 - i;
    this.freeTop = size;
  }

  get free(): number {
    return this.freeTop;
  }

  get used(): number {
    return this.size - this.freeTop;
  }

  /** Takes a free frame for (region, page); -1 when none is free. */
  take(region: number, page: number, referenced: boolean): number {
    if (this.freeTop === 0) return -1;
    const frame = this.freeStack[--this.freeTop];
    this.region[frame] = region;
    this.page[frame] = page;
    this.referenced[frame] = referenced ? 1 : 0;
    return frame;
  }

  release(frame: number): void {
    if (this.region[frame] < 0) throw new Error(`frame ${frame} released twice (a pager bug)`);
    this.region[frame] = -1;
    this.freeStack[this.freeTop++] = frame;
  }
}
