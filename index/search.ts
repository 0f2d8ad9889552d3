/**
 * Search: segments and gaps of one camera over [from, to), from the index alone
 * (invariant 6). Consecutive segments closer than SPAN_JOIN_MS merge into one span;
 * record-type runs merge across segments when the type does not change.
 */
import type { RecorderIndex } from './db.ts';
import { daysOf } from './day-summary.ts';
import type { GapState } from './records.ts';

/** Segments this close together belong to one span (rounding of wall-clock anchors). */
export const SPAN_JOIN_MS = 1000;

export interface TypeRunMs {
  type: string;
  fromMs: number;
  toMs: number;
}

export interface SpanMs {
  fromMs: number;
  toMs: number;
  types: TypeRunMs[];
}

export interface GapMs {
  fromMs: number;
  toMs: number;
  state: GapState;
  reason: string;
  /** Back-fill attempts so far and why the last one did not fill it. */
  attempts: number;
  error?: { code: string; message: string };
}

export interface SearchResultMs {
  spans: SpanMs[];
  gaps: GapMs[];
}

export function search(index: RecorderIndex, q: { camera: string; fromMs: number; toMs: number; types?: string[] | undefined; nowMs: number }): SearchResultMs {
  const wanted = q.types && q.types.length > 0 ? new Set(q.types) : null;
  const spans: SpanMs[] = [];
  // One day summary per UTC day (index/day-summary.ts): a month is ~31 reads.
  for (const day of daysOf(q.fromMs, q.toMs)) {
    for (const run of index.segments.daySummary(q.camera, day)) {
      if (wanted && !wanted.has(run.type)) continue;
      const fromMs = Math.max(run.fromMs, q.fromMs);
      const toMs = Math.min(run.toMs, q.toMs);
      if (toMs <= fromMs) continue;
      addRun(spans, { type: run.type, fromMs, toMs });
    }
  }
  const gaps = index.gaps.inRange(q.camera, q.fromMs, q.toMs, q.nowMs).map((g) => ({
    fromMs: Math.max(g.startMs, q.fromMs),
    toMs: Math.min(g.endMs ?? q.nowMs, q.toMs),
    state: g.state,
    reason: g.reason,
    attempts: g.attempts,
    ...(g.lastError ? { error: g.lastError } : {}),
  }));
  return { spans, gaps: gaps.filter((g) => g.toMs > g.fromMs) };
}

function addRun(spans: SpanMs[], run: TypeRunMs): void {
  const last = spans[spans.length - 1];
  if (last && run.fromMs - last.toMs <= SPAN_JOIN_MS) {
    const lastRun = last.types[last.types.length - 1]!;
    if (lastRun.type === run.type) lastRun.toMs = run.toMs;
    else last.types.push(run);
    if (run.toMs > last.toMs) last.toMs = run.toMs;
    return;
  }
  spans.push({ fromMs: run.fromMs, toMs: run.toMs, types: [{ ...run }] });
}

export interface RangeMs {
  fromMs: number;
  toMs: number;
}

/** Sorted, non-overlapping union of ranges. */
export function unionRanges(ranges: readonly RangeMs[]): RangeMs[] {
  const sorted = [...ranges].filter((r) => r.toMs > r.fromMs).sort((a, b) => a.fromMs - b.fromMs);
  const out: RangeMs[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.fromMs <= last.toMs) last.toMs = Math.max(last.toMs, r.toMs);
    else out.push({ ...r });
  }
  return out;
}

/** Intersection of two unions of ranges. */
export function intersectRanges(a: readonly RangeMs[], b: readonly RangeMs[]): RangeMs[] {
  const out: RangeMs[] = [];
  for (const x of unionRanges(a)) {
    for (const y of unionRanges(b)) {
      const fromMs = Math.max(x.fromMs, y.fromMs);
      const toMs = Math.min(x.toMs, y.toMs);
      if (toMs > fromMs) out.push({ fromMs, toMs });
    }
  }
  return out;
}

/**
 * Keeps only the parts of the spans inside `within` (locked video, labelled video):
 * type runs are cut at the range edges, and a span cut in two becomes two spans.
 */
export function clipSpans(spans: readonly SpanMs[], within: readonly RangeMs[]): SpanMs[] {
  const out: SpanMs[] = [];
  for (const range of unionRanges(within)) {
    for (const span of spans) {
      const fromMs = Math.max(span.fromMs, range.fromMs);
      const toMs = Math.min(span.toMs, range.toMs);
      if (toMs <= fromMs) continue;
      const types = span.types
        .map((t) => ({ type: t.type, fromMs: Math.max(t.fromMs, fromMs), toMs: Math.min(t.toMs, toMs) }))
        .filter((t) => t.toMs > t.fromMs);
      out.push({ fromMs, toMs, types });
    }
  }
  return out.sort((a, b) => a.fromMs - b.fromMs);
}
