/**
 * Errors of the elementary-stream and program-stream layers (Annex B, parameter sets,
 * MPEG-PS). Like Mp4FormatError they carry a stable code; the API edge maps them to a
 * RecorderError (`MEDIA_UNSUPPORTED` for a codec we cannot carry, `MEDIA_CORRUPT` for
 * stored bytes that do not parse).
 */
export type MediaErrorCode =
  /** A NAL unit length runs past its sample, or a length field is cut. */
  | 'NAL_BAD_LENGTH'
  /** A parameter set or decoder configuration record does not parse. */
  | 'BAD_CODEC_CONFIG'
  /** A codec (or sample entry) that MPEG-PS / our muxers do not carry. */
  | 'CODEC_UNSUPPORTED'
  /** A program stream whose structure is broken where it must not be (e.g. no pack header at a GOP offset). */
  | 'PS_BAD_STREAM'
  /** No video parameter sets before the first keyframe, so no init can be built. */
  | 'PS_NO_CONFIG';

export class MediaFormatError extends Error {
  readonly code: MediaErrorCode;
  constructor(code: MediaErrorCode, message: string) {
    super(message);
    this.name = 'MediaFormatError';
    this.code = code;
  }
}
