/**
 * One progressive (non-fragmented) MP4 for a range, built per request: `ftyp`, a
 * `moov` whose sample tables come from the fragments' own `moof`s (via the sample
 * table cache), then one `mdat` whose payload is the fragments' media bytes served as
 * slices of the segment files, never copied to a temp file. The layout is fixed before
 * the first byte, so the length is exact and any byte range can be produced alone.
 *
 * Layout: [ftyp][moov][mdat header][payload of fragment 1][payload of fragment 2]…
 * where a fragment's payload is the file bytes spanning its tracks' sample runs (its
 * mdat payload). Each track run is one chunk (stsc/stco point into those slices).
 *
 * Time: decode times come from playback/timeline.ts (segments of one session continue
 * exactly; a gap is skipped, timestamps continue). At each fragment boundary the last
 * sample's duration is stretched to reach the next fragment's decode time, so A/V stay
 * in sync across rebased segments. An edit list per track starts presentation at the
 * exact `from` (inside the first GOP) and ends it at `to`. The samples presented at or
 * after `to` (the decode-order tail of the last GOP, and audio from `to` on) are left
 * out, with their bytes: Chromium ignores an edit list's end and would play the whole
 * last GOP, ~0.7 s past `to` at a 1 s GOP (see keptCounts).
 */
import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { openSegmentFile, type PsViews } from './segment-source.ts';
import { Readable, type Writable } from 'node:stream';
import { Mp4FormatError, childBoxes, findAll, findBox, findChild, fullBoxBody, type Box } from '../media/mp4/boxes.ts';
import { isSyncSample } from '../media/mp4/moof.ts';
import { checkUnchanged, type SegmentTables, type TrackFragment } from './sample-table.ts';
import { OutputTimeline } from './timeline.ts';
import { readInto } from '../media/mp4/file-read.ts';
import { withoutDurations } from '../media/mp4/init-duration.ts';

/**
 * Bump when the bytes produced for the same input change (it is part of the ETag).
 * 2: the tail presented at or after `to` is left out.
 */
export const PROGRESSIVE_FORMAT_VERSION = 2;
const MOVIE_TIMESCALE = 1000;

export interface ProgressiveRequest {
  segments: SegmentTables[];
  /** Presentation skipped at the start of the first GOP (exact `from`), ms. */
  skipMs: number;
  /** Presentation cut at the end of the last GOP (exact `to`), ms. */
  trimEndMs: number;
}

export interface FilePart {
  path: string;
  offset: number;
  length: number;
  /** The file's size when planned: a smaller file was rewritten since (not served). */
  fileBytes?: number;
}

export interface ProgressiveLayout {
  /** ftyp + moov + mdat header. */
  head: Buffer;
  parts: FilePart[];
  contentLength: number;
  /** Presentation duration (after the edit lists), seconds. */
  durationSec: number;
}

/**
 * Strong ETag for a request: format version, init, every fragment and the trims. The
 * init is hashed without its duration fields (filled in when its segment closes, never
 * read by the build), so a range gets one ETag whether it was read open or closed.
 */
export function progressiveEtag(
  init: Buffer,
  slices: { path: string; fragments: { offset: number; size: number }[] }[],
  skipMs: number,
  trimEndMs: number,
): string {
  const h = createHash('sha1').update(`v${PROGRESSIVE_FORMAT_VERSION};${skipMs};${trimEndMs};`).update(withoutDurations(init));
  for (const s of slices) {
    h.update(`${s.path}|`);
    for (const f of s.fragments) h.update(`${f.offset}:${f.size};`);
  }
  return `"mp4v${PROGRESSIVE_FORMAT_VERSION}-${h.digest('hex').slice(0, 32)}"`;
}

// ---- small big-endian writer -------------------------------------------------

class Out {
  buf: Buffer;
  p = 0;
  constructor(size: number) {
    this.buf = Buffer.alloc(size);
  }
  u8(v: number): void {
    this.buf[this.p++] = v;
  }
  u16(v: number): void {
    this.buf.writeUInt16BE(v, this.p);
    this.p += 2;
  }
  u32(v: number): void {
    this.buf.writeUInt32BE(v >>> 0, this.p);
    this.p += 4;
  }
  i32(v: number): void {
    this.buf.writeInt32BE(v, this.p);
    this.p += 4;
  }
  u64(v: number): void {
    this.u32(Math.floor(v / 0x1_0000_0000));
    this.u32(v % 0x1_0000_0000);
  }
  type(t: string): void {
    this.buf.write(t, this.p, 'latin1');
    this.p += 4;
  }
  bytes(b: Buffer): void {
    b.copy(this.buf, this.p);
    this.p += b.length;
  }
  /** Full box header (size, type, version, flags). */
  full(size: number, type: string, version: number, flags: number): void {
    this.u32(size);
    this.type(type);
    this.u32((version << 24) | flags);
  }
}

