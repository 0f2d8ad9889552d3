/**
 * Lock ranges of a camera (invariant 3). Stored locks of a camera never overlap: a new
 * lock absorbs every lock it overlaps or touches (the union of the ranges, the later
 * expiry, "forever" winning); an unlock of a range cuts it out of the locks it hits,
 * splitting one when the range is inside it. Pure functions plus small index reads.
 */
import { randomUUID } from 'node:crypto';
import type { RecorderIndex } from './db.ts';
import type { LockRecord } from './records.ts';

export function locksOf(index: RecorderIndex, camera: string): LockRecord[] {
  return [...index.locks.getRange({ start: [camera, -Infinity], end: [camera, Infinity] })].map((e) => e.value);
}

export function allLocks(index: RecorderIndex): LockRecord[] {
  return [...index.locks.getRange({})].map((e) => e.value);
}

export interface LockChange {
  put: LockRecord[];
  remove: LockRecord[];
}

/** The change that adds [startMs, endMs) until `untilMs` to a camera's `existing` locks. */
export function mergeLock(existing: readonly LockRecord[], add: { camera: string; startMs: number; endMs: number; untilMs: number | null }, nowMs: number): LockChange & { lock: LockRecord } {
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

/** Applies a change in one commit batch: removals first (keys may be reused by puts). */
export async function applyLockChange(index: RecorderIndex, change: LockChange): Promise<void> {
  const writes: Promise<boolean>[] = [];
  for (const l of change.remove) writes.push(index.locks.remove([l.camera, l.startMs]));
  for (const l of change.put) writes.push(index.locks.put([l.camera, l.startMs], l));
  await Promise.all(writes);
}
