/**
 * What an init segment (`ftyp`+`moov`) says: tracks, codec strings for a player's
 * SourceBuffer, and a codecKey telling whether two inits are interchangeable. Codec
 * strings come from mp4box (it knows every sample entry); the codecKey and the trex
 * defaults that fragments rely on come from our own box reader.
 */
import { createHash } from 'node:crypto';
import { createFile, Log, MP4BoxBuffer, type Movie } from 'mp4box';
import { Mp4FormatError, childBoxes, dataView, findAll, findBox, type Box } from './boxes.ts';

Log.setLogLevel(Log.error);

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
  /** e.g. `video/mp4; codecs="avc1.4d401e,mp4a.40.2"` */
  mimeType: string;
  /** sha1 of track ids, handlers, timescales and sample descriptions (not times). */
  codecKey: string;
  trexDefaults: Map<number, TrexDefaults>;
}

function mp4boxMovie(init: Buffer): Movie {
  const file = createFile();
  let movie: Movie | undefined;
  let error: string | undefined;
  file.onReady = (m: Movie) => (movie = m);
  file.onError = (_module: string, message: string) => (error = message);
  const ab = init.buffer.slice(init.byteOffset, init.byteOffset + init.byteLength) as ArrayBuffer;
  file.appendBuffer(MP4BoxBuffer.fromArrayBuffer(ab, 0));
  file.flush();
  if (!movie) throw new Mp4FormatError('MP4_NO_INIT', `init segment not understood${error ? `: ${error}` : ''}`);
  return movie;
}

function parseTrex(init: Buffer, moov: Box): Map<number, TrexDefaults> {
  const out = new Map<number, TrexDefaults>();
  const mvex = findAll(init, 'mvex', moov)[0];
  if (!mvex) return out;
  for (const trex of findAll(init, 'trex', mvex)) {
    const v = dataView(init.subarray(trex.offset + trex.headerSize, trex.offset + trex.size));
    out.set(v.getUint32(4), { sampleDescriptionIndex: v.getUint32(8), sampleDuration: v.getUint32(12), sampleSize: v.getUint32(16), sampleFlags: v.getUint32(20) });
  }
  return out;
}

export function parseInit(init: Buffer): InitInfo {
  const top = childBoxes(init);
  if (top[0]?.type !== 'ftyp' || !top.some((b) => b.type === 'moov')) {
    throw new Mp4FormatError('MP4_NO_INIT', `expected ftyp+moov, got ${top.map((b) => b.type).join(',')}`);
  }
  const moov = top.find((b) => b.type === 'moov')!;
  const movie = mp4boxMovie(init);
  const key = createHash('sha1');
  const tracks: TrackInfo[] = [];
  for (const trak of findAll(init, 'trak', moov)) {
    const tkhd = findBox(init, 'tkhd', trak);
    const mdhd = findBox(init, 'mdia/mdhd', trak);
    const hdlr = findBox(init, 'mdia/hdlr', trak);
    const stsd = findBox(init, 'mdia/minf/stbl/stsd', trak);
    if (!tkhd || !mdhd || !hdlr || !stsd) throw new Mp4FormatError('MP4_NO_INIT', 'trak without tkhd/mdhd/hdlr/stsd');
    const tk = dataView(init.subarray(tkhd.offset + tkhd.headerSize));
    const id = tk.getUint8(0) === 1 ? tk.getUint32(20) : tk.getUint32(12);
    const md = dataView(init.subarray(mdhd.offset + mdhd.headerSize));
    const timescale = md.getUint8(0) === 1 ? md.getUint32(20) : md.getUint32(12);
    const handler = init.toString('latin1', hdlr.offset + hdlr.headerSize + 8, hdlr.offset + hdlr.headerSize + 12);
    key.update(`${id}:${handler}:${timescale}:`).update(init.subarray(stsd.offset, stsd.offset + stsd.size));
    const t = movie.tracks.find((m) => m.id === id);
    const kind = handler === 'vide' ? 'video' : handler === 'soun' ? 'audio' : 'other';
    tracks.push({
      id,
      kind,
      timescale,
      codec: t?.codec ?? 'unknown',
      ...(kind === 'video' && t?.video ? { width: t.video.width, height: t.video.height } : {}),
      ...(kind === 'audio' && t?.audio ? { sampleRate: t.audio.sample_rate, channels: t.audio.channel_count } : {}),
    });
  }
  if (tracks.length === 0) throw new Mp4FormatError('MP4_NO_INIT', 'init has no tracks');
  const video = tracks.find((t) => t.kind === 'video');
  const codecs = tracks.filter((t) => t.kind !== 'other').map((t) => t.codec);
  return {
    tracks,
    videoTrackId: video?.id ?? null,
    mimeType: `${video ? 'video' : 'audio'}/mp4; codecs="${codecs.join(',')}"`,
    codecKey: key.digest('hex'),
    trexDefaults: parseTrex(init, moov),
  };
}