/**
 * A box not serialised yet: the moov (~1 MB for an hour) is assembled as a tree and
 * written once into the head, not copied again at every level of nesting.
 */
interface BoxNode {
  type: string;
  size: number;
  children: Piece[];
}
/** Bytes written straight into the head (the sample sizes: no copy of them first). */
interface Leaf {
  size: number;
  write(out: Buffer, at: number): void;
}
type Piece = Buffer | BoxNode | Leaf;

function pieceSize(p: Piece): number {
  return Buffer.isBuffer(p) ? p.length : p.size;
}

function box(type: string, ...children: Piece[]): BoxNode {
  let size = 8;
  for (const c of children) size += pieceSize(c);
  return { type, size, children };
}

/** Writes `p` at `at` in `out`; returns the offset after it. */
function writePiece(p: Piece, out: Buffer, at: number): number {
  if (Buffer.isBuffer(p)) return at + p.copy(out, at);
  if ('write' in p) {
    p.write(out, at);
    return at + p.size;
  }
  out.writeUInt32BE(p.size, at);
  out.write(p.type, at + 4, 'latin1');
  let q = at + 8;
  for (const c of p.children) q = writePiece(c, out, q);
  return q;
}

function slice(buf: Buffer, b: Box): Buffer {
  return buf.subarray(b.offset, b.offset + b.size);
}

// ---- per-track samples ---------------------------------------------------------

interface TrackSamples {
  id: number;
  timescale: number;
  kind: 'video' | 'audio' | 'other';
  trak: Box;
  count: number;
  /**
   * The track's samples as the fragments' own arrays, in order (never concatenated:
   * an hour is ~250 k samples, and this is on the first-byte path), with the last
   * sample of each fragment lasting `lastDurations[j]` instead (stretched to meet the
   * next fragment). A fragment cut at `to` is a view of its kept first samples.
   */
  frags: Placed[];
  lastDurations: Uint32Array;
  /** Samples that are sync samples (all of them: no stss). */
  syncCount: number;
  /** Whether any composition offset is non-zero / negative (ctts present / version 1). */
  hasCtts: boolean;
  negativeCtts: boolean;
  /** One chunk per sample run: payload-relative offset and sample count. */
  chunkOffsets: number[];
  chunkCounts: number[];
  /** Output decode time of the first sample, ticks (a track may start after the earliest). */
  startTicks: number;
  endTicks: number;
}

interface Placed {
  outBase: number;
  durations: Uint32Array;
  sizes: Uint32Array;
  flags: Uint32Array;
  ctts: Int32Array;
  durationTicks: number;
  chunks: { rel: number; count: number }[];
}

function trackIdOf(init: Buffer, trak: Box): number {
  const tkhd = findChild(init, 'tkhd', trak);
  if (!tkhd) throw new Mp4FormatError('MP4_NO_INIT', 'trak without tkhd');
  const { version, body } = fullBoxBody(init, tkhd, 20);
  return init.readUInt32BE(body + (version === 1 ? 16 : 8));
}

/** A fragment as the range holds it, before the tail is cut. */
interface RawFragment {
  path: string;
  fileBytes?: number;
  /** The file bytes spanning its tracks' sample runs. */
  lo: number;
  hi: number;
  tracks: { t: TrackFragment; outBase: number }[];
}

/** A track's fragments in output order (indexes into the raw fragments). */
interface TrackList {
  id: number;
  frags: { at: number; t: TrackFragment; outBase: number }[];
}

/**
 * Output decode time of each fragment's first sample as stts will say it (the last
 * sample of a fragment is stretched, or shrunk, never below 1 tick, to meet the next
 * fragment), and the track's end. `layout` below writes exactly these durations.
 */
function fragmentStarts(list: readonly { outBase: number; durations: ArrayLike<number>; durationTicks: number }[]): {
  starts: number[];
  lastDurations: Uint32Array;
  end: number;
} {
  const starts: number[] = [];
  const lastDurations = new Uint32Array(list.length);
  let dts = list[0]?.outBase ?? 0;
  list.forEach((f, j) => {
    starts.push(dts);
    const n = f.durations.length;
    let last = f.durations[n - 1]!;
    let end = dts + f.durationTicks;
    const next = list[j + 1];
    if (next) {
      const lastDts = end - last;
      const want = next.outBase - lastDts;
      if (want >= 1 && want !== last) {
        last = want;
        end = next.outBase;
      }
    }
    lastDurations[j] = last;
    dts = end;
  });
  return { starts, lastDurations, end: dts };
}

/** Float noise allowance when comparing tick counts with a cut computed in seconds. */
const CUT_EPSILON = 1e-6;

/**
 * How many samples of each of a track's fragments are kept so nothing is presented at
 * or after `cutSec` (output seconds): the decode-order tail whose presentation time is
 * at or after the cut is dropped, stopping at the first sample from the end that is
 * presented before it. What is kept then only references what is kept (a reference
 * comes before its users in decode order), also with B-frames; a frame presented after
 * the cut that an earlier kept frame needs stays (at most the reorder depth). Players
 * that ignore the edit list's end (Chromium) then stop within a frame of `to`.
 */
