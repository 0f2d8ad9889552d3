/**
 * fMP4 for browsers whose MSE cannot take a recording's audio: G.711 (`alaw`/`ulaw`)
 * recorded as it is in PS segments (MP2P cameras, media/ps/ps-live-fmp4.ts) turns up as
 * such a track when the segment is read as fMP4, and Chromium refuses the whole
 * SourceBuffer for it (`isTypeSupported('video/mp4; codecs="avc1.42e01e,alaw"')` is
 * false), video included. The browser routes (/play, WebSocket playback sessions, live
 * view) send such a recording as video only: the init reduced to the video track and
 * each fragment rebuilt with the video's samples (pure; no I/O).
 */
import type { Fmp4Chunk } from './fmp4-splitter.ts';
import { fragmentHeader, NON_SYNC_FLAGS, singleTrackInit, SYNC_FLAGS, type OutSample } from './fmp4-trick.ts';
import { parseInit, type InitInfo } from './init-info.ts';
import { isSyncSample, parseMoof } from './moof.ts';

/**
 * Audio codecs (RFC 6381 strings as init-info gives them) that browsers' MSE takes in
 * MP4: AAC and the other MPEG-4 audio object types, MP3, Opus, FLAC, AC-3/E-AC-3.
 */
export function browserPlaysAudio(codec: string): boolean {
  const c = codec.toLowerCase();
  return c.startsWith('mp4a') || c === 'opus' || c === 'flac' || c === 'ac-3' || c === 'ec-3' || c === 'mp3';
}

/** The audio codecs of an init that browsers cannot play (empty: send it as it is). */
export function unplayableAudio(info: Pick<InitInfo, 'tracks'>): string[] {
  return info.tracks.filter((t) => t.kind === 'audio' && !browserPlaysAudio(t.codec)).map((t) => t.codec);
}

/**
 * Rewrites a live stream's chunks for browsers: a chunk stream whose init has audio a
 * browser cannot play goes out video only (`dropped` names that audio); any other
 * passes as it is. One per stream (it follows the init in force).
 */
export class VideoOnlyFilter {
  /** The audio codecs being left out (empty while the stream passes as it is). */
  dropped: string[] = [];
  private videoId: number | null = null;
  private init: InitInfo | null = null;

  push(chunk: Fmp4Chunk): Fmp4Chunk | null {
    if (chunk.kind === 'init') {
      this.dropped = unplayableAudio(chunk.info);
      const video = chunk.info.tracks.find((t) => t.kind === 'video');
      if (this.dropped.length === 0 || !video) {
        this.dropped = [];
        this.videoId = null;
        return chunk;
      }
      this.videoId = video.id;
      const bytes = singleTrackInit(chunk.bytes, video.id);
      this.init = parseInit(bytes);
      return { kind: 'init', bytes, info: this.init };
    }
    if (this.videoId === null || !this.init) return chunk;
    const video = chunk.moof.tracks.find((t) => t.trackId === this.videoId);
    if (!video || video.sampleCount === 0) return null;
    const bytes = videoOnlyFragment(chunk.bytes, chunk.moofSize, chunk.moof.sequence, video);
    const moofSize = bytes.readUInt32BE(0);
    return { ...chunk, bytes, moofSize, moof: parseMoof(bytes.subarray(0, moofSize), this.init.trexDefaults) };
  }
}

/**
 * One fragment (moof+mdat of `bytes`) rebuilt with one track's samples. The track's
 * runs must be located by data offsets relative to the moof (default-base-is-moof, as
 * our muxer and ffmpeg write fragments).
 */
export function videoOnlyFragment(
  bytes: Buffer,
  moofSize: number,
  sequence: number,
  track: {
    trackId: number;
    baseDecodeTime: bigint;
    durations: number[];
    sizes: number[];
    flags: number[];
    compositionOffsets: number[];
    runs: { dataOffset: number | null; sampleCount: number }[];
  },
): Buffer {
  const samples: OutSample[] = track.durations.map((duration, k) => ({
    duration,
    size: track.sizes[k]!,
    flags: isSyncSample(track.flags[k]!) ? SYNC_FLAGS : NON_SYNC_FLAGS,
    compositionOffset: track.compositionOffsets[k]!,
  }));
  const parts: Buffer[] = [fragmentHeader(sequence, track.trackId, track.baseDecodeTime, samples)];
  let k = 0;
  let at = moofSize + 8;
  for (const run of track.runs) {
    if (run.dataOffset !== null) at = run.dataOffset;
    let n = 0;
    for (let i = 0; i < run.sampleCount; i++) n += track.sizes[k++]!;
    parts.push(bytes.subarray(at, at + n));
    at += n;
  }
  return Buffer.concat(parts);
}
