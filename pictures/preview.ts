/**
 * Previews of a stored picture with the seed's three compressions (docs/pictures.md
 * "Previews"), rendered by sharp (libvips):
 *
 * - percentage: `scale` 1-100, the size as a percentage of the original's;
 * - width / height: `width` and/or `height` with `fit` (sharp's cover, contain, fill,
 *   inside, outside; default inside: within the box, aspect kept);
 * - size: `maxBytes`, the best JPEG quality that fits (binary search over the quality on
 *   one decode; when even quality 1 does not fit, the picture is made smaller until it
 *   does). Alone, an original that already fits is answered as it is.
 *
 * `maxBytes` combines with either of the others (resize first, then fit the bytes).
 * Rendered previews are kept in a bounded LRU (bytes), keyed by the picture's ETag and
 * the canonical spec; concurrent requests for one preview share one render.
 */
import { LRUCache } from 'lru-cache';
import sharp from 'sharp';
import { z } from 'zod';
import { RecorderError } from '../lib/errors.ts';
import { validate } from '../lib/validate.ts';

export const FITS = ['cover', 'contain', 'fill', 'inside', 'outside'] as const;
export type Fit = (typeof FITS)[number];

/** JPEG quality of a resized preview without `maxBytes`. */
const PREVIEW_QUALITY = 80;
/** The highest quality `maxBytes` tries (above it, bytes grow with no visible gain). */
const MAX_QUALITY = 95;
const MAX_SIDE = 16_384;

export interface PreviewSpec {
  scale?: number;
  width?: number;
  height?: number;
  fit?: Fit;
  maxBytes?: number;
}

const specSchema = z
  .object({
    scale: z.coerce.number().int().min(1).max(100).optional(),
    width: z.coerce.number().int().min(1).max(MAX_SIDE).optional(),
    height: z.coerce.number().int().min(1).max(MAX_SIDE).optional(),
    fit: z.enum(FITS).optional(),
    maxBytes: z.coerce
      .number()
      .int()
      .min(500)
      .max(256 * 1024 ** 2)
      .optional(),
  })
  .strict()
  .refine((s) => s.scale === undefined || (s.width === undefined && s.height === undefined), { message: 'scale or width/height, not both' })
  .refine((s) => s.fit === undefined || s.width !== undefined || s.height !== undefined, { message: 'fit needs width and/or height' });

/** The preview asked for by a query (its preview keys only), or null: the original. */
export function parsePreviewSpec(query: Record<string, unknown>): PreviewSpec | null {
  const keys = Object.keys(query);
  if (keys.length === 0) return null;
  const s = validate(specSchema, query);
  const spec: PreviewSpec = {};
  if (s.scale !== undefined) spec.scale = s.scale;
  if (s.width !== undefined) spec.width = s.width;
  if (s.height !== undefined) spec.height = s.height;
  if (s.width !== undefined || s.height !== undefined) spec.fit = s.fit ?? 'inside';
  if (s.maxBytes !== undefined) spec.maxBytes = s.maxBytes;
  return spec;
}

/** The spec as a short canonical string (cache key, ETag suffix, ZIP request key). */
export function specKey(spec: PreviewSpec): string {
  return [
    spec.scale !== undefined ? `s${spec.scale}` : '',
    spec.width !== undefined ? `w${spec.width}` : '',
    spec.height !== undefined ? `h${spec.height}` : '',
    spec.fit !== undefined ? `f${spec.fit}` : '',
    spec.maxBytes !== undefined ? `b${spec.maxBytes}` : '',
  ].join('');
}

interface Resize {
  width?: number;
  height?: number;
  fit: Fit;
}

function resizeOf(spec: PreviewSpec, size: { width: number; height: number }): Resize | null {
  if (spec.scale !== undefined) {
    return { width: Math.max(1, Math.round((size.width * spec.scale) / 100)), height: Math.max(1, Math.round((size.height * spec.scale) / 100)), fit: 'fill' };
  }
  if (spec.width === undefined && spec.height === undefined) return null;
  return {
    ...(spec.width !== undefined ? { width: spec.width } : {}),
    ...(spec.height !== undefined ? { height: spec.height } : {}),
    fit: spec.fit ?? 'inside',
  };
}

