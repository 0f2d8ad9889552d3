/**
 * The segment fragments (GOPs) a download of [from, to) reads: from the GOP that holds
 * `from` to the one that holds the last instant before `to` (playback/gop-range.ts),
 * cut at the first codec change (one MP4 has one codec configuration). Where two
 * writers' segments overlap, the GOPs shown are playback/one-timeline.ts's.
 */
import { join } from 'node:path';
import type { RecorderIndex } from '../index/db.ts';
import { NoVideoError } from '../lib/errors.ts';
import { iso } from '../lib/time.ts';
import type { SegmentSlice } from './fmp4-range.ts';
import { timelineGops } from './one-timeline.ts';

export interface RangeSelection {
  slices: SegmentSlice[];
  fromMs: number;
  toMs: number;
  mimeType: string;
}

/** The fragments covering [fromMs, toMs), cut at the first codec change. */
export function selectRange(index: RecorderIndex, dataDir: string, camera: string, fromMs: number, toMs: number): RangeSelection {
  const slices: SegmentSlice[] = [];
  let codecKey: string | null = null;
  let mimeType = '';
  let firstMs: number | null = null;
  let lastMs = fromMs;
  for (const { seg, gops } of timelineGops(index.segments.overlapping(camera, fromMs, toMs), fromMs, toMs)) {
    if (codecKey !== null && seg.codecKey !== codecKey) break;
    const fragments = [];
    for (const g of gops) {
      fragments.push({ offset: g.offset, size: g.size });
      firstMs ??= g.startMs;
      lastMs = g.endMs;
    }
    if (fragments.length === 0) continue;
    codecKey ??= seg.codecKey;
    mimeType ||= seg.mimeType;
    slices.push({ path: join(dataDir, seg.file), initSize: seg.initSize, fragments, bytes: seg.bytes });
  }
  if (firstMs === null) throw new NoVideoError(`no video of camera ${camera} between ${iso(fromMs)} and ${iso(toMs)}`);
  return { slices, fromMs: firstMs, toMs: lastMs, mimeType };
}
