/**
 * A virtual MP4 for a time range, served from the segment files without copying
 * them: the first segment's init, then every selected fragment with its moof patched
 * (decode times rebased to start near zero, sequence numbers renumbered) and its mdat
 * streamed as a slice of the file. Patching never changes a byte count, so the body's
 * length is known before the first byte and any byte range of it can be produced on
 * its own: a broken download resumes with Range (same bytes every time).
 *
 * Decode-time mapping: all tracks of a segment shift by the same amount of time, so
 * A/V sync is kept. Consecutive segments of one ingest session (the video decode time
 * continues exactly) keep the shift; after a discontinuity (a gap, a new session) the
 * next segment starts where the previous output ended, so players see no hole.
 *
 * All slices must share one codecKey (the caller cuts the range at a codec change).
 *
 * The init served is the first segment's with the range's own durations (mehd, mvhd,
 * tkhd: media/mp4/init-duration.ts), whatever the stored init says (its segment's length,
 * or zeros while it was open, or no mehd in files written before segments had one).
 * The range is whole GOPs at both ends (`X-Recording-From/To`): there is no edit list
 * to present an exact [from, to), so no tail is cut either (a player shows every frame
 * of the last GOP, as it does the first GOP's frames before `from`).
 */
import type { FileHandle } from 'node:fs/promises';
import { openSegmentFile, type PsViews } from './segment-source.ts';
import { Readable } from 'node:stream';
import { createHash } from 'node:crypto';
import { parseInit, type InitInfo } from '../media/mp4/init-info.ts';
import { parseMoof, rewriteMoof, type MoofInfo } from '../media/mp4/moof.ts';
import { Mp4FormatError } from '../media/mp4/boxes.ts';
import { checkUnchanged } from './sample-table.ts';
import { readExactly } from '../media/mp4/file-read.ts';
import { withDurations } from '../media/mp4/init-duration.ts';

/**
 * Bump when the bytes produced for the same input change (it is part of the ETag).
 * 2: the init carries the range's durations (and a mehd).
 */
export const FMP4_RANGE_FORMAT_VERSION = 2;

export interface FragmentRef {
  offset: number;
  size: number;
}

export interface SegmentSlice {
  path: string;
  initSize: number;
  fragments: FragmentRef[];
  /** File size the index gave when the range was planned (see playback/sample-table.ts). */
  bytes?: number;
}

interface PlannedFragment {
  path: string;
  offset: number;
  size: number;
  sequence: number;
  shift: Map<number, bigint>;
  /** The file's size when planned (from the index), if known. */
  fileBytes?: number;
}

export interface Fmp4RangeBody {
  contentLength: number;
  etag: string;
  init: InitInfo;
  /** Bytes [start, endInclusive] of the body. */
  stream(start?: number, endInclusive?: number): Readable;
}

const READ_CHUNK = 256 * 1024;

async function readMoof(fh: FileHandle, offset: number): Promise<Buffer> {
  const head = await readExactly(fh, offset, 8);
  const size = head.readUInt32BE(0);
  if (head.toString('latin1', 4, 8) !== 'moof' || size < 8) throw new Mp4FormatError('MP4_UNEXPECTED_BOX', `no moof at offset ${offset}`);
  return readExactly(fh, offset, size);
}

function trackSeconds(ticks: bigint, timescale: number): number {
  return Number(ticks) / timescale;
}

