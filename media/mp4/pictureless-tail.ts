/**
 * A fragment whose last video samples hold no picture, only an access unit delimiter,
 * SEI or parameter sets: what ffmpeg writes when a camera's connection drops between
 * the first packet of a frame (its delimiter) and the slices. ffmpeg flushes that
 * stub as a sample at the end of its last fragment, and every decoder then reports
 * "missing picture in access unit". Such samples are dropped here and their duration
 * goes to the sample before them, so the fragment's duration and the timeline after
 * it do not change.
 *
 * Only the tail is looked at: ffmpeg cuts a fragment at the next keyframe, when every
 * frame before it is whole, so a stub can only be the end of the last fragment of a
 * session. A frame cut inside its slices is not found here (no cheap way to see it);
 * a decoder conceals it like any damaged frame.
 */
import { isSliceNal } from '../codec/annexb.ts';
import { sliceSamples, wholeTrack, writeFragment, type FragmentTrack } from './fragment-rewrite.ts';
import type { NalFormat } from './init-info.ts';
import type { MoofInfo, TrafInfo } from './moof.ts';

/** Whether a length-prefixed sample holds at least one slice. A sample whose lengths do not add up is taken as a picture (not ours to judge). */
export function holdsPicture(sample: Uint8Array, nal: NalFormat): boolean {
  const { lengthSize } = nal;
  let p = 0;
  while (p + lengthSize < sample.byteLength) {
    let len = 0;
    for (let i = 0; i < lengthSize; i++) len = len * 256 + sample[p + i]!;
    const at = p + lengthSize;
    if (len === 0 || at + len > sample.byteLength) return true;
    if (isSliceNal(nal.codec, sample.subarray(at, at + 1))) return true;
    p = at + len;
  }
  return p !== sample.byteLength;
}

/**
 * The fragment without the trailing video samples that hold no picture, or null when
 * there are none (the common case: one walk over the last sample's NAL headers). An
 * empty fragment when it held nothing else. When no picture is left but other tracks
 * have samples (audio), the fragment is returned as null, unchanged: its audio is worth
 * more than a clean decode, and a fragment of ffmpeg's always starts at a keyframe, so
 * this does not arise from the cut it is for. A fragment of a shape we do not rewrite
 * (more than one trun) is returned as null, unchanged.
 */
export function dropPicturelessTail(frag: Uint8Array, moof: MoofInfo, videoTrackId: number, nal: NalFormat): Uint8Array | null {
  const video = moof.tracks.find((t) => t.trackId === videoTrackId);
  if (!video || video.sampleCount === 0) return null;
  if (moof.tracks.some((t) => t.sampleCount > 0 && t.runs.length !== 1)) return null;
  const samples = sliceSamples(frag, video);
  let keep = samples.length;
  while (keep > 0 && !holdsPicture(samples[keep - 1]!, nal)) keep--;
  if (keep === samples.length) return null;
  if (keep === 0) return moof.tracks.some((t) => t !== video && t.sampleCount > 0) ? null : new Uint8Array(0);
  const tracks: FragmentTrack[] = moof.tracks.map((t) => (t === video ? trimmed(t, samples, keep) : wholeTrack(frag, t)));
  return writeFragment(moof.sequence, tracks);
}

function trimmed(t: TrafInfo, samples: Uint8Array[], keep: number): FragmentTrack {
  const durations = t.durations.slice(0, keep);
  const dropped = t.durations.slice(keep).reduce((a, b) => a + b, 0);
  durations[keep - 1] = durations[keep - 1]! + dropped;
  return {
    trackId: t.trackId,
    baseDecodeTime: t.baseDecodeTime,
    durations,
    flags: t.flags.slice(0, keep),
    compositionOffsets: t.compositionOffsets.slice(0, keep),
    samples: samples.slice(0, keep),
  };
}
