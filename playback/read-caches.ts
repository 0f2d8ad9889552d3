/**
 * The read path's caches, one set per node: built by the composition root (node.ts)
 * and handed to the HTTP routes that read segments, never module globals, so two nodes
 * in one process (the tests) share nothing and a node's caches go with it. Each is an
 * LRU of the npm `lru-cache`, bounded as the hand-written ones it replaced were:
 *
 * - `tables`: sample tables by segment file (playback/sample-table.ts), 16 MiB of heap
 *   estimate, backed by the tables persisted at segment close when there are any;
 * - `psViews`: PS segments read as fMP4 (playback/segment-source.ts): layouts of 1000
 *   files, 48 MiB of converted GOPs;
 * - `progressiveHeads`: progressive MP4 heads (moov and sample tables) by ETag
 *   (playback/range-body.ts), 32 MiB, none over a quarter of it;
 * - `frames`: JPEGs of GOPs by segment, GOP and width (api/frames.ts), 512 of them,
 *   kept as the decode's promise so concurrent requests for one frame share a decode.
 */
import { LRUCache } from 'lru-cache';
import type { ProgressiveLayout } from './progressive-mp4.ts';
import { SampleTableCache, type PersistedTableSource } from './sample-table.ts';
import { PsViews } from './segment-source.ts';

/** Heads of progressive downloads kept, in bytes; a head over a quarter of this is not kept. */
const HEAD_CACHE_BYTES = 32 * 1024 * 1024;
/** Decoded frames kept. */
const FRAME_ENTRIES = 512;

export interface ReadCaches {
  tables: SampleTableCache;
  psViews: PsViews;
  progressiveHeads: LRUCache<string, ProgressiveLayout>;
  frames: LRUCache<string, Promise<Buffer>>;
}

export function createReadCaches(opts: { persisted?: PersistedTableSource | undefined } = {}): ReadCaches {
  const psViews = new PsViews();
  return {
    psViews,
    tables: new SampleTableCache(undefined, opts.persisted, psViews),
    progressiveHeads: new LRUCache<string, ProgressiveLayout>({
      maxSize: HEAD_CACHE_BYTES,
      maxEntrySize: HEAD_CACHE_BYTES / 4,
      sizeCalculation: (l) => Math.max(1, l.head.length),
    }),
    frames: new LRUCache<string, Promise<Buffer>>({ max: FRAME_ENTRIES }),
  };
}