/** `views`: the node's PS views (playback/read-caches.ts), kept across requests. */
export async function planFmp4Range(slices: SegmentSlice[], views?: PsViews): Promise<Fmp4RangeBody> {
  const first = slices[0];
  if (!first || first.fragments.length === 0) throw new Mp4FormatError('MP4_NO_INIT', 'nothing to serve');
  let storedInit: Buffer;
  {
    const fh = await openSegmentFile(first.path, views);
    try {
      storedInit = await readExactly(fh, 0, first.initSize);
    } finally {
      await fh.close();
    }
  }
  const init = parseInit(storedInit);
  const timescales = new Map(init.tracks.map((t) => [t.id, t.timescale]));
  const videoId = init.videoTrackId ?? init.tracks[0]!.id;

  const planned: PlannedFragment[] = [];
  let sequence = 1;
  let prevVideoNext: bigint | null = null; // input decode time where the previous output stopped
  let outEndSec = 0; // latest end over tracks of what was output so far
  let shift = new Map<number, bigint>();
  let videoGrid: { lastDts: number; frame: number } | null = null; // output ticks of the last video frame
  const trackEnd = new Map<number, number>(); // output ticks where each track's last sample ends
  for (const slice of slices) {
    if (slice.fragments.length === 0) continue;
    const fh = await openSegmentFile(slice.path, views);
    let head: MoofInfo;
    let tail: MoofInfo;
    try {
      head = parseMoof(await readMoof(fh, slice.fragments[0]!.offset), init.trexDefaults);
      tail = parseMoof(await readMoof(fh, slice.fragments[slice.fragments.length - 1]!.offset), init.trexDefaults);
    } finally {
      await fh.close();
    }
    const headVideo = head.tracks.find((t) => t.trackId === videoId);
    const continuous = prevVideoNext !== null && headVideo !== undefined && headVideo.baseDecodeTime === prevVideoNext;
    if (!continuous) {
      // Rebase so this slice's earliest track starts at outEndSec, all tracks by the same
      // time. The start is put on the previous video's frame grid (a whole number of
      // frames after its last frame), so tools that count in frames see no repeated time.
      if (videoGrid) {
        const vts = timescales.get(videoId) ?? 1;
        const frames = Math.max(1, Math.ceil((outEndSec * vts - videoGrid.lastDts) / videoGrid.frame - 1e-9));
        outEndSec = (videoGrid.lastDts + frames * videoGrid.frame) / vts;
      }
      const startSec = Math.min(...head.tracks.map((t) => trackSeconds(t.baseDecodeTime, timescales.get(t.trackId) ?? 1)));
      shift = new Map(
        head.tracks.map((t) => {
          const ts = timescales.get(t.trackId) ?? 1;
          return [t.trackId, BigInt(Math.round((outEndSec - startSec) * ts))];
        }),
      );
    }
    for (const f of slice.fragments)
      planned.push({
        path: slice.path,
        offset: f.offset,
        size: f.size,
        sequence: sequence++,
        shift,
        ...(slice.bytes !== undefined ? { fileBytes: slice.bytes } : {}),
      });
    for (const t of tail.tracks) {
      const ts = timescales.get(t.trackId) ?? 1;
      // ffmpeg may close a session's last fragment with a near-zero last sample; count it
      // at least as long as the one before, or the next slice would start on the same
      // frame tick (players and muxers working in frame units see a repeated time).
      const lastDur = t.durations[t.durations.length - 1] ?? 0;
      const pad = Math.max(0, (t.durations[t.durations.length - 2] ?? 1) - lastDur);
      const end = trackSeconds(t.baseDecodeTime + BigInt(t.durationTicks + pad) + (shift.get(t.trackId) ?? 0n), ts);
      if (end > outEndSec) outEndSec = end;
      const ends = Number(t.baseDecodeTime + BigInt(t.durationTicks) + (shift.get(t.trackId) ?? 0n));
      if (ends > (trackEnd.get(t.trackId) ?? 0)) trackEnd.set(t.trackId, ends);
      if (t.trackId === videoId) {
        prevVideoNext = t.baseDecodeTime + BigInt(t.durationTicks);
        const n = t.durations.length;
        const lastDts = Number(t.baseDecodeTime + (shift.get(t.trackId) ?? 0n)) + t.durations.slice(0, n - 1).reduce((a, d) => a + d, 0);
        const frame = Math.max(t.durations[n - 2] ?? 0, t.durations[n - 1] ?? 0, 1);
        videoGrid = { lastDts, frame };
      }
    }
  }

  // The output starts at 0: each track lasts until its end.
  const initBytes = withDurations(storedInit, trackEnd);
  const contentLength = initBytes.length + planned.reduce((n, f) => n + f.size, 0);
  const hash = createHash('sha1').update(initBytes);
  for (const f of planned) hash.update(`${f.path}:${f.offset}:${f.size};`);
  const etag = `"fmp4v${FMP4_RANGE_FORMAT_VERSION}-${hash.digest('hex').slice(0, 32)}"`;

  return {
    contentLength,
    etag,
    init,
    stream(start = 0, endInclusive = contentLength - 1) {
      return Readable.from(generate(initBytes, planned, init, start, endInclusive + 1, views), { objectMode: false });
    },
  };
}

async function* generate(
  initBytes: Buffer,
  planned: PlannedFragment[],
  init: InitInfo,
  start: number,
  end: number,
  views: PsViews | undefined,
): AsyncGenerator<Buffer> {
  let pos = 0;
  if (start < initBytes.length) yield initBytes.subarray(start, Math.min(end, initBytes.length));
  pos = initBytes.length;
  let fh: FileHandle | null = null;
  let fhPath = '';
  try {
    for (const f of planned) {
      const fragStart = pos;
      pos += f.size;
      if (pos <= start) continue;
      if (fragStart >= end) break;
      if (fhPath !== f.path) {
        await fh?.close();
        fh = await openSegmentFile(f.path, views);
        // A file smaller than planned was rewritten (thinned) since: refuse, never mix.
        await checkUnchanged(fh, f.path, f.fileBytes);
        fhPath = f.path;
      }
      const moof = await readMoof(fh!, f.offset);
      const info = parseMoof(moof, init.trexDefaults);
      const decode = new Map(info.tracks.map((t) => [t.trackId, t.baseDecodeTime + (f.shift.get(t.trackId) ?? 0n)]));
      const patched = rewriteMoof(moof, { sequence: f.sequence, baseDecodeTime: decode });
      // The part of [start, end) inside this fragment, relative to the fragment.
      const from = Math.max(start - fragStart, 0);
      const to = Math.min(end - fragStart, f.size);
      if (from < patched.length) yield patched.subarray(from, Math.min(to, patched.length));
      let p = Math.max(from, patched.length);
      while (p < to) {
        const n = Math.min(READ_CHUNK, to - p);
        yield await readExactly(fh!, f.offset + p, n);
        p += n;
      }
    }
  } finally {
    await fh?.close();
  }
}
