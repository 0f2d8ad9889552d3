/**
 * The duration fields of a fragmented MP4's init (`ftyp`+`moov`): `mvex/mehd` (the
 * whole movie's duration, fragments included), `mvhd` and each `tkhd`, all in the
 * movie timescale. ffmpeg's `empty_moov` init has zeros there and no `mehd`, so players
 * that do not scan the whole file (a pipe, MSE, some hardware players) take the first
 * fragment for the whole: a 30 s segment shown as 2 s.
 *
 * Segment files (storage/segment-writer.ts) start with the session's init plus a
 * `mehd` of reserved size (zero: "not known yet"); at close the writer patches the
 * three fields in place, before the close's fdatasync. An open segment, or one a crash
 * left open, keeps zeros: players then scan it as before. Nothing else in the init
 * changes, so its size, codecKey and every offset after it are the same before and
 * after the patch.
 *
 * What caches or hashes an init must not depend on when it is read (open or closed):
 * `withoutDurations` gives the form with zeros (progressive ETag, the sample-table
 * cache's comparison, inits sent to MSE players); `withDurations` the init of a range
 * of its own length (fmp4 downloads).
 */
import { Mp4FormatError, childBoxes, findAll, findBox, findChild, fullBoxBody, type Box } from './boxes.ts';

export interface DurationField {
  /** Offset of the value in the init. */
  at: number;
  /** 4 or 8 bytes. */
  bytes: 4 | 8;
}

export interface InitDurations {
  movieTimescale: number;
  /** null: the init has no mehd (segments written before it was added, ingest inits). */
  mehd: DurationField | null;
  mvhd: DurationField;
  tracks: { id: number; timescale: number; tkhd: DurationField }[];
}

function moovOf(init: Buffer): Box {
  const moov = childBoxes(init, 0, initEnd(init)).find((b) => b.type === 'moov');
  if (!moov) throw new Mp4FormatError('MP4_NO_INIT', 'init without moov');
  return moov;
}

/** Where the duration fields of `init` are (`init` may run on into fragments: only its moov is read). */
export function initDurations(init: Buffer): InitDurations {
  const moov = moovOf(init);
  const mvhdBox = findChild(init, 'mvhd', moov);
  if (!mvhdBox) throw new Mp4FormatError('MP4_NO_INIT', 'moov without mvhd');
  const mv = fullBoxBody(init, mvhdBox, 20);
  if (mv.version === 1 && mv.end - mv.body < 28) throw new Mp4FormatError('MP4_BAD_BOX', 'mvhd v1 too short');
  const movieTimescale = init.readUInt32BE(mv.body + (mv.version === 1 ? 16 : 8));
  const mvhd: DurationField = mv.version === 1 ? { at: mv.body + 20, bytes: 8 } : { at: mv.body + 12, bytes: 4 };
  const mvex = findChild(init, 'mvex', moov);
  const mehdBox = mvex ? findChild(init, 'mehd', mvex) : undefined;
  let mehd: DurationField | null = null;
  if (mehdBox) {
    const m = fullBoxBody(init, mehdBox, 4);
    if (m.version === 1 && m.end - m.body < 8) throw new Mp4FormatError('MP4_BAD_BOX', 'mehd v1 too short');
    mehd = { at: m.body, bytes: m.version === 1 ? 8 : 4 };
  }
  const tracks = findAll(init, 'trak', moov).map((trak) => {
    const tkhdBox = findChild(init, 'tkhd', trak);
    const mdhdBox = findBox(init, 'mdia/mdhd', trak);
    if (!tkhdBox || !mdhdBox) throw new Mp4FormatError('MP4_NO_INIT', 'trak without tkhd or mdhd');
    const tk = fullBoxBody(init, tkhdBox, 20);
    if (tk.version === 1 && tk.end - tk.body < 32) throw new Mp4FormatError('MP4_BAD_BOX', 'tkhd v1 too short');
    const md = fullBoxBody(init, mdhdBox, 12);
    if (md.version === 1 && md.end - md.body < 20) throw new Mp4FormatError('MP4_BAD_BOX', 'mdhd v1 too short');
    const tkhd: DurationField = tk.version === 1 ? { at: tk.body + 24, bytes: 8 } : { at: tk.body + 16, bytes: 4 };
    return {
      id: init.readUInt32BE(tk.body + (tk.version === 1 ? 16 : 8)),
      timescale: init.readUInt32BE(md.body + (md.version === 1 ? 16 : 8)),
      tkhd,
    };
  });
  if (movieTimescale === 0) throw new Mp4FormatError('MP4_BAD_BOX', 'mvhd timescale 0');
  return { movieTimescale, mehd, mvhd, tracks };
}

