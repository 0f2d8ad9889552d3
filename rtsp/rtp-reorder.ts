/**
 * Puts RTP packets that arrive over UDP back in sequence order. A packet ahead of the
 * next expected one waits while fewer than `window` packets wait and the oldest has
 * waited less than `maxWaitMs`; then the hole is given up (counted lost, the next packet
 * flagged as after a gap). A packet behind (its place given up, or repeated) is dropped;
 * `window` of them in a row mean the camera restarted its numbering: followed.
 * An item pushed as null (a packet without payload) takes its sequence number and is
 * not emitted.
 */

/** UDP: packets held to put a reordered stream back in sequence, at most this many … */
export const REORDER_PACKETS = 64;
/** … and this long, before a hole is given up as lost. */
export const REORDER_MS = 200;

export class RtpReorder<T> {
  lost = 0;
  private expect = -1;
  private gap = false;
  private behind = 0;
  private readonly pending = new Map<number, { item: T | null; at: number }>();
  constructor(
    private readonly emit: (item: T, gap: boolean) => void,
    private readonly window = REORDER_PACKETS,
    private readonly maxWaitMs = REORDER_MS,
  ) {}

  push(seq: number, item: T | null, now: number): void {
    if (this.expect < 0) this.expect = seq;
    const ahead = (seq - this.expect + 0x10000) & 0xffff;
    if (ahead >= 0x8000) {
      if (++this.behind < this.window) return;
      this.restart(true);
      this.expect = seq;
    }
    this.behind = 0;
    if (!this.pending.has(seq)) this.pending.set(seq, { item, at: now });
    this.drain(now);
  }

  /** Gives up holes that waited too long (call now and then: a hole may end a burst). */
  drain(now: number): void {
    for (;;) {
      const p = this.pending.get(this.expect);
      if (p) {
        this.pending.delete(this.expect);
        this.expect = (this.expect + 1) & 0xffff;
        if (p.item !== null) {
          this.emit(p.item, this.gap);
          this.gap = false;
        }
        continue;
      }
      if (this.pending.size === 0) return;
      let oldest = Infinity;
      let skip = 0x10000;
      for (const [s, q] of this.pending) {
        oldest = Math.min(oldest, q.at);
        skip = Math.min(skip, (s - this.expect + 0x10000) & 0xffff);
      }
      if (this.pending.size < this.window && now - oldest < this.maxWaitMs) return;
      this.lost += skip;
      this.expect = (this.expect + skip) & 0xffff;
      this.gap = true;
    }
  }

  /** Forgets what waits and where the sequence was (packets dropped meanwhile); `gap`: flag the next. */
  restart(gap: boolean): void {
    this.pending.clear();
    this.expect = -1;
    this.behind = 0;
    if (gap) this.gap = true;
  }
}
