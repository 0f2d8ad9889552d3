/**
 * Visual signatures for search by image (docs/design/pictures.md "Search by image"):
 * a 64-bit difference hash (dHash: a 9x8 greyscale thumbnail, each bit whether a pixel
 * is brighter than its right neighbour) and a colour layout (the mean RGB of a 2x2 grid,
 * 12 bytes). Both come from one small resize with sharp (JPEG shrink-on-load), survive
 * recompression and resizing, and compare in nanoseconds: a search scans signatures.
 *
 * Stored as 20 bytes: 8 of hash, 12 of colour layout.
 */
import sharp from 'sharp';

export const SIGNATURE_BYTES = 20;
/** The first HASH_BYTES of a signature are the dHash; the score weighs it HASH_WEIGHT, the colour layout the rest. */
export const HASH_BYTES = 8;
export const HASH_WEIGHT = 0.7;

/**
 * One decode per picture: the JPEG is decoded once (shrink-on-load) to a 72x64 sRGB
 * thumbnail, and the 9x8 greyscale and 2x2 colour resizes run on that. Decoding the JPEG
 * once per resize cost twice the entropy decoding, the bulk of a signature.
 */
export async function signatureOf(jpeg: Buffer): Promise<Buffer> {
  const { data, info } = await sharp(jpeg).removeAlpha().toColourspace('srgb').resize(72, 64, { fit: 'fill' }).raw().toBuffer({ resolveWithObject: true });
  const thumb = { raw: { width: info.width, height: info.height, channels: info.channels } } as const;
  const [grey, colour] = await Promise.all([
    sharp(data, thumb).greyscale().resize(9, 8, { fit: 'fill' }).raw().toBuffer(),
    sharp(data, thumb).resize(2, 2, { fit: 'fill' }).raw().toBuffer(),
  ]);
  const out = Buffer.alloc(SIGNATURE_BYTES);
  for (let y = 0; y < 8; y++) {
    let byte = 0;
    for (let x = 0; x < 8; x++) byte = (byte << 1) | (grey[y * 9 + x]! > grey[y * 9 + x + 1]! ? 1 : 0);
    out[y] = byte;
  }
  colour.copy(out, 8, 0, 12);
  return out;
}

export const POPCOUNT = Uint8Array.from({ length: 256 }, (_, i) => {
  let n = 0;
  for (let v = i; v; v >>= 1) n += v & 1;
  return n;
});

/** Similarity in [0, 1]: 0.7 of it from the hash's Hamming distance, 0.3 from the colour layout's distance. */
export function similarity(a: Uint8Array, b: Uint8Array): number {
  let bits = 0;
  for (let i = 0; i < HASH_BYTES; i++) bits += POPCOUNT[a[i]! ^ b[i]!]!;
  let colour = 0;
  for (let i = HASH_BYTES; i < SIGNATURE_BYTES; i++) colour += Math.abs(a[i]! - b[i]!);
  return HASH_WEIGHT * (1 - bits / 64) + (1 - HASH_WEIGHT) * (1 - colour / ((SIGNATURE_BYTES - HASH_BYTES) * 255));
}