/** Renders `spec` of a JPEG of `size`. */
export async function renderPreview(input: Buffer, size: { width: number; height: number }, spec: PreviewSpec): Promise<Buffer> {
  const resize = resizeOf(spec, size);
  try {
    if (spec.maxBytes === undefined) {
      return await sharp(input)
        .resize(resize ?? undefined)
        .jpeg({ quality: PREVIEW_QUALITY })
        .toBuffer();
    }
    if (!resize && input.length <= spec.maxBytes) return input;
    return await fitBytes(input, resize, spec.maxBytes);
  } catch (err) {
    if (err instanceof RecorderError) throw err;
    // A stored picture passed the structure check; libvips may still refuse its data.
    throw new RecorderError('PICTURE_INVALID', `the picture cannot be decoded for a preview: ${(err as Error).message}`, { cause: err });
  }
}

async function fitBytes(input: Buffer, resize: Resize | null, maxBytes: number): Promise<Buffer> {
  let { data, info } = await sharp(input)
    .resize(resize ?? undefined)
    .raw()
    .toBuffer({ resolveWithObject: true });
  for (let round = 0; round < 8; round++) {
    const raw = { width: info.width, height: info.height, channels: info.channels };
    const encode = (quality: number): Promise<Buffer> => sharp(data, { raw }).jpeg({ quality }).toBuffer();
    const top = await encode(MAX_QUALITY);
    if (top.length <= maxBytes) return top;
    const bottom = await encode(1);
    if (bottom.length <= maxBytes) {
      // Invariant: quality `lo` fits (best holds it), `hi` does not.
      let lo = 1;
      let hi = MAX_QUALITY;
      let best = bottom;
      while (hi - lo > 1) {
        const mid = (lo + hi) >> 1;
        const b = await encode(mid);
        if (b.length <= maxBytes) {
          lo = mid;
          best = b;
        } else hi = mid;
      }
      return best;
    }
    // Even quality 1 is too big: fewer pixels, in proportion to the bytes over.
    const factor = Math.min(0.9, Math.sqrt(maxBytes / bottom.length) * 0.95);
    const width = Math.max(1, Math.floor(info.width * factor));
    const height = Math.max(1, Math.floor(info.height * factor));
    if (width < 8 || height < 8) break;
    ({ data, info } = await sharp(data, { raw }).resize(width, height, { fit: 'fill' }).raw().toBuffer({ resolveWithObject: true }));
  }
  throw new RecorderError('VALIDATION_FAILED', `maxBytes ${maxBytes}: no JPEG of this picture is that small`);
}

/** Rendered previews, bounded by bytes; one render per key at a time. */
export class PreviewCache {
  private readonly cache: LRUCache<string, Buffer>;
  private readonly rendering = new Map<string, Promise<Buffer>>();
  /** Renders done (not served from the cache): tests, metrics. */
  renders = 0;

  constructor(readonly maxBytes: number) {
    this.cache = new LRUCache<string, Buffer>({
      maxSize: Math.max(1, maxBytes),
      maxEntrySize: Math.max(1, maxBytes / 4),
      sizeCalculation: (b) => Math.max(1, b.length),
    });
  }

  async get(key: string, render: () => Promise<Buffer>): Promise<Buffer> {
    const hit = this.cache.get(key);
    if (hit) return hit;
    let p = this.rendering.get(key);
    if (!p) {
      this.renders++;
      p = render().finally(() => this.rendering.delete(key));
      this.rendering.set(key, p);
      const done = await p;
      if (this.maxBytes > 0) this.cache.set(key, done);
      return done;
    }
    return p;
  }

  /** Bytes held now. */
  get size(): number {
    return this.cache.calculatedSize;
  }
}
