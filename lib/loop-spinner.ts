// Keeps a thread's event loop polling instead of sleeping for a short while after work that an answer
// or a next request will soon follow. A chain of setImmediate callbacks makes libuv poll with a zero
// timeout, so what lands is handled at once. In a VM an idle CPU takes tens of µs to wake
// (docs/benchmark-log.md, "Polling"), more than a page's round trip on loopback. Pure JS: the memory node uses it too.
// Runs on the thread that owns it (the pager thread, or the memory node's thread).

export class LoopSpinner {
  private until = 0;
  private spinning = false;
  private stopped = false;

  /** micros 0 turns it off. */
  constructor(private readonly micros: number) {}

  /** Polls for `micros` from now (extending a spin already running). */
  poke(): void {
    if (this.micros <= 0 || this.stopped) return;
    this.until = performance.now() + this.micros / 1000;
    if (this.spinning) return;
    this.spinning = true;
    const tick = (): void => {
      if (!this.stopped && performance.now() < this.until) setImmediate(tick);
      else this.spinning = false;
    };
    setImmediate(tick);
  }

  /** Whether the loop is polling now. */
  get active(): boolean {
    return this.spinning;
  }

  /** Ends the spin running now at its next tick; a later poke starts a new one. */
  settle(): void {
    this.until = 0;
  }

  /** Ends any spin at its next tick; later pokes do nothing. */
  stop(): void {
    this.stopped = true;
  }
}