function keptCounts(list: TrackList['frags'], starts: number[], timescale: number, cutSec: number): number[] {
  const keep = list.map((f) => f.t.durations.length);
  if (list.length === 0) return keep;
  const ptsZero = list[0]!.t.compositionOffsets[0] ?? 0;
  const cut = cutSec * timescale - CUT_EPSILON;
  for (let j = list.length - 1; j >= 0; j--) {
    const t = list[j]!.t;
    const n = t.durations.length;
    // Decode times of this fragment's samples (the last one's duration does not matter).
    let dts = starts[j]!;
    const dtsOf = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      dtsOf[i] = dts;
      dts += t.durations[i]!;
    }
    let k = n;
    while (k > 0 && dtsOf[k - 1]! + t.compositionOffsets[k - 1]! - ptsZero >= cut) k--;
    keep[j] = k;
    if (k > 0) break;
  }
  return keep;
}

/** Lays out samples and payload slices; pure apart from reading the tables given. */
function collect(req: ProgressiveRequest): { tracks: TrackSamples[]; parts: FilePart[]; payload: number; init: Buffer; endSec: number } {
  const first = req.segments.find((s) => s.fragments.length > 0);
  if (!first) throw new Mp4FormatError('MP4_NO_INIT', 'nothing to serve');
  const init = first.init;
  const info = first.info;
  const moov = childBoxes(init, 0, init.length).find((b) => b.type === 'moov');
  if (!moov) throw new Mp4FormatError('MP4_NO_INIT', 'init without moov');
  const traks = new Map(findAll(init, 'trak', moov).map((t) => [trackIdOf(init, t), t]));
  const timescales = new Map(info.tracks.map((t) => [t.id, t.timescale]));
  const videoId = info.videoTrackId ?? info.tracks[0]!.id;
  const timeline = new OutputTimeline(timescales, videoId);

  // 1. Every fragment on the output timeline, as stored.
  const raw: RawFragment[] = [];
  const lists = new Map<number, TrackList>(info.tracks.map((t) => [t.id, { id: t.id, frags: [] }]));
  for (const seg of req.segments) {
    let shift: ReadonlyMap<number, bigint> = new Map();
    seg.fragments.forEach((frag, i) => {
      if (i === 0) shift = timeline.enterSegment(frag.tracks);
      let lo = Infinity;
      let hi = -Infinity;
      for (const t of frag.tracks) {
        for (const r of t.runs) {
          lo = Math.min(lo, r.fileOffset);
          hi = Math.max(hi, r.fileOffset + r.bytes);
        }
      }
      if (lo < hi) {
        const entry: RawFragment = { path: seg.path, ...(seg.fileBytes !== undefined ? { fileBytes: seg.fileBytes } : {}), lo, hi, tracks: [] };
        for (const t of frag.tracks) {
          const list = lists.get(t.trackId);
          if (!list || t.durations.length === 0) continue; // a track the first init does not have
          const outBase = Number(t.baseDecodeTime + (shift.get(t.trackId) ?? 0n));
          entry.tracks.push({ t, outBase });
          list.frags.push({ at: raw.length, t, outBase });
        }
        raw.push(entry);
      }
      timeline.afterFragment(frag.tracks);
    });
  }

  // 2. The tail presented at or after the end of the presentation (exact `to`) is cut.
  const timing = new Map(
    [...lists.values()].map((l) => [
      l.id,
      fragmentStarts(l.frags.map((f) => ({ outBase: f.outBase, durations: f.t.durations, durationTicks: f.t.durationTicks }))),
    ]),
  );
  const video = lists.get(videoId)?.frags.length ? videoId : ([...lists.values()].find((l) => l.frags.length > 0)?.id ?? videoId);
  const cutSec = timing.get(video)!.end / (timescales.get(video) ?? 1) - req.trimEndMs / 1000;
  const kept = new Map<string, number>(); // `${fragment}:${track}` → samples kept, for cut fragments
  for (const l of lists.values()) {
    const counts = keptCounts(l.frags, timing.get(l.id)!.starts, timescales.get(l.id) ?? 1, cutSec);
    l.frags.forEach((f, j) => {
      if (counts[j]! < f.t.durations.length) kept.set(`${f.at}:${l.id}`, counts[j]!);
    });
  }

  // 3. Payload: whole fragments as they lie in the file; a cut fragment keeps the bytes
  //    of its kept samples only (each track's run prefix).
  const placed = new Map<number, Placed[]>(info.tracks.map((t) => [t.id, []]));
  const parts: FilePart[] = [];
  let payload = 0;
  const addPart = (f: RawFragment, offset: number, length: number): void => {
    const last = parts[parts.length - 1];
    // Neighbouring slices of a file are one contiguous part when they touch.
    if (last && last.path === f.path && last.offset + last.length === offset) last.length += length;
    else parts.push({ path: f.path, offset, length, ...(f.fileBytes !== undefined ? { fileBytes: f.fileBytes } : {}) });
    payload += length;
  };
  raw.forEach((f, at) => {
    const cut = f.tracks.some(({ t }) => kept.has(`${at}:${t.trackId}`));
    if (!cut) {
      for (const { t, outBase } of f.tracks) {
        placed.get(t.trackId)!.push({
          outBase,
          durations: t.durations,
          sizes: t.sizes,
          flags: t.flags,
          ctts: t.compositionOffsets,
          durationTicks: t.durationTicks,
          chunks: t.runs.map((r) => ({ rel: payload + (r.fileOffset - f.lo), count: r.count })),
        });
      }
      addPart(f, f.lo, f.hi - f.lo);
      return;
    }
    // Kept byte ranges of each track's runs, in file order.
    const ranges: { track: number; run: number; offset: number; bytes: number; count: number }[] = [];
    for (const { t } of f.tracks) {
      let left = kept.get(`${at}:${t.trackId}`) ?? t.durations.length;
      let sample = 0;
      t.runs.forEach((r, ri) => {
        const count = Math.min(left, r.count);
        let bytes = 0;
        for (let i = 0; i < count; i++) bytes += t.sizes[sample + i]!;
        if (count > 0) ranges.push({ track: t.trackId, run: ri, offset: r.fileOffset, bytes, count });
        left -= count;
        sample += r.count;
      });
    }
    ranges.sort((a, b) => a.offset - b.offset);
    const rel = new Map<string, number>();
    for (const r of ranges) {
      rel.set(`${r.track}:${r.run}`, payload);
      addPart(f, r.offset, r.bytes);
    }
    for (const { t, outBase } of f.tracks) {
      const k = kept.get(`${at}:${t.trackId}`) ?? t.durations.length;
      if (k === 0) continue;
      const durations = t.durations.subarray(0, k);
      let durationTicks = 0;
      for (let i = 0; i < k; i++) durationTicks += durations[i]!;
      const chunks = ranges.filter((r) => r.track === t.trackId).map((r) => ({ rel: rel.get(`${r.track}:${r.run}`)!, count: r.count }));
      placed.get(t.trackId)!.push({
        outBase,
        durations,
        sizes: t.sizes.subarray(0, k),
        flags: t.flags.subarray(0, k),
        ctts: t.compositionOffsets.subarray(0, k),
        durationTicks,
        chunks,
      });
    }
  });

  const tracks: TrackSamples[] = [];
  for (const t of info.tracks) {
    const list = placed.get(t.id)!;
    const count = list.reduce((n, f) => n + f.durations.length, 0);
    if (count === 0) continue;
    const chunkOffsets: number[] = [];
    const chunkCounts: number[] = [];
    let syncCount = 0;
    let hasCtts = false;
    let negativeCtts = false;
    for (const f of list) {
      const n = f.durations.length;
      const flags = f.flags;
      for (let i = 0; i < n; i++) if (isSyncSample(flags[i]!)) syncCount++;
      if (!negativeCtts) {
        const c = f.ctts;
        for (let i = 0; i < n; i++) {
          if (c[i] !== 0) hasCtts = true;
          if (c[i]! < 0) {
            negativeCtts = true;
            break;
          }
        }
      }
      for (const c of f.chunks) {
        chunkOffsets.push(c.rel);
        chunkCounts.push(c.count);
      }
    }
    const { lastDurations, end } = fragmentStarts(list);
    tracks.push({
      id: t.id,
      timescale: t.timescale,
      kind: t.kind,
      trak: traks.get(t.id)!,
      count,
      frags: list,
      lastDurations,
      syncCount,
      hasCtts,
      negativeCtts,
      chunkOffsets,
      chunkCounts,
      startTicks: list[0]!.outBase,
      endTicks: end,
    });
  }
  return { tracks, parts, payload, init, endSec: cutSec };
}

