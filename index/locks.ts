/**
 * Lock ranges of a camera (invariant 3). Stored locks of a camera never overlap: a new
 * lock absorbs every lock it overlaps or touches (the union of the ranges, the later
 * expiry, "forever" winning); an unlock of a range cuts it out of the locks it hits,
 * splitting one when the range is inside it. Pure functions (mergeLock, cutLocks) that
 * decide a change, and the store (`locks`, key [camera, startMs]) that commits it whole.
 */
import { randomUUID } from 'node:crypto';
import type { LockRecord } from './records.ts';
import type { Tables } from './tables.ts';

export class LockStore {
  constructor(private readonly t: Tables) {}

  /** A camera's locks (active or expired but not yet released), in time order. */
  ofCamera(camera: string): LockRecord[] {
    return [...this.t.locks.getRange({ start: [camera, -Infinity], end: [camera, Infinity] })].map((e) => e.value);
  }

  all(): LockRecord[] {
    return [...this.t.locks.getRange({})].map((e) => e.value);
  }

  byId(id: string): LockRecord | undefined {
    return this.all().find((l) => l.id === id);
  }

  /** Applies a change in one commit: removals first (keys may be reused by puts). */
  async apply(change: LockChange): Promise<void> {
    await this.t.commit(
      this.t.locks.transaction(() => {
        for (const l of change.remove) void this.t.locks.remove([l.camera, l.startMs]);
        for (const l of change.put) void this.t.locks.put([l.camera, l.startMs], l);
      }),
    );
  }
}

export interface LockChange {
  put: LockRecord[];
  remove: LockRecord[];
}

/** The change that adds [startMs, endMs) until `untilMs` to a camera's `existing` locks. */
export function mergeLock(
  existing: readonly LockRecord[],
  add: { camera: string; startMs: number; endMs: number; untilMs: number | null },
  nowMs: number,
): LockChange & { lock: LockRecord } {
  let startMs = add.startMs;
  let endMs = add.endMs;
  let untilMs = add.untilMs;
  const absorbed: LockRecord[] = [];
  for (const l of existing) {
    if (l.startMs <= endMs && l.endMs >= startMs) {
      absorbed.push(l);
      startMs = Math.min(startMs, l.startMs);
      endMs = Math.max(endMs, l.endMs);
      untilMs = untilMs === null || l.untilMs === null ? null : Math.max(untilMs, l.untilMs);
    }
  }
  // Absorbing may reach further locks only through ranges already merged: one more sweep settles it.
  for (const l of existing) {
    if (!absorbed.includes(l) && l.startMs <= endMs && l.endMs >= startMs) {
      absorbed.push(l);
      startMs = Math.min(startMs, l.startMs);
      endMs = Math.max(endMs, l.endMs);
      untilMs = untilMs === null || l.untilMs === null ? null : Math.max(untilMs, l.untilMs);
    }
  }
  const keepId = absorbed.length === 1 && absorbed[0]!.startMs === startMs ? absorbed[0]!.id : randomUUID();
  const lock: LockRecord = { id: keepId, camera: add.camera, startMs, endMs, untilMs, createdMs: nowMs };
  return { lock, put: [lock], remove: absorbed };
}

/** The change that releases [fromMs, toMs) of a camera's locks; empty when it hits none. */
export function cutLocks(existing: readonly LockRecord[], fromMs: number, toMs: number): LockChange {
  const change: LockChange = { put: [], remove: [] };
  for (const l of existing) {
    if (l.endMs <= fromMs || l.startMs >= toMs) continue;
    change.remove.push(l);
    if (l.startMs < fromMs) change.put.push({ ...l, endMs: fromMs });
    if (l.endMs > toMs) change.put.push({ ...l, id: l.startMs < fromMs ? randomUUID() : l.id, startMs: toMs });
  }
  return change;
}
