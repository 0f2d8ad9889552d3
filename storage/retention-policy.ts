/**
 * Which segments a pool's retention pass deletes or thins: pure, given the pool's
 * policy, its usage, its segments oldest first (across its cameras) and their locks.
 *
 * Rules (issue "storage lifecycle", docs/design/architecture.md invariants 3 and 4):
 * - open segments and segments overlapping an active lock are never chosen;
 * - `cycle`: every segment that ended at or before now − cycleDays goes;
 * - `capacity` and `cycle`: oldest first until usage ≤ capacity;
 * - `none`: nothing is deleted; the pool blocks writing while usage ≥ capacity;
 * - `capacity`/`cycle` block writing only when usage is still over capacity with no
 *   deletable segment left (only locked or open video): locked video is never sacrificed;
 * - thinning: closed, unlocked, not yet thinned mp4 segments that ended at or before
 *   now − thinAfterDays, oldest first, at most `maxThin` per pass.
 */
import type { LockRecord, PoolPolicy } from '../index/records.ts';

export const DAY_MS = 86_400_000;
/** Lock share when a pool does not say. */
export const DEFAULT_MAX_LOCK_SHARE = 0.5;

export interface SegmentCandidate {
  camera: string;
  startMs: number;
  endMs: number;
  bytes: number;
  open: boolean;
  format: 'mp4' | 'ps';
  flags: { iframesOnly?: boolean };
}

export interface RetentionPlan<S extends SegmentCandidate> {
  delete: { seg: S; why: 'cycle' | 'capacity' }[];
  thin: S[];
  /** Usage after the deletions. */
  usageAfter: number;
  /** Writing must stop (and why), or null. */
  blocked: string | null;
}

/** Whether the lock protects [startMs, endMs) at `nowMs` (invariant 3). */
export function lockActive(lock: LockRecord, nowMs: number): boolean {
  return lock.untilMs === null || lock.untilMs > nowMs;
}

export function isLocked(locks: readonly LockRecord[], startMs: number, endMs: number, nowMs: number): boolean {
  return locks.some((l) => lockActive(l, nowMs) && l.startMs < Math.max(endMs, startMs + 1) && l.endMs > startMs);
}

export function planRetention<S extends SegmentCandidate>(
  policy: PoolPolicy,
  usageBytes: number,
  oldestFirst: Iterable<S>,
  locksOf: (camera: string) => readonly LockRecord[],
  nowMs: number,
  maxThin = 20,
): RetentionPlan<S> {
  const plan: RetentionPlan<S> = { delete: [], thin: [], usageAfter: usageBytes, blocked: null };
  const cap = policy.capacityBytes;
  const cycleCutoff = policy.overwrite === 'cycle' && policy.cycleDays !== undefined ? nowMs - policy.cycleDays * DAY_MS : null;
  const thinCutoff = policy.thinAfterDays !== undefined ? nowMs - policy.thinAfterDays * DAY_MS : null;
  const overCap = (): boolean => cap !== null && plan.usageAfter > cap;
  let deletableLeft = false;
  for (const seg of oldestFirst) {
    const deleteMore = policy.overwrite !== 'none' && (overCap() || (cycleCutoff !== null && seg.startMs < cycleCutoff));
    const thinMore = thinCutoff !== null && plan.thin.length < maxThin && seg.startMs < thinCutoff;
    if (!deleteMore && !thinMore) {
      if (!seg.open && !isLocked(locksOf(seg.camera), seg.startMs, seg.endMs, nowMs)) deletableLeft = true;
      break;
    }
    if (seg.open || isLocked(locksOf(seg.camera), seg.startMs, seg.endMs, nowMs)) continue;
    if (deleteMore) {
      const why = cycleCutoff !== null && seg.endMs <= cycleCutoff ? 'cycle' : overCap() ? 'capacity' : null;
      if (why) {
        plan.delete.push({ seg, why });
        plan.usageAfter -= seg.bytes;
        continue;
      }
    }
    if (thinMore && seg.endMs <= thinCutoff && seg.format === 'mp4' && !seg.flags.iframesOnly) plan.thin.push(seg);
    deletableLeft = true;
  }
  if (cap !== null) {
    if (policy.overwrite === 'none' && plan.usageAfter >= cap)
      plan.blocked = `pool ${policy.id} is full (${plan.usageAfter} of ${cap} bytes) and its overwrite mode is none`;
    else if (policy.overwrite !== 'none' && plan.usageAfter > cap && !deletableLeft) {
      plan.blocked = `pool ${policy.id} is full (${plan.usageAfter} of ${cap} bytes) and only locked or open video is left`;
    }
  }
  return plan;
}