// ---- boxes ---------------------------------------------------------------------

/** How many runs of equal values `values` holds. */
function runCount(values: ArrayLike<number>): number {
  let runs = 0;
  for (let i = 0; i < values.length; i++) if (i === 0 || values[i] !== values[i - 1]) runs++;
  return runs;
}

/**
 * Runs of equal values over a track's samples (stts: durations with each fragment's
 * last one replaced; ctts: composition offsets), without concatenating the fragments.
 * `write` null: only counts them.
 */
function sampleRuns(
  t: TrackSamples,
  pick: (f: Placed) => ArrayLike<number>,
  last: Uint32Array | null,
  write: ((count: number, value: number) => void) | null,
): number {
  let runs = 0;
  let prev = 0;
  let count = 0;
  t.frags.forEach((f, j) => {
    const values = pick(f);
    const n = values.length;
    for (let i = 0; i < n; i++) {
      const v = last !== null && i === n - 1 ? last[j]! : values[i]!;
      if (count > 0 && v === prev) {
        count++;
        continue;
      }
      if (count > 0) write?.(count, prev);
      runs++;
      prev = v;
      count = 1;
    }
  });
  if (count > 0) write?.(count, prev);
  return runs;
}

function stbl(t: TrackSamples, stsd: Buffer, wide: boolean): BoxNode {
  const boxes: Piece[] = [stsd];
  const durations = (f: Placed): Uint32Array => f.durations;
  const stts = sampleRuns(t, durations, t.lastDurations, null);
  let o = new Out(16 + stts * 8);
  o.full(o.buf.length, 'stts', 0, 0);
  o.u32(stts);
  const out = o;
  sampleRuns(t, durations, t.lastDurations, (count, value) => (out.u32(count), out.u32(value)));
  boxes.push(o.buf);
  if (t.hasCtts) {
    const offsets = (f: Placed): Int32Array => f.ctts;
    const ctts = sampleRuns(t, offsets, null, null);
    const oc = new Out(16 + ctts * 8);
    oc.full(oc.buf.length, 'ctts', t.negativeCtts ? 1 : 0, 0);
    oc.u32(ctts);
    sampleRuns(t, offsets, null, (count, value) => (oc.u32(count), oc.i32(value)));
    boxes.push(oc.buf);
  }
  if (t.syncCount < t.count) {
    o = new Out(16 + t.syncCount * 4);
    o.full(o.buf.length, 'stss', 0, 0);
    o.u32(t.syncCount);
    let k = 1;
    for (const f of t.frags) {
      const flags = f.flags;
      for (let i = 0; i < flags.length; i++, k++) if (isSyncSample(flags[i]!)) o.u32(k);
    }
    boxes.push(o.buf);
  }
  const stsc = runCount(t.chunkCounts);
  o = new Out(16 + stsc * 12);
  o.full(o.buf.length, 'stsc', 0, 0);
  o.u32(stsc);
  const counts = t.chunkCounts;
  for (let i = 0; i < counts.length;) {
    let j = i + 1;
    while (j < counts.length && counts[j] === counts[i]) j++;
    // first chunk (1-based), samples per chunk, description 1
    o.u32(i + 1);
    o.u32(counts[i]!);
    o.u32(1);
    i = j;
  }
  boxes.push(o.buf);
  o = new Out(20);
  o.full(20 + t.count * 4, 'stsz', 0, 0);
  o.u32(0);
  o.u32(t.count);
  const sizes: Leaf = {
    size: t.count * 4,
    // The fragments' sizes copied in place, then one native byte swap: big-endian at memcpy speed.
    write(head, at) {
      let q = at;
      for (const f of t.frags) {
        head.set(new Uint8Array(f.sizes.buffer, f.sizes.byteOffset, f.sizes.byteLength), q);
        q += f.sizes.byteLength;
      }
      head.subarray(at, q).swap32();
    },
  };
  boxes.push(o.buf, sizes);
  const n = t.chunkOffsets.length;
  o = new Out(16 + n * (wide ? 8 : 4));
  o.full(o.buf.length, wide ? 'co64' : 'stco', 0, 0);
  o.u32(n);
  for (const off of t.chunkOffsets) {
    if (wide) o.u64(off);
    else o.u32(off);
  }
  boxes.push(o.buf);
  return box('stbl', ...boxes);
}

