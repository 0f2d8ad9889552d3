/**
 * playback/read-caches.ts: the read path's caches are one lru-cache set per node, built
 * by the composition root, bounded as the module globals they replaced were (progressive
 * heads 32 MiB with none over a quarter, frames 512, converted PS GOPs 48 MiB), and two
 * nodes (two sets) share nothing.
 */
import test from 'ava';
import type { ProgressiveLayout } from '../../playback/progressive-mp4.ts';
import { createReadCaches } from '../../playback/read-caches.ts';
import { CONVERTED_CACHE_BYTES } from '../../playback/segment-source.ts';

const layout = (bytes: number): ProgressiveLayout => ({ head: Buffer.alloc(bytes), parts: [], contentLength: bytes, durationSec: 1 });
const MiB = 1024 * 1024;

test('progressive heads: bounded by bytes, least recently used first; a head over a quarter of the bound is not kept', (t) => {
  const { progressiveHeads: heads } = createReadCaches();
  heads.set('huge', layout(9 * MiB));
  t.false(heads.has('huge'));
  for (let i = 0; i < 4; i++) heads.set(`h${i}`, layout(7 * MiB)); // 28 of 32 MiB
  heads.get('h0'); // used again: kept
  heads.set('h4', layout(7 * MiB));
  t.true(heads.has('h0'));
  t.false(heads.has('h1'), 'the least recently used went');
  t.true(heads.calculatedSize <= 32 * MiB);
});

test('frames: 512 decodes kept; converted PS GOPs bounded by bytes', (t) => {
  const { frames, psViews } = createReadCaches();
  for (let i = 0; i < 600; i++) frames.set(`f${i}`, Promise.resolve(Buffer.alloc(1)));
  t.is(frames.size, 512);
  t.false(frames.has('f0'));
  for (let i = 0; i < 60; i++) psViews.converted.set(`/x.ps:${i}:1`, Buffer.alloc(MiB));
  t.true(psViews.converted.calculatedSize <= CONVERTED_CACHE_BYTES);
  t.is(psViews.converted.size, CONVERTED_CACHE_BYTES / MiB);
});

test("two nodes share no cache; the sample tables read PS through their node's views", (t) => {
  const a = createReadCaches();
  const b = createReadCaches();
  a.progressiveHeads.set('etag', layout(10));
  a.frames.set('k', Promise.resolve(Buffer.alloc(1)));
  t.false(b.progressiveHeads.has('etag'));
  t.false(b.frames.has('k'));
  t.is(a.tables.views, a.psViews);
  t.not(a.tables, b.tables);
  t.is(a.tables.maxBytes, 16 * MiB);
});
