/**
 * The body of `video.mp4` for a selected range: one progressive MP4 by default
 * (playback/progressive-mp4.ts), or the fragmented variant with `format=fmp4`
 * (playback/fmp4-range.ts). Both have an exact length, a strong ETag with their format
 * version, and produce any byte range alone, so the route's Range/If-Range handling
 * is the same for both.
 *
 * Built heads (ftyp+moov+mdat header, ~1 MB per hour of video) are kept in the node's
 * LRU by ETag (playback/read-caches.ts): resumed downloads and many clients of one
 * range share one head.
 */
import { Readable } from 'node:stream';
import type { Logger } from '../lib/log.ts';
import { ValidationError } from '../lib/errors.ts';
import { planFmp4Range } from './fmp4-range.ts';
import { segmentError } from './playback-stream.ts';
import { buildProgressive, progressiveEtag, progressiveStream } from './progressive-mp4.ts';
import type { SegmentTables } from './sample-table.ts';
import type { RangeSelection } from './range-selection.ts';
import type { ReadCaches } from './read-caches.ts';

/**
 * The body of a HEAD reply: empty, as a stream. Fastify's automatic HEAD route reads a
 * stream payload to its end and drops it (a whole download for nothing) and answers
 * `Content-Length: 0` for no payload; an empty stream keeps the GET's headers.
 */
export function headOnly(): Readable {
  return Readable.from([]);
}

export interface RangeBody {
  contentLength: number;
  etag: string;
  stream(start?: number, endInclusive?: number): Readable;
}

const READ_PARALLEL = 4;

/**
 * `fromMs`/`toMs` are the instants asked for; `sel` the GOPs covering them. The
 * progressive body's edit lists cut presentation to exactly [fromMs, toMs).
 */
export async function rangeBody(
  deps: { log: Logger; caches: ReadCaches },
  sel: RangeSelection,
  fromMs: number,
  toMs: number,
  format: string | undefined,
): Promise<RangeBody> {
  if (format === 'fmp4') {
    let body: RangeBody;
    try {
      body = await planFmp4Range(sel.slices, deps.caches.psViews);
    } catch (err) {
      throw segmentError(err, 'of the range');
    }
    return {
      contentLength: body.contentLength,
      etag: body.etag,
      stream(start, endInclusive) {
        // Logged once here; the connection is then aborted short of Content-Length.
        return body
          .stream(start, endInclusive)
          .once('error', (err) => deps.log.warn({ err: segmentError(err, 'of the range') }, 'download aborted: segment unreadable'));
      },
    };
  }
  if (format !== undefined && format !== 'mp4') throw new ValidationError(`format: expected mp4 (progressive, default) or fmp4, got ${JSON.stringify(format)}`);
  const cache = deps.caches.tables;
  // Segments not cached yet are read a few at a time: from their persisted tables, or
  // (none yet, or not usable) from their moofs, ~30 per segment, where running in
  // parallel uses the disk's queue and the thread pool.
  const tables: SegmentTables[] = new Array<SegmentTables>(sel.slices.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < sel.slices.length; i = next++) {
      const s = sel.slices[i]!;
      try {
        tables[i] = await cache.read(s.path, s.initSize, s.fragments, s.bytes);
      } catch (err) {
        throw segmentError(err, s.path);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(READ_PARALLEL, sel.slices.length) }, worker));
  const skipMs = Math.max(0, fromMs - sel.fromMs);
  const trimEndMs = Math.max(0, sel.toMs - toMs);
  const etag = progressiveEtag(tables[0]!.init, sel.slices, skipMs, trimEndMs);
  // The head (moov, sample tables) of a download asked for again is not built again.
  let layout = deps.caches.progressiveHeads.get(etag);
  if (!layout) {
    layout = buildProgressive({ segments: tables, skipMs, trimEndMs });
    deps.caches.progressiveHeads.set(etag, layout);
  }
  const built = layout;
  return {
    contentLength: built.contentLength,
    etag,
    stream(start = 0, endInclusive = built.contentLength - 1) {
      return progressiveStream(
        built,
        start,
        endInclusive,
        (err, part) => {
          const e = segmentError(err, part.path);
          // Logged once here; the connection is then aborted short of Content-Length.
          deps.log.warn({ err: e, file: part.path }, 'download aborted: segment unreadable');
          return e;
        },
        deps.caches.psViews,
      );
    },
  };
}
