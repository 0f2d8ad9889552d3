/**
 * Schema 4: `daysum` [camera, dayStartMs] → the UTC day's recorded time as exact type
 * runs (index/day-summary.ts), so search reads one record per day. Built here from
 * `segtimes` (schema 2) when a schema-1 index has none (builds before it existed).
 */
import { addRuns, daysOf, encodeSummary, runsInDay, type Run } from '../day-summary.ts';
import { segmentRuns, segmentTimesView } from '../segment-store.ts';
import type { Migration } from './migration.ts';

export const daySummariesMigration: Migration = {
  version: 4,
  name: 'daysum: recorded runs per camera-day',
  up(t) {
    if (t.daysum.getKeysCount({ limit: 1 }) > 0) return;
    const days = new Map<string, { camera: string; day: number; runs: Run[] }>();
    for (const { key, value } of t.segtimes.getRange({})) {
      const seg = segmentTimesView(key, value);
      for (const day of daysOf(seg.startMs, seg.endMs)) {
        const k = `${key[0]}\u0000${day}`;
        const e = days.get(k) ?? { camera: key[0], day, runs: [] };
        e.runs = addRuns(e.runs, runsInDay(segmentRuns(seg), day));
        days.set(k, e);
      }
    }
    for (const e of days.values()) void t.daysum.put([e.camera, e.day], encodeSummary(e.runs));
  },
};
