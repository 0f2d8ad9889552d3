/**
 * The gap ledger: every range of a camera that should have been recorded and was not,
 * with its back-fill state (records.ts GapState). Records of one camera never overlap;
 * key [camera, startMs].
 *
 *   open ──camera back──► pending ──job──► fetching ──► filled
 *                            ▲                 │  └───► partial (some filled; retried)
 *                            └──── retry ──────┘  └───► unavailable (gave up: alarm)
 *
 * After an attempt, a record is split where the index now has video: covered pieces
 * become `filled` records (kept, so search shows what was back-filled), uncovered ones
 * stay to be retried (`partial` if anything was filled, else `pending`) until the
 * attempts run out (`unavailable`). The pure functions here decide; the gap store
 * (index/gap-store.ts `replace`) writes their result in one commit.
 */
import type { GapRecord, GapState, SchedulePlan, SegmentRecord } from './records.ts';
import { nextChangeMs, plannedAt } from '../schedule/plan.ts';

export interface Interval {
  fromMs: number;
  toMs: number;
}

/** `window` minus `taken` (any order, may overlap), pieces shorter than `minMs` dropped. */
export function subtract(window: Interval, taken: readonly Interval[], minMs = 0): Interval[] {
  const sorted = [...taken].filter((t) => t.toMs > window.fromMs && t.fromMs < window.toMs).sort((a, b) => a.fromMs - b.fromMs);
  const out: Interval[] = [];
  let at = window.fromMs;
  for (const t of sorted) {
    if (t.fromMs > at) out.push({ fromMs: at, toMs: Math.min(t.fromMs, window.toMs) });
    at = Math.max(at, t.toMs);
    if (at >= window.toMs) break;
  }
  if (at < window.toMs) out.push({ fromMs: at, toMs: window.toMs });
  return out.filter((i) => i.toMs - i.fromMs >= minMs);
}

/** `window` ∩ `taken`, merged; pieces closer than `joinMs` are one. */
export function intersect(window: Interval, taken: readonly Interval[], joinMs = 0): Interval[] {
  const sorted = [...taken]
    .map((t) => ({ fromMs: Math.max(t.fromMs, window.fromMs), toMs: Math.min(t.toMs, window.toMs) }))
    .filter((t) => t.toMs > t.fromMs)
    .sort((a, b) => a.fromMs - b.fromMs);
  const out: Interval[] = [];
  for (const t of sorted) {
    const last = out[out.length - 1];
    if (last && t.fromMs - last.toMs <= joinMs) last.toMs = Math.max(last.toMs, t.toMs);
    else out.push({ ...t });
  }
  return out;
}

/** Cuts intervals into pieces of at most `maxMs` (one replay pull each). */
export function pieces(intervals: readonly Interval[], maxMs: number): Interval[] {
  const out: Interval[] = [];
  for (const i of intervals) for (let at = i.fromMs; at < i.toMs; at += maxMs) out.push({ fromMs: at, toMs: Math.min(i.toMs, at + maxMs) });
  return out;
}

/**
 * Where a plan asks for continuous (`timing`) recording within [fromMs, toMs): a camera
 * without a plan records always. Event slots are left out: without the events of the
 * time we cannot know what was due.
 */
export function timingIntervals(plan: SchedulePlan | undefined, fromMs: number, toMs: number): Interval[] {
  const out: Interval[] = [];
  let at = fromMs;
  while (at < toMs) {
    const next = Math.min(nextChangeMs(plan, at) ?? toMs, toMs);
    if (plannedAt(plan, at) === 'timing') {
      const last = out[out.length - 1];
      if (last && last.toMs === at) last.toMs = next;
      else out.push({ fromMs: at, toMs: next });
    }
    at = Math.max(next, at + 1);
  }
  return out;
}

export interface AttemptOutcome {
  /** Video the index holds inside the record's range after the attempt. */
  covered: Interval[];
  error: { code: string; message: string } | null;
  maxAttempts: number;
  nowMs: number;
  /** Delay before the next attempt of what is still missing. */
  retryInMs: number;
  minMs: number;
  /** false: the attempt was cut short by us (shutdown) and does not count. */
  counts?: boolean;
}

/** The records that replace one closed gap record after an attempt. */
export function settleAttempt(gap: GapRecord & { endMs: number }, o: AttemptOutcome): GapRecord[] {
  const window = { fromMs: gap.startMs, toMs: gap.endMs };
  const covered = intersect(window, o.covered);
  const missing = subtract(window, covered);
  const attempts = gap.attempts + (o.counts === false ? 0 : 1);
  const giveUp = o.counts !== false && attempts >= o.maxAttempts;
  const filledAny = covered.length > 0;
  const missState: GapState = giveUp ? 'unavailable' : filledAny ? 'partial' : 'pending';
  const base = { camera: gap.camera, reason: gap.reason, attempts };
  const out: GapRecord[] = [];
  for (const c of covered) out.push({ ...base, startMs: c.fromMs, endMs: c.toMs, state: 'filled' });
  for (const m of missing) {
    // A sliver left between back-filled and stored video (GOP rounding) is below the
    // gap threshold, like any hole under GAP_MIN_MS: not a gap, not a pull.
    if (m.toMs - m.fromMs < o.minMs && filledAny) continue;
    const lastError = o.error ?? { code: 'EDGE_NO_VIDEO', message: 'the camera had no video for this range' };
    out.push({ ...base, startMs: m.fromMs, endMs: m.toMs, state: missState, lastError, ...(giveUp ? {} : { nextAttemptMs: o.nowMs + o.retryInMs }) });
  }
  return mergeSameState(out.sort((a, b) => a.startMs - b.startMs));
}

function mergeSameState(records: GapRecord[]): GapRecord[] {
  const out: GapRecord[] = [];
  for (const r of records) {
    const last = out[out.length - 1];
    if (last && last.state === r.state && last.endMs === r.startMs && r.state === 'filled') last.endMs = r.endMs;
    else out.push(r);
  }
  return out;
}

/** Splits closed records at `cutMs` instants (a manual range that starts inside a gap). */
export function splitAt(records: readonly GapRecord[], cutsMs: readonly number[]): GapRecord[] {
  const out: GapRecord[] = [];
  for (const r of records) {
    if (r.endMs === null) {
      out.push(r);
      continue;
    }
    const cuts = cutsMs.filter((c) => c > r.startMs && c < r.endMs!).sort((a, b) => a - b);
    let at = r.startMs;
    for (const c of [...cuts, r.endMs]) {
      out.push({ ...r, startMs: at, endMs: c });
      at = c;
    }
  }
  return out;
}

/** What accountedUntilMs reads of the index (RecorderIndex's segment and gap stores). */
export interface AccountedIndex {
  segments: { last(camera: string): Pick<SegmentRecord, 'endMs'> | undefined };
  gaps: { last(camera: string): GapRecord | undefined };
}

/** The end of what a camera's index accounts for: its last segment or its last gap record. */
export function accountedUntilMs(index: AccountedIndex, camera: string): number | null {
  let end = index.segments.last(camera)?.endMs ?? null;
  const gap = index.gaps.last(camera);
  if (gap && gap.endMs !== null && (end === null || gap.endMs > end)) end = gap.endMs;
  return end;
}
