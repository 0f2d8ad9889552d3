/**
 * I-frame thinning of one fragment (seed: frame-extracting storage): the video track
 * keeps only its first sample, the GOP's I-frame, whose duration becomes the whole
 * GOP's so the timeline (tfdt, segment duration, index times) is unchanged; other
 * tracks (audio) are kept as they are, so the segment keeps its codecs and plays and
 * downloads as one stream with unthinned neighbours. Remux only: sample bytes are
 * copied, never decoded, so the kept I-frames are byte-identical to the originals.
 *
 * Input fragments are ffmpeg's (moof with default-base-is-moof, one trun per traf,
 * then one mdat); anything else is refused with MP4_UNSUPPORTED rather than guessed.
 */
import { Mp4FormatError, readBoxHeader } from './boxes.ts';
import type { MoofInfo } from './moof.ts';
import { sliceSamples, wholeTrack, writeFragment, type FragmentTrack } from './fragment-rewrite.ts';

/** Returns the thinned moof+mdat of `frag` (a whole moof+mdat whose moof parsed as `moof`). */
export function thinFragment(frag: Uint8Array, moof: MoofInfo, videoTrackId: number): Uint8Array {
  const moofHeader = readBoxHeader(frag, 0);
  if (!moofHeader || moofHeader.type !== 'moof') throw new Mp4FormatError('MP4_UNEXPECTED_BOX', 'fragment does not start with moof');
  const tracks: FragmentTrack[] = moof.tracks.map((t) => {
    if (t.trackId !== videoTrackId || t.sampleCount <= 1) return wholeTrack(frag, t);
    const samples = sliceSamples(frag, t);
    return {
      trackId: t.trackId,
      baseDecodeTime: t.baseDecodeTime,
      durations: [t.durationTicks],
      flags: [t.flags[0]!],
      compositionOffsets: [t.compositionOffsets[0]!],
      samples: [samples[0]!],
    };
  });
  return writeFragment(moof.sequence, tracks);
}

/** Whether a fragment's video track already holds a single sample (thinned or 1-frame GOP). */
export function isThinned(moof: MoofInfo, videoTrackId: number): boolean {
  const video = moof.tracks.find((t) => t.trackId === videoTrackId);
  return video !== undefined && video.sampleCount <= 1;
}