interface Edit {
  durationMovie: number;
  mediaTime: number;
}

function elst(edits: Edit[]): BoxNode {
  const o = new Out(16 + edits.length * 20);
  o.full(o.buf.length, 'elst', 1, 0);
  o.u32(edits.length);
  for (const e of edits) {
    o.u64(e.durationMovie);
    if (e.mediaTime < 0) {
      o.u32(0xffffffff);
      o.u32(0xffffffff);
    } else o.u64(e.mediaTime);
    o.u16(1); // media rate 1.0
    o.u16(0);
  }
  return box('edts', o.buf);
}

function tkhd(init: Buffer, t: TrackSamples, durationMovie: number): Buffer {
  const src = findChild(init, 'tkhd', t.trak)!;
  const s = fullBoxBody(init, src, 80);
  const tail = s.body + (s.version === 1 ? 32 : 20); // layer … height (60 bytes)
  const o = new Out(12 + 32 + 60);
  o.full(o.buf.length, 'tkhd', 1, 3); // enabled, in movie
  o.u64(0); // creation, modification: fixed, so the bytes never change
  o.u64(0);
  o.u32(t.id);
  o.u32(0);
  o.u64(durationMovie);
  o.bytes(init.subarray(tail, tail + 60));
  return o.buf;
}

function mdhd(init: Buffer, t: TrackSamples, mdia: Box): Buffer {
  const src = findChild(init, 'mdhd', mdia)!;
  const s = fullBoxBody(init, src, 20);
  const lang = init.readUInt16BE(s.body + (s.version === 1 ? 28 : 16));
  const o = new Out(12 + 32);
  o.full(o.buf.length, 'mdhd', 1, 0);
  o.u64(0);
  o.u64(0);
  o.u32(t.timescale);
  o.u64(t.endTicks - t.startTicks);
  o.u16(lang);
  o.u16(0);
  return o.buf;
}

