/**
 * Schema 2: `segtimes` [camera, startMs] → [endMs, type, fromMs, …], the part of each
 * segment search reads, so a month of search does not decode GOP tables.
 *
 * Schema 1 was written by builds whose layout grew without a version bump: the oldest
 * have no `segtimes`, later ones keep it beside every segment. So it is built here
 * only when the index has segments and no `segtimes` at all.
 */
import { segmentTimes } from '../segment-store.ts';
import type { Migration } from './migration.ts';

export const segmentTimesMigration: Migration = {
  version: 2,
  name: 'segtimes: the search view of every segment',
  up(t) {
    if (t.segtimes.getKeysCount({ limit: 1 }) > 0) return;
    for (const { value } of t.segments.getRange({})) void t.segtimes.put([value.camera, value.startMs], segmentTimes(value));
  },
};