/** End of the ftyp+moov at the start of `buf` (the rest may be fragments). */
function initEnd(buf: Buffer): number {
  let p = 0;
  while (p + 8 <= buf.length) {
    const size = buf.readUInt32BE(p);
    const type = buf.toString('latin1', p + 4, p + 8);
    const real = size === 1 && p + 16 <= buf.length ? Number(buf.readBigUInt64BE(p + 8)) : size;
    if (real < 8) break;
    p += real;
    if (type === 'moov') return p;
  }
  return buf.length;
}

/** Bytes of the mehd this module adds: full box v1, 64-bit duration. */
export const MEHD_BYTES = 20;

/**
 * `init` with a `mehd` (version 1, duration 0) as the first box of its `mvex`, the
 * sizes of `mvex` and `moov` grown by MEHD_BYTES; `init` itself when it has one
 * already or has no `mvex` (not a fragmented init: nothing to add).
 */
export function withMehd(init: Buffer): Buffer {
  const moov = moovOf(init);
  const mvex = findChild(init, 'mvex', moov);
  if (!mvex || findChild(init, 'mehd', mvex)) return init;
  const mehd = Buffer.alloc(MEHD_BYTES);
  mehd.writeUInt32BE(MEHD_BYTES, 0);
  mehd.write('mehd', 4, 'latin1');
  mehd.writeUInt32BE(0x01000000, 8); // version 1, flags 0; fragment_duration 0
  const at = mvex.offset + mvex.headerSize;
  const out = Buffer.concat([init.subarray(0, at), mehd, init.subarray(at)]);
  for (const b of [moov, mvex]) {
    if (b.headerSize === 16) out.writeBigUInt64BE(BigInt(b.size + MEHD_BYTES), b.offset + 8);
    else out.writeUInt32BE(b.size + MEHD_BYTES, b.offset);
  }
  return out;
}

/** Per track: its media duration in its own timescale. */
export type TrackDurations = ReadonlyMap<number, number>;

function put(out: Buffer, f: DurationField, value: number): void {
  if (f.bytes === 8) out.writeBigUInt64BE(BigInt(value), f.at);
  else out.writeUInt32BE(Math.min(value, 0xffffffff), f.at);
}

/**
 * The writes that give an init its durations: each `tkhd` its track's, `mvhd` and
 * `mehd` the longest (ISO 14496-12: fragment_duration is the longest track's, in the
 * movie timescale). Tracks without a duration given get 0. Offsets are within `init`.
 */
export function durationPatches(init: Buffer, durations: TrackDurations): { at: number; bytes: Buffer }[] {
  const d = initDurations(init);
  const field = (f: DurationField, value: number): { at: number; bytes: Buffer } => {
    const b = Buffer.alloc(f.bytes);
    put(b, { at: 0, bytes: f.bytes }, value);
    return { at: f.at, bytes: b };
  };
  let longest = 0;
  const out: { at: number; bytes: Buffer }[] = [];
  for (const t of d.tracks) {
    const movie = Math.round(((durations.get(t.id) ?? 0) * d.movieTimescale) / t.timescale);
    longest = Math.max(longest, movie);
    out.push(field(t.tkhd, movie));
  }
  out.push(field(d.mvhd, longest));
  if (d.mehd) out.push(field(d.mehd, longest));
  return out;
}

/** A copy of `init` with `durations` written in (a mehd added first when missing). */
export function withDurations(init: Buffer, durations: TrackDurations): Buffer {
  const out = Buffer.from(withMehd(init));
  for (const p of durationPatches(out, durations)) p.bytes.copy(out, p.at);
  return out;
}

/**
 * `init` with every duration field zero (a copy, or `init` itself when they are zero
 * already): the same bytes whether the segment it came from is open or closed.
 */
export function withoutDurations(init: Buffer): Buffer {
  const d = initDurations(init);
  const fields = [d.mvhd, ...(d.mehd ? [d.mehd] : []), ...d.tracks.map((t) => t.tkhd)];
  if (fields.every((f) => init.subarray(f.at, f.at + f.bytes).every((x) => x === 0))) return init;
  const out = Buffer.from(init);
  for (const f of fields) out.fill(0, f.at, f.at + f.bytes);
  return out;
}

/** Whether two inits are the same bytes but for their duration fields. */
export function sameInitButDurations(a: Buffer, b: Buffer): boolean {
  if (a.length !== b.length) return false;
  if (a.equals(b)) return true;
  try {
    return withoutDurations(a).equals(withoutDurations(b));
  } catch {
    return false;
  }
}