function mvhd(durationMovie: number, nextTrackId: number): Buffer {
  const o = new Out(12 + 108);
  o.full(o.buf.length, 'mvhd', 1, 0);
  o.u64(0);
  o.u64(0);
  o.u32(MOVIE_TIMESCALE);
  o.u64(durationMovie);
  o.u32(0x00010000); // rate 1.0
  o.u16(0x0100); // volume 1.0
  o.p += 10; // reserved
  for (const v of [0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000]) o.u32(v); // unity matrix
  o.p += 24; // pre_defined
  o.u32(nextTrackId);
  return o.buf;
}

function ftyp(): Buffer {
  const o = new Out(8 + 16);
  o.u32(24);
  o.type('ftyp');
  o.type('isom');
  o.u32(0x200);
  o.type('isom');
  o.type('mp41');
  return o.buf;
}

/** Adds `by` to every stco/co64 entry of a built moov. */
function shiftChunkOffsets(moovBuf: Buffer, by: number): void {
  const moovBox = childBoxes(moovBuf, 0, moovBuf.length)[0]!;
  for (const trak of findAll(moovBuf, 'trak', moovBox)) {
    const stblBox = findBox(moovBuf, 'mdia/minf/stbl', trak)!;
    for (const b of childBoxes(moovBuf, stblBox.offset + stblBox.headerSize, stblBox.offset + stblBox.size)) {
      if (b.type !== 'stco' && b.type !== 'co64') continue;
      const n = moovBuf.readUInt32BE(b.offset + 12);
      let p = b.offset + 16;
      for (let i = 0; i < n; i++) {
        if (b.type === 'stco') {
          moovBuf.writeUInt32BE(moovBuf.readUInt32BE(p) + by, p);
          p += 4;
        } else {
          moovBuf.writeBigUInt64BE(moovBuf.readBigUInt64BE(p) + BigInt(by), p);
          p += 8;
        }
      }
    }
  }
}

/** `endSec`: where the presentation ends (exact `to`), output seconds. */
function moov(init: Buffer, tracks: TrackSamples[], req: ProgressiveRequest, endSec: number, wide: boolean): { moov: BoxNode; durationSec: number } {
  const skipSec = req.skipMs / 1000;
  const durationSec = Math.max(0, endSec - skipSec);
  const durationMovie = Math.round(durationSec * MOVIE_TIMESCALE);
  const traks = tracks.map((t) => {
    const mdia = findChild(init, 'mdia', t.trak)!;
    const minf = findChild(init, 'minf', mdia)!;
    const hdlr = findChild(init, 'hdlr', mdia)!;
    const stsd = findChild(init, 'stsd', findChild(init, 'stbl', minf))!;
    const minfKeep = childBoxes(init, minf.offset + minf.headerSize, minf.offset + minf.size)
      .filter((b) => b.type !== 'stbl')
      .map((b) => slice(init, b));
    // Seconds of this track's media before the presentation start (negative: the track starts later).
    const lead = skipSec - t.startTicks / t.timescale;
    const ptsZero = t.frags[0]!.ctts[0] ?? 0;
    const edits: Edit[] =
      lead >= 0
        ? [{ durationMovie, mediaTime: Math.round(lead * t.timescale) + ptsZero }]
        : [
            { durationMovie: Math.round(-lead * MOVIE_TIMESCALE), mediaTime: -1 },
            { durationMovie: Math.max(0, durationMovie - Math.round(-lead * MOVIE_TIMESCALE)), mediaTime: ptsZero },
          ];
    return box(
      'trak',
      tkhd(init, t, durationMovie),
      elst(edits),
      box('mdia', mdhd(init, t, mdia), slice(init, hdlr), box('minf', ...minfKeep, stbl(t, slice(init, stsd), wide))),
    );
  });
  const nextId = Math.max(...tracks.map((t) => t.id)) + 1;
  return { moov: box('moov', mvhd(durationMovie, nextId), ...traks), durationSec };
}

