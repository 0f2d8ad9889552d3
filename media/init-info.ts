/**
 * What an init segment (`ftyp`+`moov`) says: its tracks, RFC 6381 codec strings for
 * a player's SourceBuffer, a codecKey telling whether two inits are interchangeable,
 * and the `trex` defaults that fragments rely on. Codec strings and track details come
 * from mp4box (it knows every sample entry); the structure checks, the codecKey and
 * the trex defaults come from our own box reader.
 */
import { createHash } from 'node:crypto';
import { createFile, MP4BoxBuffer, type Movie } from 'mp4box';
import { Mp4FormatError, findAll, findBox, findChild, fullBoxBody, readBoxHeader, type Box } from './boxes.ts';

export interface TrexDefaults {
  sampleDescriptionIndex: number;
  sampleDuration: number;
  sampleSize: number;
  sampleFlags: number;
}

export interface TrackInfo {
  id: number;
  kind: 'video' | 'audio' | 'other';
  timescale: number;
  /** RFC 6381, e.g. avc1.4d401e, hev1.1.6.L93.90, mp4a.40.2 */
  codec: string;
  width?: number;
  height?: number;
  sampleRate?: number;
  channels?: number;
}

export interface InitInfo {
  tracks: TrackInfo[];
  videoTrackId: number | null;
  /** e.g. `video/mp4; codecs="avc1.4d401e,mp4a.40.2"`; names every track, as MSE wants. */
  mimeType: string;
  /**
   * sha1 (hex) of what must match for two inits to be interchangeable: per track its
   * id, handler, timescale, the stsd box bytes and the trex defaults. Creation times,
   * durations and names are left out, so two recordings of one camera config match.
   */
  codecKey: string;
  trexDefaults: Map<number, TrexDefaults>;
}

function u32(buf: Buffer, p: number): number {
  return buf.readUInt32BE(p);
}

function mp4boxMovie(init: Buffer): Movie {
  const file = createFile();
  let movie: Movie | undefined;
  let error: string | undefined;
  file.onReady = (m: Movie) => {
    movie = m;
  };
  file.onError = (_module: string, message: string) => {
    error = message;
  };
  try {
    // A fresh ArrayBuffer holding exactly the init (mp4box reads from its start).
    const ab = new ArrayBuffer(init.byteLength);
    new Uint8Array(ab).set(init);
    file.appendBuffer(MP4BoxBuffer.fromArrayBuffer(ab, 0));
    file.flush();
  } catch (err) {
    throw new Mp4FormatError('MP4_BAD_BOX', `init segment not understood: ${(err as Error).message}`);
  }
  if (!movie) throw new Mp4FormatError('MP4_NO_INIT', `init segment not understood${error ? `: ${error}` : ''}`);
  return movie;
}

function parseTrex(init: Buffer, moov: Box): Map<number, TrexDefaults> {
  const out = new Map<number, TrexDefaults>();
  const mvex = findChild(init, 'mvex', moov);
  if (!mvex) return out;
  for (const trex of findAll(init, 'trex', mvex)) {
    const { body } = fullBoxBody(init, trex, 20);
    out.set(u32(init, body), {
      sampleDescriptionIndex: u32(init, body + 4),
      sampleDuration: u32(init, body + 8),
      sampleSize: u32(init, body + 12),
      sampleFlags: u32(init, body + 16),
    });
  }
  return out;
}

function need(box: Box | undefined, what: string): Box {
  if (!box) throw new Mp4FormatError('MP4_NO_INIT', `trak without ${what}`);
  return box;
}

/**
 * Parses `ftyp`+`moov` (other top-level boxes are ignored; the buffer may run on into
 * fragments). Throws Mp4FormatError: MP4_NO_INIT when there is no ftyp+moov or a track
 * lacks its mandatory boxes, MP4_BAD_BOX / MP4_TRUNCATED on garbage.
 */
