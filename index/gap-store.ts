/**
 * The gap ledger's records (`gaps`, key [camera, startMs]; index/gap-ledger.ts decides
 * what they become). A camera's records never overlap: the pure ledger functions keep
 * it so, and a change of several records is one commit (`replace`).
 */
import type { GapRecord } from './records.ts';
import { first, type Tables } from './tables.ts';

export class GapStore {
  constructor(private readonly t: Tables) {}

  put(gap: GapRecord): Promise<boolean> {
    return this.t.commit(this.t.gaps.put([gap.camera, gap.startMs], gap));
  }

  get(camera: string, startMs: number): GapRecord | undefined {
    return this.t.gaps.get([camera, startMs]);
  }

  /** Replaces the records starting at `removeStartMs` with `put`, in one commit. */
  async replace(camera: string, removeStartMs: readonly number[], put: readonly GapRecord[]): Promise<void> {
    await this.t.commit(
      this.t.gaps.transaction(() => {
        for (const s of removeStartMs) void this.t.gaps.remove([camera, s]);
        for (const g of put) void this.t.gaps.put([g.camera, g.startMs], g);
      }),
    );
  }

  /** Removes every record of a camera in one commit (camera purge). */
  async removeCamera(camera: string): Promise<number> {
    let n = 0;
    await this.t.commit(
      this.t.gaps.transaction(() => {
        for (const key of this.t.gaps.getKeys({ start: [camera, -Infinity], end: [camera, Infinity] })) {
          void this.t.gaps.remove(key);
          n++;
        }
      }),
    );
    return n;
  }

  /** Every record of a camera, in time order. */
  ofCamera(camera: string): GapRecord[] {
    return [...this.t.gaps.getRange({ start: [camera, -Infinity], end: [camera, Infinity] })].map((e) => e.value);
  }

  /** Records of `camera` overlapping [fromMs, toMs); an open one (endMs null) reaches `nowMs`. */
  inRange(camera: string, fromMs: number, toMs: number, nowMs: number): GapRecord[] {
    return this.overlapping(camera, fromMs, toMs, (g) => g.endMs ?? nowMs);
  }

  /** Closed records of `camera` overlapping [fromMs, toMs). */
  closedInRange(camera: string, fromMs: number, toMs: number): GapRecord[] {
    return this.overlapping(camera, fromMs, toMs, (g) => g.endMs ?? Infinity).filter((g) => g.endMs !== null);
  }

  /**
   * A keyed range read of the records overlapping [fromMs, toMs), in time order: the
   * records that start inside it, and before them those that start earlier and reach
   * into it. A camera's records never overlap, so that is the one record that starts
   * last before `fromMs`; the walk back goes on while records reach `fromMs` and
   * stops at the first that does not (one more read), which keeps it exact should two
   * records ever overlap.
   */
  private overlapping(camera: string, fromMs: number, toMs: number, endOf: (g: GapRecord) => number): GapRecord[] {
    const before: GapRecord[] = [];
    for (const { value } of this.t.gaps.getRange({ start: [camera, fromMs], end: [camera, -Infinity], reverse: true })) {
      if (value.startMs >= fromMs) continue;
      if (endOf(value) <= fromMs) break;
      before.push(value);
    }
    const out = before.reverse();
    for (const { value } of this.t.gaps.getRange({ start: [camera, fromMs], end: [camera, toMs] })) {
      if (endOf(value) > fromMs) out.push(value);
    }
    return out;
  }

  /** Records of `camera` still open (endMs null). */
  open(camera: string): GapRecord[] {
    return this.ofCamera(camera).filter((g) => g.endMs === null);
  }

  /** The camera's record that starts last. */
  last(camera: string): GapRecord | undefined {
    const e = first(this.t.gaps, { start: [camera, Number.MAX_SAFE_INTEGER], end: [camera, -Infinity], reverse: true });
    return e && e.value.camera === camera ? e.value : undefined;
  }
}