/** Builds the head (ftyp+moov+mdat header) and the list of file slices. */
export function buildProgressive(req: ProgressiveRequest): ProgressiveLayout {
  const { tracks, parts, payload, init, endSec } = collect(req);
  if (tracks.length === 0) throw new Mp4FormatError('MP4_NO_INIT', 'no samples to serve');
  const ft = ftyp();
  const largeMdat = payload + 8 > 0xffffffff;
  const mdatHeader = largeMdat ? 16 : 8;
  // Chunk offsets are relative to the payload while building (the moov's size does not
  // depend on their values), then shifted by the head's length in place: one build.
  let built = moov(init, tracks, req, endSec, false);
  const wide = ft.length + built.moov.size + mdatHeader + payload > 0xffffffff;
  if (wide) built = moov(init, tracks, req, endSec, true);
  const headLen = ft.length + built.moov.size + mdatHeader;
  const mh = new Out(mdatHeader);
  if (largeMdat) {
    mh.u32(1);
    mh.type('mdat');
    mh.u64(payload + 16);
  } else {
    mh.u32(payload + 8);
    mh.type('mdat');
  }
  const head = Buffer.allocUnsafe(headLen);
  let at = ft.copy(head, 0);
  at = writePiece(built.moov, head, at);
  at += mh.buf.copy(head, at);
  if (at !== headLen) throw new Error(`progressive head ${at} bytes, planned ${headLen}`);
  shiftChunkOffsets(head.subarray(ft.length, ft.length + built.moov.size), headLen);
  return { head, parts, contentLength: headLen + payload, durationSec: built.durationSec };
}

/** Bytes of one positioned read and of one socket write. */
const READ_CHUNK = 256 * 1024;
/** Buffers a piped body cycles through: one in the socket while the next is read. */
const RING = 2;

/**
 * Bytes [start, endInclusive] of the body. Files are opened as the stream reaches
 * them; a file gone or shorter than planned fails the stream (the HTTP layer then
 * aborts the connection: a short body is never passed off as complete).
 *
 * Piped into an HTTP response (what fastify does with a stream payload) the body writes
 * to it directly from RING reused buffers of READ_CHUNK bytes, a buffer being read
 * again only once the socket has taken its bytes (the write's callback), and the next
 * read running while the socket writes the previous one. A client that stops reading
 * holds RING buffers and nothing more. Read any other way (async iteration, 'data'),
 * each chunk is a fresh buffer.
 */
export function progressiveStream(
  layout: ProgressiveLayout,
  start = 0,
  endInclusive = layout.contentLength - 1,
  onError?: (err: unknown, part: FilePart) => unknown,
  views?: PsViews,
): Readable {
  return new ProgressiveBody(layout, start, endInclusive + 1, onError, views);
}

/** Where the body is: the head, then the parts in order, opening their files as needed. */
class BodyCursor {
  private pos: number;
  private part = 0;
  /** Body offset where `parts[part]` starts. */
  private partStart: number;
  private fh: FileHandle | null = null;
  private fhPath = '';

  constructor(
    private readonly layout: ProgressiveLayout,
    start: number,
    private readonly end: number,
    private readonly onError?: (err: unknown, part: FilePart) => unknown,
    private readonly views?: PsViews,
  ) {
    this.pos = start;
    this.partStart = layout.head.length;
  }

  /** Body bytes not yet returned. */
  remaining(): number {
    return Math.max(0, this.end - this.pos);
  }

  /** The rest of the head asked for (a view of the shared head), once; null past it. */
  headSlice(): Buffer | null {
    const head = this.layout.head;
    if (this.pos >= head.length || this.pos >= this.end) return null;
    const slice = head.subarray(this.pos, Math.min(this.end, head.length));
    this.pos += slice.length;
    return slice;
  }

  /**
   * Reads the next bytes of the body into `buf` and returns where they are in it, in
   * body order (empty at the end). Consecutive parts of one file are read with one
   * positioned read spanning them, the bytes between them (their fragments' moofs)
   * included but not returned: one read per buffer, not one per GOP.
   */
  async fill(buf: Buffer): Promise<{ start: number; length: number }[]> {
    const parts = this.layout.parts;
    if (this.pos >= this.end) return [];
    while (this.pos >= this.partStart + parts[this.part]!.length) this.partStart += parts[this.part++]!.length;
    const first = parts[this.part]!;
    const from = first.offset + (this.pos - this.partStart);
    const slices: { start: number; length: number }[] = [];
    // Plan: the parts (or the piece of one) that fit in `buf` from `from`, same file, in file order.
    let pos = this.pos;
    let k = this.part;
    let kStart = this.partStart;
    let to = from;
    while (pos < this.end && k < parts.length) {
      const part = parts[k]!;
      if (k > this.part && (part.path !== first.path || part.offset < to)) break;
      const inPart = pos - kStart;
      const at = part.offset + inPart;
      const n = Math.min(part.length - inPart, this.end - pos, buf.length - (at - from));
      if (n <= 0) break;
      slices.push({ start: at - from, length: n });
      to = at + n;
      pos += n;
      if (inPart + n < part.length) break;
      kStart += part.length;
      k++;
    }
    // The first part always contributes (it starts at `from`): an empty plan before the end would end the body short.
    if (slices.length === 0) throw new Error(`progressive body: nothing to read at ${this.pos} of ${this.end}`);
    try {
      if (this.fhPath !== first.path) {
        await this.close();
        this.fh = await openSegmentFile(first.path, this.views);
        await checkUnchanged(this.fh, first.path, first.fileBytes);
        this.fhPath = first.path;
      }
      const got = await readInto(this.fh!, buf, 0, from, to - from);
      if (got < to - from) throw new Mp4FormatError('MP4_TRUNCATED', `${first.path} ends at ${from + got}, expected ${to}`);
    } catch (err) {
      throw this.onError ? this.onError(err, first) : err;
    }
    this.pos = pos;
    this.part = k;
    this.partStart = kStart;
    return slices;
  }

  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = null;
    this.fhPath = '';
    await fh?.close();
  }
}

