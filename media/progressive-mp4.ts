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
 * Time: decode times come from media/timeline.ts (segments of one session continue
 * exactly; a gap is skipped, timestamps continue). At each fragment boundary the last
 * sample's duration is stretched to reach the next fragment's decode time, so A/V stay
 * in sync across rebased segments. An edit list per track starts presentation at the
 * exact `from` (inside the first GOP) and ends it at `to`.
 */
import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { openSegmentFile } from './segment-source.ts';
import { Readable } from 'node:stream';
import { Mp4FormatError, childBoxes, findAll, findBox, findChild, fullBoxBody, type Box } from './boxes.ts';
import { isSyncSample } from './moof.ts';
import { checkUnchanged, type SegmentTables } from './sample-table.ts';
import { OutputTimeline } from './timeline.ts';

/** Bump when the bytes produced for the same input change (it is part of the ETag). */
export const PROGRESSIVE_FORMAT_VERSION = 1;
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

/** Strong ETag for a request: format version, init, every fragment and the trims. */
export function progressiveEtag(init: Buffer, slices: { path: string; fragments: { offset: number; size: number }[] }[], skipMs: number, trimEndMs: number): string {
  const h = createHash('sha1').update(`v${PROGRESSIVE_FORMAT_VERSION};${skipMs};${trimEndMs};`).update(init);
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

function box(type: string, ...payload: Buffer[]): Buffer {
  const size = 8 + payload.reduce((n, b) => n + b.length, 0);
  const o = new Out(8);
  o.u32(size);
  o.type(type);
  return Buffer.concat([o.buf, ...payload], size);
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
  durations: Uint32Array;
  sizes: Uint32Array;
  ctts: Int32Array;
  sync: Uint8Array;
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

/** Lays out samples and payload slices; pure apart from reading the tables given. */
function collect(req: ProgressiveRequest): { tracks: TrackSamples[]; parts: FilePart[]; payload: number; init: Buffer } {
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
  const placed = new Map<number, Placed[]>(info.tracks.map((t) => [t.id, []]));
  const parts: FilePart[] = [];
  let payload = 0;

  for (const seg of req.segments) {
    let shift: ReadonlyMap<number, bigint> = new Map();
    seg.fragments.forEach((frag, i) => {
      if (i === 0) shift = timeline.enterSegment(frag.tracks);
      let lo = Infinity;
      let hi = -Infinity;
      for (const t of frag.tracks) for (const r of t.runs) (lo = Math.min(lo, r.fileOffset)), (hi = Math.max(hi, r.fileOffset + r.bytes));
      if (lo < hi) {
        for (const t of frag.tracks) {
          const list = placed.get(t.trackId);
          if (!list || t.durations.length === 0) continue; // a track the first init does not have
          list.push({
            outBase: Number(t.baseDecodeTime + (shift.get(t.trackId) ?? 0n)),
            durations: t.durations,
            sizes: t.sizes,
            flags: t.flags,
            ctts: t.compositionOffsets,
            durationTicks: t.durationTicks,
            chunks: t.runs.map((r) => ({ rel: payload + (r.fileOffset - lo), count: r.count })),
          });
        }
        const last = parts[parts.length - 1];
        // Neighbouring fragments of a file are one contiguous part when their payloads touch.
        if (last && last.path === seg.path && last.offset + last.length === lo) last.length += hi - lo;
        else parts.push({ path: seg.path, offset: lo, length: hi - lo, ...(seg.fileBytes !== undefined ? { fileBytes: seg.fileBytes } : {}) });
        payload += hi - lo;
      }
      timeline.afterFragment(frag.tracks);
    });
  }

  const tracks: TrackSamples[] = [];
  for (const t of info.tracks) {
    const list = placed.get(t.id)!;
    const count = list.reduce((n, f) => n + f.durations.length, 0);
    if (count === 0) continue;
    const durations = new Uint32Array(count);
    const sizes = new Uint32Array(count);
    const ctts = new Int32Array(count);
    const sync = new Uint8Array(count);
    const chunkOffsets: number[] = [];
    const chunkCounts: number[] = [];
    let k = 0;
    let dts = list[0]!.outBase;
    const startTicks = dts;
    list.forEach((f, j) => {
      const n = f.durations.length;
      durations.set(f.durations, k);
      sizes.set(f.sizes, k);
      ctts.set(f.ctts, k);
      for (let i = 0; i < n; i++) sync[k + i] = isSyncSample(f.flags[i]!) ? 1 : 0;
      k += n;
      for (const c of f.chunks) chunkOffsets.push(c.rel), chunkCounts.push(c.count);
      let end = dts + f.durationTicks;
      const next = list[j + 1];
      if (next) {
        // Stretch (or shrink, never below 1 tick) the last sample to meet the next fragment.
        const lastDts = end - durations[k - 1]!;
        const want = next.outBase - lastDts;
        if (want >= 1 && want !== durations[k - 1]) {
          durations[k - 1] = want;
          end = next.outBase;
        }
      }
      dts = end;
    });
    tracks.push({ id: t.id, timescale: t.timescale, kind: t.kind, trak: traks.get(t.id)!, count, durations, sizes, ctts, sync, chunkOffsets, chunkCounts, startTicks, endTicks: dts });
  }
  return { tracks, parts, payload, init };
}

// ---- boxes ---------------------------------------------------------------------

function rle(values: ArrayLike<number>): { count: number; value: number }[] {
  const out: { count: number; value: number }[] = [];
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    const last = out[out.length - 1];
    if (last && last.value === v) last.count++;
    else out.push({ count: 1, value: v });
  }
  return out;
}

function stbl(t: TrackSamples, stsd: Buffer, wide: boolean): Buffer {
  const boxes: Buffer[] = [stsd];
  const stts = rle(t.durations);
  let o = new Out(16 + stts.length * 8);
  o.full(o.buf.length, 'stts', 0, 0);
  o.u32(stts.length);
  for (const e of stts) o.u32(e.count), o.u32(e.value);
  boxes.push(o.buf);
  if (t.ctts.some((c) => c !== 0)) {
    const ctts = rle(t.ctts);
    o = new Out(16 + ctts.length * 8);
    o.full(o.buf.length, 'ctts', t.ctts.some((c) => c < 0) ? 1 : 0, 0);
    o.u32(ctts.length);
    for (const e of ctts) o.u32(e.count), o.i32(e.value);
    boxes.push(o.buf);
  }
  let syncCount = 0;
  for (let i = 0; i < t.count; i++) syncCount += t.sync[i]!;
  if (syncCount < t.count) {
    o = new Out(16 + syncCount * 4);
    o.full(o.buf.length, 'stss', 0, 0);
    o.u32(syncCount);
    for (let i = 0; i < t.count; i++) if (t.sync[i]) o.u32(i + 1);
    boxes.push(o.buf);
  }
  const stsc = rle(t.chunkCounts);
  o = new Out(16 + stsc.length * 12);
  o.full(o.buf.length, 'stsc', 0, 0);
  o.u32(stsc.length);
  let chunk = 1;
  for (const e of stsc) {
    o.u32(chunk), o.u32(e.value), o.u32(1);
    chunk += e.count;
  }
  boxes.push(o.buf);
  o = new Out(20 + t.count * 4);
  o.full(o.buf.length, 'stsz', 0, 0);
  o.u32(0);
  o.u32(t.count);
  // Native byte swap of a copy: the sizes in big-endian order at memcpy speed.
  o.bytes(Buffer.from(new Uint8Array(t.sizes.buffer, t.sizes.byteOffset, t.sizes.byteLength)).swap32());
  boxes.push(o.buf);
  const n = t.chunkOffsets.length;
  o = new Out(16 + n * (wide ? 8 : 4));
  o.full(o.buf.length, wide ? 'co64' : 'stco', 0, 0);
  o.u32(n);
  for (const off of t.chunkOffsets) (wide ? o.u64(off) : o.u32(off));
  boxes.push(o.buf);
  return box('stbl', ...boxes);
}

interface Edit {
  durationMovie: number;
  mediaTime: number;
}

function elst(edits: Edit[]): Buffer {
  const o = new Out(16 + edits.length * 20);
  o.full(o.buf.length, 'elst', 1, 0);
  o.u32(edits.length);
  for (const e of edits) {
    o.u64(e.durationMovie);
    if (e.mediaTime < 0) o.u32(0xffffffff), o.u32(0xffffffff);
    else o.u64(e.mediaTime);
    o.u16(1), o.u16(0); // media rate 1.0
  }
  return box('edts', o.buf);
}

function tkhd(init: Buffer, t: TrackSamples, durationMovie: number): Buffer {
  const src = findChild(init, 'tkhd', t.trak)!;
  const s = fullBoxBody(init, src, 80);
  const tail = s.body + (s.version === 1 ? 32 : 20); // layer … height (60 bytes)
  const o = new Out(12 + 32 + 60);
  o.full(o.buf.length, 'tkhd', 1, 3); // enabled, in movie
  o.u64(0), o.u64(0); // creation, modification: fixed, so the bytes never change
  o.u32(t.id), o.u32(0);
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
  o.u64(0), o.u64(0);
  o.u32(t.timescale);
  o.u64(t.endTicks - t.startTicks);
  o.u16(lang), o.u16(0);
  return o.buf;
}

function mvhd(durationMovie: number, nextTrackId: number): Buffer {
  const o = new Out(12 + 108);
  o.full(o.buf.length, 'mvhd', 1, 0);
  o.u64(0), o.u64(0);
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
  o.u32(24), o.type('ftyp'), o.type('isom'), o.u32(0x200), o.type('isom'), o.type('mp41');
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

function moov(init: Buffer, tracks: TrackSamples[], req: ProgressiveRequest, wide: boolean): { moov: Buffer; durationSec: number } {
  const video = tracks.find((t) => t.kind === 'video') ?? tracks[0]!;
  const skipSec = req.skipMs / 1000;
  const endSec = video.endTicks / video.timescale - req.trimEndMs / 1000;
  const durationSec = Math.max(0, endSec - skipSec);
  const durationMovie = Math.round(durationSec * MOVIE_TIMESCALE);
  const traks = tracks.map((t) => {
    const mdia = findChild(init, 'mdia', t.trak)!;
    const minf = findChild(init, 'minf', mdia)!;
    const hdlr = findChild(init, 'hdlr', mdia)!;
    const stsd = findChild(init, 'stsd', findChild(init, 'stbl', minf)!)!;
    const minfKeep = childBoxes(init, minf.offset + minf.headerSize, minf.offset + minf.size).filter((b) => b.type !== 'stbl').map((b) => slice(init, b));
    // Seconds of this track's media before the presentation start (negative: the track starts later).
    const lead = skipSec - t.startTicks / t.timescale;
    const ptsZero = t.ctts[0] ?? 0;
    const edits: Edit[] =
      lead >= 0
        ? [{ durationMovie, mediaTime: Math.round(lead * t.timescale) + ptsZero }]
        : [
            { durationMovie: Math.round(-lead * MOVIE_TIMESCALE), mediaTime: -1 },
            { durationMovie: Math.max(0, durationMovie - Math.round(-lead * MOVIE_TIMESCALE)), mediaTime: ptsZero },
          ];
    return box('trak', tkhd(init, t, durationMovie), elst(edits), box('mdia', mdhd(init, t, mdia), slice(init, hdlr), box('minf', ...minfKeep, stbl(t, slice(init, stsd), wide))));
  });
  const nextId = Math.max(...tracks.map((t) => t.id)) + 1;
  return { moov: box('moov', mvhd(durationMovie, nextId), ...traks), durationSec };
}

/** Builds the head (ftyp+moov+mdat header) and the list of file slices. */
export function buildProgressive(req: ProgressiveRequest): ProgressiveLayout {
  const { tracks, parts, payload, init } = collect(req);
  if (tracks.length === 0) throw new Mp4FormatError('MP4_NO_INIT', 'no samples to serve');
  const ft = ftyp();
  const largeMdat = payload + 8 > 0xffffffff;
  const mdatHeader = largeMdat ? 16 : 8;
  // Chunk offsets are relative to the payload while building (the moov's size does not
  // depend on their values), then shifted by the head's length in place: one build.
  let built = moov(init, tracks, req, false);
  const wide = ft.length + built.moov.length + mdatHeader + payload > 0xffffffff;
  if (wide) built = moov(init, tracks, req, true);
  const headLen = ft.length + built.moov.length + mdatHeader;
  shiftChunkOffsets(built.moov, headLen);
  const mh = new Out(mdatHeader);
  if (largeMdat) mh.u32(1), mh.type('mdat'), mh.u64(payload + 16);
  else mh.u32(payload + 8), mh.type('mdat');
  const head = Buffer.concat([ft, built.moov, mh.buf]);
  if (head.length !== headLen) throw new Error(`progressive head ${head.length} bytes, planned ${headLen}`);
  return { head, parts, contentLength: headLen + payload, durationSec: built.durationSec };
}

const READ_CHUNK = 256 * 1024;

/**
 * Bytes [start, endInclusive] of the body. Files are opened as the stream reaches
 * them; a file gone or shorter than planned fails the stream (the HTTP layer then
 * aborts the connection: a short body is never passed off as complete).
 */
export function progressiveStream(layout: ProgressiveLayout, start = 0, endInclusive = layout.contentLength - 1, onError?: (err: unknown, part: FilePart) => unknown): Readable {
  return Readable.from(generate(layout, start, endInclusive + 1, onError), { objectMode: false, highWaterMark: READ_CHUNK });
}

async function* generate(layout: ProgressiveLayout, start: number, end: number, onError?: (err: unknown, part: FilePart) => unknown): AsyncGenerator<Buffer> {
  const head = layout.head;
  if (start < head.length) yield head.subarray(start, Math.min(end, head.length));
  let pos = head.length;
  let fh: FileHandle | null = null;
  let fhPath = '';
  try {
    for (const part of layout.parts) {
      const partStart = pos;
      pos += part.length;
      if (pos <= start) continue;
      if (partStart >= end) break;
      let p = Math.max(start - partStart, 0);
      const to = Math.min(end - partStart, part.length);
      try {
        if (fhPath !== part.path) {
          await fh?.close();
          fh = null;
          fh = await openSegmentFile(part.path);
          await checkUnchanged(fh, part.path, part.fileBytes);
          fhPath = part.path;
        }
        while (p < to) {
          const n = Math.min(READ_CHUNK, to - p);
          const buf = Buffer.allocUnsafe(n);
          let done = 0;
          while (done < n) {
            const { bytesRead } = await fh!.read(buf, done, n - done, part.offset + p + done);
            if (bytesRead === 0) throw new Mp4FormatError('MP4_TRUNCATED', `${part.path} ends at ${part.offset + p + done}, expected ${part.offset + to}`);
            done += bytesRead;
          }
          yield buf;
          p += n;
        }
      } catch (err) {
        throw onError ? onError(err, part) : err;
      }
    }
  } finally {
    await fh?.close();
  }
}
