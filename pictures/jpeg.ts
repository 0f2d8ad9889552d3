/**
 * Whether a body is a whole JPEG, read from its structure alone (no decode: a write
 * path of 1000+ pictures/s cannot afford one). Walks the markers from SOI to the first
 * SOS, takes the size from the frame header (SOF), and requires the end-of-image
 * marker at the end (trailing zero padding, which some cameras add, is allowed).
 *
 * Errors: PICTURE_INVALID "not a JPEG" (no SOI), "truncated JPEG" (a marker segment
 * runs past the end, or no EOI at the end), "JPEG without a frame header" (SOS before
 * any SOF), "JPEG of size 0" (a SOF of zero width or height).
 */
import { RecorderError } from '../lib/errors.ts';

export interface JpegInfo {
  width: number;
  height: number;
}

function invalid(message: string): RecorderError {
  return new RecorderError('PICTURE_INVALID', message);
}

/** SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC): they carry the frame size. */
function isSof(marker: number): boolean {
  return marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
}

/** The picture's size; throws PICTURE_INVALID when `buf` is not a whole JPEG. */
export function inspectJpeg(buf: Uint8Array): JpegInfo {
  if (buf.length < 4 || buf[0] !== 0xff || buf[1] !== 0xd8 || buf[2] !== 0xff) throw invalid('not a JPEG (no start-of-image marker)');
  let i = 2;
  let size: JpegInfo | null = null;
  for (;;) {
    if (i + 1 >= buf.length) throw invalid('truncated JPEG (ends inside its headers)');
    if (buf[i] !== 0xff) throw invalid(`not a JPEG (no marker at byte ${i})`);
    let marker = buf[i + 1]!;
    // Fill bytes: any number of 0xFF before a marker.
    while (marker === 0xff) {
      i++;
      if (i + 1 >= buf.length) throw invalid('truncated JPEG (ends inside its headers)');
      marker = buf[i + 1]!;
    }
    i += 2;
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) continue; // no length
    if (marker === 0xd9) throw invalid('JPEG ends before its image data');
    if (i + 2 > buf.length) throw invalid('truncated JPEG (ends inside its headers)');
    const len = (buf[i]! << 8) | buf[i + 1]!;
    if (len < 2 || i + len > buf.length) throw invalid('truncated JPEG (a header runs past the end)');
    if (isSof(marker)) {
      if (len < 7) throw invalid('JPEG frame header too short');
      const height = (buf[i + 3]! << 8) | buf[i + 4]!;
      const width = (buf[i + 5]! << 8) | buf[i + 6]!;
      if (width === 0 || height === 0) throw invalid(`JPEG of size ${width}x${height}`);
      size = { width, height };
    }
    if (marker === 0xda) {
      if (!size) throw invalid('JPEG without a frame header before its image data');
      break;
    }
    i += len;
  }
  let end = buf.length - 1;
  while (end > i && buf[end] === 0) end--;
  if (buf[end] !== 0xd9 || buf[end - 1] !== 0xff) throw invalid('truncated JPEG (no end-of-image marker)');
  return size;
}