class ProgressiveBody extends Readable {
  private readonly cursor: BodyCursor;
  /** The read in progress (a destroy waits for it before closing the file). */
  private inflight: Promise<unknown> | null = null;
  private piped = false;
  /** Wakes a pump waiting for a buffer (a write done, or the body destroyed). */
  private wake: (() => void) | null = null;

  constructor(layout: ProgressiveLayout, start: number, end: number, onError?: (err: unknown, part: FilePart) => unknown, views?: PsViews) {
    super({ highWaterMark: READ_CHUNK });
    this.cursor = new BodyCursor(layout, start, end, onError, views);
  }

  override _read(): void {
    if (this.piped || this.inflight) return;
    const head = this.cursor.headSlice();
    if (head) {
      this.push(head);
      return;
    }
    const buf = Buffer.allocUnsafe(Math.min(READ_CHUNK, this.cursor.remaining()));
    const reading = this.cursor.fill(buf);
    this.inflight = reading;
    reading.then(
      (slices) => {
        this.inflight = null;
        if (slices.length === 0) this.push(null);
        else if (slices.length === 1) this.push(buf.subarray(slices[0]!.start, slices[0]!.start + slices[0]!.length));
        else this.push(Buffer.concat(slices.map((x) => buf.subarray(x.start, x.start + x.length))));
      },
      (err: unknown) => {
        this.inflight = null;
        this.destroy(err as Error);
      },
    );
  }

  /**
   * Into a fresh destination, the body writes itself (see progressiveStream); a body
   * already being read some other way pipes the Readable way.
   */
  override pipe<T extends NodeJS.WritableStream>(dest: T, options?: { end?: boolean }): T {
    if (this.piped || this.readableFlowing !== null || this.readableLength > 0 || this.inflight || this.destroyed) return super.pipe(dest, options);
    this.piped = true;
    this.pump(dest as unknown as Writable, options?.end !== false).catch((err: unknown) => this.destroy(err as Error));
    return dest;
  }

  private async pump(dest: Writable, end: boolean): Promise<void> {
    const head = this.cursor.headSlice();
    if (head) dest.write(head);
    // Made when first needed, no larger than what is left (a small range costs little).
    const free: Buffer[] = [];
    let made = 0;
    const spare = (): Buffer | null => free.pop() ?? (made < RING ? (made++, Buffer.allocUnsafe(Math.min(READ_CHUNK, this.cursor.remaining()))) : null);
    const take = async (): Promise<Buffer | null> => {
      for (;;) {
        if (this.destroyed) return null;
        const buf = spare();
        if (buf) return buf;
        await new Promise<void>((resolve) => (this.wake = resolve));
      }
    };
    type Slices = { start: number; length: number }[];
    const read = (buf: Buffer): Promise<Slices> => {
      const reading = this.cursor.fill(buf);
      this.inflight = reading;
      return reading.finally(() => (this.inflight = null));
    };
    const release =
      (buf: Buffer) =>
      (err?: Error | null): void => {
        if (err) return;
        free.push(buf);
        const wake = this.wake;
        this.wake = null;
        wake?.();
      };
    let buf = await take();
    let slices: Slices = buf ? await read(buf) : [];
    while (buf && slices.length > 0 && !this.destroyed) {
      const owner = buf;
      // The next read (thread pool) runs while this buffer is written (here); a buffer
      // is reused only once the socket has taken all of its bytes (writes complete in
      // order: the last one's callback frees it). Its slices go out as one writev.
      const next = this.cursor.remaining() > 0 ? spare() : null;
      const reading = next ? read(next) : null;
      if (slices.length > 1) dest.cork();
      slices.forEach((x, i) => dest.write(owner.subarray(x.start, x.start + x.length), i === slices.length - 1 ? release(owner) : undefined));
      if (slices.length > 1) dest.uncork();
      if (reading) {
        buf = next;
        slices = await reading;
      } else {
        buf = await take();
        slices = buf ? await read(buf) : [];
      }
    }
    if (this.destroyed) return;
    if (end) dest.end();
    // The Readable side ends too (fastify waits for 'end' to finish the reply).
    this.push(null);
    this.read(0);
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
    const settled = this.inflight
      ? this.inflight.then(
          () => undefined,
          () => undefined,
        )
      : Promise.resolve();
    settled
      .then(() => this.cursor.close())
      .then(
        () => callback(err),
        () => callback(err),
      );
  }
}