export function parseInit(init: Buffer): InitInfo {
  const top = topBoxesUntilMoov(init);
  if (top[0]?.type !== 'ftyp') throw new Mp4FormatError('MP4_NO_INIT', `expected ftyp first, got ${top[0]?.type ?? 'nothing'}`);
  const moov = top.find((b) => b.type === 'moov');
  if (!moov) throw new Mp4FormatError('MP4_NO_INIT', `no moov after ftyp (boxes: ${top.map((b) => b.type).join(',')})`);
  const initBytes = init.subarray(0, moov.offset + moov.size);

  const trexDefaults = parseTrex(init, moov);
  const key = createHash('sha1');
  const raw: { id: number; handler: string; timescale: number; entryType: string; tkhdWidth: number; tkhdHeight: number }[] = [];
  for (const trak of findAll(init, 'trak', moov)) {
    const tkhd = need(findChild(init, 'tkhd', trak), 'tkhd');
    const mdia = need(findChild(init, 'mdia', trak), 'mdia');
    const mdhd = need(findChild(init, 'mdhd', mdia), 'mdhd');
    const hdlr = need(findChild(init, 'hdlr', mdia), 'hdlr');
    const stsd = need(findBox(init, 'minf/stbl/stsd', mdia), 'stsd');

    // tkhd: v0 times are 32-bit (width/height at 72), v1 64-bit (at 84).
    const tk = fullBoxBody(init, tkhd, 80);
    if (tk.version === 1 && tk.end - tk.body < 92) throw new Mp4FormatError('MP4_BAD_BOX', `tkhd v1 too short`);
    const id = u32(init, tk.body + (tk.version === 1 ? 16 : 8));
    const sizeAt = tk.body + (tk.version === 1 ? 84 : 72);
    const md = fullBoxBody(init, mdhd, 12);
    if (md.version === 1 && md.end - md.body < 20) throw new Mp4FormatError('MP4_BAD_BOX', `mdhd v1 too short`);
    const timescale = u32(init, md.body + (md.version === 1 ? 16 : 8));
    const hd = fullBoxBody(init, hdlr, 8);
    const handler = init.toString('latin1', hd.body + 4, hd.body + 8);
    const sd = fullBoxBody(init, stsd, 4);
    const entryType = sd.end - sd.body >= 12 ? init.toString('latin1', sd.body + 8, sd.body + 12) : '';
    if (timescale === 0) throw new Mp4FormatError('MP4_BAD_BOX', `track ${id} has timescale 0`);

    key.update(`track ${id} ${handler} ${timescale}\n`);
    key.update(init.subarray(stsd.offset, stsd.offset + stsd.size));
    const trex = trexDefaults.get(id);
    key.update(trex ? `\ntrex ${trex.sampleDescriptionIndex} ${trex.sampleDuration} ${trex.sampleSize} ${trex.sampleFlags}\n` : '\nno trex\n');
    raw.push({ id, handler, timescale, entryType, tkhdWidth: u32(init, sizeAt) / 65536, tkhdHeight: u32(init, sizeAt + 4) / 65536 });
  }
  if (raw.length === 0) throw new Mp4FormatError('MP4_NO_INIT', 'init has no tracks');

  const movie = mp4boxMovie(initBytes);
  const tracks: TrackInfo[] = raw.map((r) => {
    const t = movie.tracks.find((m) => m.id === r.id);
    const kind: TrackInfo['kind'] = r.handler === 'vide' ? 'video' : r.handler === 'soun' ? 'audio' : 'other';
    const info: TrackInfo = { id: r.id, kind, timescale: r.timescale, codec: t?.codec || r.entryType || 'unknown' };
    if (kind === 'video') {
      info.width = t?.video?.width || Math.round(r.tkhdWidth);
      info.height = t?.video?.height || Math.round(r.tkhdHeight);
    } else if (kind === 'audio' && t?.audio) {
      info.sampleRate = t.audio.sample_rate;
      info.channels = t.audio.channel_count;
    }
    return info;
  });
  const video = tracks.find((t) => t.kind === 'video');
  return {
    tracks,
    videoTrackId: video?.id ?? null,
    mimeType: `${video ? 'video' : tracks.some((t) => t.kind === 'audio') ? 'audio' : 'application'}/mp4; codecs="${tracks.map((t) => t.codec).join(',')}"`,
    codecKey: key.digest('hex'),
    trexDefaults,
  };
}

/** Top-level boxes up to and including the first moov (fragments after it are not read). */
function topBoxesUntilMoov(buf: Buffer): Box[] {
  const out: Box[] = [];
  let p = 0;
  while (p < buf.byteLength) {
    const h = readBoxHeader(buf, p);
    if (!h) throw new Mp4FormatError('MP4_TRUNCATED', `box header cut at ${p}`);
    if (p + h.size > buf.byteLength) throw new Mp4FormatError('MP4_TRUNCATED', `box ${h.type} at ${p} (${h.size} bytes) runs past the data (${buf.byteLength})`);
    out.push({ ...h, offset: p });
    p += h.size;
    if (h.type === 'moov') break;
  }
  return out;
}
