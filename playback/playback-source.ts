/**
 * Feeds playback streams from the index, lazily: segments are looked up in small
 * batches as the stream reaches them (no long-lived LMDB read transaction, no list of
 * a month of segments in memory), forwards from the GOP holding `from` up to `to`, or
 * backwards from the GOP holding `from` down to `to` for reverse play. Also the parsing
 * of the playback query shared by HTTP `/play` and WebSocket sessions.
 */
import { join } from 'node:path';
import type { RecorderIndex } from '../index/db.ts';
import type { SegmentRecord } from '../index/records.ts';
import { BadTimeError, ValidationError } from '../lib/errors.ts';
import { iso, parseTimeMs } from '../lib/time.ts';
import { MAX_SPEED, MIN_SPEED, trickMode, type TrickMode } from '../media/mp4/fmp4-trick.ts';
import type { PlaybackFragment, PlaybackSegment } from './playback-stream.ts';
import { shownGops } from './one-timeline.ts';

const BATCH = 16;
/**
 * The GOPs of `seg` overlapping [fromMs, toMs) that the one timeline shows
 * (playback/one-timeline.ts: where another writer's segment outranks it, its GOPs
 * there are hidden), as playback fragments. Segments are played one after another in
 * start order, so a segment that a higher-ranked one cuts in two (rare: that one lies
 * wholly inside it) plays its first part only; downloads have both.
 */
function fragmentsOf(index: RecorderIndex, seg: SegmentRecord, fromMs: number, toMs: number): PlaybackFragment[] {
  const rivals = index.segments.overlapping(seg.camera, Math.max(seg.startMs, fromMs), Math.min(seg.endMs, toMs));
  const shown = shownGops(seg, rivals, fromMs, toMs);
  let run = shown.length;
  for (let i = 1; i < shown.length; i++) {
    if (shown[i]!.startMs !== shown[i - 1]!.endMs) {
      run = i;
      break;
    }
  }
  return shown.slice(0, run).map((g) => ({ offset: g.offset, size: g.size, timeMs: g.startMs }));
}

function toPlayback(dataDir: string, seg: SegmentRecord, fragments: PlaybackFragment[]): PlaybackSegment {
  return { path: join(dataDir, seg.file), bytes: seg.bytes, initSize: seg.initSize, codecKey: seg.codecKey, fragments };
}

/**
 * Segments of `camera` in playback order. Forward: GOPs that overlap [fromMs, toMs)
 * (the first is the GOP holding fromMs). Reverse: GOPs that start at or before fromMs
 * and end after toMs (toMs < fromMs), latest first.
 */
export function* playbackSegments(
  index: RecorderIndex,
  dataDir: string,
  camera: string,
  fromMs: number,
  toMs: number,
  reverse: boolean,
): Generator<PlaybackSegment> {
  if (!reverse) {
    // The segment that starts before `from` may hold it. Every read here returns whole
    // records before anything is yielded: a yield inside an lmdb-js range iteration keeps
    // its read transaction open for as long as the consumer waits (a paused or slow
    // player, or one that went away), and an open read transaction stops LMDB from
    // reusing any page freed after it: the index file then grew by every commit (issue
    // 13: 5.3 MB of index for 0.4 MB of video).
    // Every segment holding `from` that started before it (two writers' in an overlap:
    // the shown one may not be the last to start), in start order.
    for (const before of index.segments.overlapping(camera, fromMs, fromMs + 1).filter((s) => s.startMs < fromMs)) {
      const f = fragmentsOf(index, before, fromMs, toMs);
      if (f.length) yield toPlayback(dataDir, before, f);
    }
    let next = fromMs;
    for (;;) {
      const batch = index.segments.page(camera, next, { toMs, limit: BATCH });
      for (const seg of batch) {
        const f = fragmentsOf(index, seg, fromMs, toMs);
        if (f.length) yield toPlayback(dataDir, seg, f);
      }
      if (batch.length < BATCH) return;
      next = batch[batch.length - 1]!.startMs + 1;
    }
  }
  let next = fromMs;
  for (;;) {
    const batch = index.segments.page(camera, next, { reverse: true, limit: BATCH });
    for (const seg of batch) {
      if (seg.camera !== camera) return;
      if (seg.endMs <= toMs) return;
      // Down to `toMs`, up to the GOP holding `fromMs` itself: [toMs, fromMs] in whole ms.
      const f = fragmentsOf(index, seg, toMs, fromMs + 1).reverse();
      if (f.length) yield toPlayback(dataDir, seg, f);
    }
    if (batch.length < BATCH) return;
    next = batch[batch.length - 1]!.startMs - 1;
  }
}

export interface PlaybackQuery {
  fromMs: number;
  /** Forward: end (exclusive); reverse: lower bound. */
  toMs: number;
  speed: number;
  reverse: boolean;
  iframes: boolean;
  mode: TrickMode;
}

function flag(value: unknown, field: string): boolean {
  if (value === undefined || value === '0' || value === 'false' || value === false) return false;
  if (value === '1' || value === 'true' || value === true) return true;
  throw new ValidationError(`${field}: expected 1/0 or true/false, got ${JSON.stringify(value)}`);
}

/** `speed` as a number or a fraction like `1/8`, within [1/8, 16]. */
export function parseSpeed(value: unknown): number {
  if (value === undefined) return 1;
  let speed = NaN;
  if (typeof value === 'number') speed = value;
  else if (typeof value === 'string') {
    const m = /^(\d+(?:\.\d+)?)(?:\/(\d+(?:\.\d+)?))?$/.exec(value.trim());
    if (m) speed = Number(m[1]) / (m[2] === undefined ? 1 : Number(m[2]));
  }
  if (!Number.isFinite(speed) || speed < MIN_SPEED - 1e-9 || speed > MAX_SPEED + 1e-9) {
    throw new ValidationError(`speed: expected a number from 1/8 to 16 (e.g. 0.5, 1/8, 8), got ${JSON.stringify(value)}`);
  }
  return speed;
}

/**
 * Parses from/to/speed/reverse/iframes. Forward `to` defaults to "whatever is
 * recorded" and must be after `from`; reverse `to` defaults to the beginning and must
 * be before `from`.
 */
export function parsePlaybackQuery(q: { from?: unknown; to?: unknown; speed?: unknown; reverse?: unknown; iframes?: unknown }): PlaybackQuery {
  const fromMs = parseTimeMs(q.from, 'from');
  const speed = parseSpeed(q.speed);
  const reverse = flag(q.reverse, 'reverse');
  const iframes = flag(q.iframes, 'iframes');
  let toMs: number;
  if (q.to === undefined) toMs = reverse ? 0 : Number.MAX_SAFE_INTEGER;
  else {
    toMs = parseTimeMs(q.to, 'to');
    if (!reverse && toMs <= fromMs) throw new BadTimeError(`to (${iso(toMs)}) must be after from (${iso(fromMs)})`);
    if (reverse && toMs >= fromMs)
      throw new BadTimeError(`reverse play runs from \`from\` back to \`to\`: to (${iso(toMs)}) must be before from (${iso(fromMs)})`);
  }
  return { fromMs, toMs, speed, reverse, iframes, mode: trickMode(speed, iframes, reverse) };
}
