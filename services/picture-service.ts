/**
 * Pictures behind HTTP and NATS (docs/api/http-pictures.md, docs/pictures.md): write a
 * picture of a camera, read it back by its URL. Validation happens here, before the
 * storage is asked to write: an unknown camera, a bad time or type, bad metadata and a
 * body that is not a whole JPEG are typed errors and store nothing (invariant 7).
 */
import { z } from 'zod';
import type { PictureKey } from '../index/pictures.ts';
import { BadTimeError, RecorderError, ValidationError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import { iso, parseTimeMs, type Clock } from '../lib/time.ts';
import { validate } from '../lib/validate.ts';
import { parsePictureId, pictureId, pictureUrl } from '../pictures/layout.ts';
import type { PictureStorage } from '../pictures/picture-storage.ts';
import { inspectJpeg } from '../pictures/jpeg.ts';
import { PreviewCache, parsePreviewSpec, renderPreview, specKey, type PreviewSpec } from '../pictures/preview.ts';

/** A picture dated further ahead of the recorder's clock than this is refused (a camera's clock gone wrong). */
export const PICTURE_MAX_FUTURE_MS = 60 * 60_000;
const META_MAX_KEYS = 16;
const META_MAX_VALUE = 256;

const putQuerySchema = z
  .object({
    camera: z.string().min(1),
    at: z.string().min(1).optional(),
    type: z
      .string()
      .regex(/^[a-z0-9_-]{1,32}$/, 'lower-case letters, digits, _ and -, at most 32')
      .default('picture'),
  })
  .strict();

export interface PictureView {
  id: string;
  /** Stable URL of the original (relative to the recorder's HTTP address). */
  url: string;
  camera: string;
  at: string;
  seq: number;
  type: string;
  bytes: number;
  width?: number;
  height?: number;
  meta?: Record<string, string>;
}

/** `meta.<name>=<value>` query keys → metadata; the rest is returned for the schema. */
export function splitMeta(query: Record<string, unknown>): { rest: Record<string, unknown>; meta: Record<string, string> | undefined } {
  const rest: Record<string, unknown> = {};
  const meta: Record<string, string> = {};
  let n = 0;
  for (const [k, v] of Object.entries(query)) {
    if (!k.startsWith('meta.')) {
      rest[k] = v;
      continue;
    }
    const name = k.slice(5);
    if (!/^[A-Za-z0-9_-]{1,32}$/.test(name)) throw new ValidationError(`${k}: a metadata name is 1-32 letters, digits, _ or -`);
    if (typeof v !== 'string' || v.length > META_MAX_VALUE) throw new ValidationError(`${k}: one value of at most ${META_MAX_VALUE} characters`);
    if (++n > META_MAX_KEYS) throw new ValidationError(`at most ${META_MAX_KEYS} metadata fields`);
    meta[name] = v;
  }
  return { rest, meta: n > 0 ? meta : undefined };
}

export class PictureService {
  /** Rendered previews (pictures/preview.ts), bounded by RECORDER_PICTURE_PREVIEW_CACHE_BYTES. */
  readonly previews: PreviewCache;

  constructor(
    readonly storage: PictureStorage,
    private readonly requireCamera: (id: string) => { id: string; pool: string },
    private readonly clock: Clock,
    private readonly log: Logger,
    /** Largest picture accepted (RECORDER_PICTURE_MAX_BYTES). */
    readonly maxBytes: number,
    previewCacheBytes: number,
  ) {
    this.previews = new PreviewCache(previewCacheBytes);
  }

  /** Stores `body` (a JPEG) as a picture of `camera` at `at` (default: now). */
  async put(query: Record<string, unknown>, body: unknown): Promise<PictureView> {
    const { rest, meta } = splitMeta(query);
    const q = validate(putQuerySchema, rest);
    const camera = this.requireCamera(q.camera);
    const now = this.clock.nowMs();
    const atMs = q.at === undefined ? now : parseTimeMs(q.at, 'at');
    if (atMs > now + PICTURE_MAX_FUTURE_MS)
      throw new BadTimeError(`at (${iso(atMs)}) is more than ${PICTURE_MAX_FUTURE_MS / 60_000} min ahead of the recorder's clock`);
    if (!(body instanceof Uint8Array) || body.length === 0)
      throw new RecorderError('PICTURE_INVALID', 'the body must be the picture: a JPEG (Content-Type image/jpeg)');
    const stored = await this.storage.put({ camera: camera.id, pool: camera.pool, atMs, type: q.type, ...(meta ? { meta } : {}), bytes: body });
    this.log.debug({ picture: pictureId(stored.key), bytes: body.length }, 'picture stored');
    return { ...view(stored.key, stored.entry), width: stored.width, height: stored.height };
  }

  /** The key of a picture id (PICTURE_NOT_FOUND when it cannot be one). */
  key(id: string): PictureKey {
    const key = parsePictureId(id);
    if (!key) throw new RecorderError('PICTURE_NOT_FOUND', `no picture ${JSON.stringify(id)}: ids are <camera>.<ms>.<seq>`);
    return key;
  }

  /** A picture's original bytes and a strong ETag for them. */
  async original(id: string): Promise<{ bytes: Buffer; etag: string; view: PictureView }> {
    const key = this.key(id);
    const entry = this.storage.entry(key);
    const bytes = await this.storage.read(key, entry);
    return { bytes, etag: this.etag(key), view: view(key, entry) };
  }

  /**
   * A picture as asked for by the query of its URL: the original without preview keys,
   * else a preview (`scale`, `width`/`height`/`fit`, `maxBytes`) with its own ETag.
   * `access_token` (authentication for <img> tags) is not a preview key.
   */
  async read(id: string, query: Record<string, unknown>): Promise<{ bytes: Buffer; etag: string }> {
    const { access_token: _token, ...rest } = query;
    const spec = parsePreviewSpec(rest);
    if (!spec) return this.original(id);
    const key = this.key(id);
    const etag = this.etag(key);
    return { bytes: await this.preview(key, etag, spec), etag: `${etag.slice(0, -1)}-${specKey(spec)}"` };
  }

  /** A picture's preview, from the cache or rendered once. */
  async preview(key: PictureKey, etag: string, spec: PreviewSpec): Promise<Buffer> {
    return this.previews.get(`${etag}|${specKey(spec)}`, async () => {
      const original = await this.storage.read(key);
      return renderPreview(original, inspectJpeg(original), spec);
    });
  }

  /** Unique for these bytes: pack ids are not reused while the pack exists, and its creation time tells a later pack of the same id apart. */
  etag(key: PictureKey): string {
    const entry = this.storage.entry(key);
    const pack = this.storage.pack(entry.pack);
    return `"p${pack ? pack.createdMs.toString(36) : '0'}-${entry.pack}-${entry.offset}"`;
  }
}

export function view(key: PictureKey, entry: { length: number; type: string; meta?: Record<string, string> }): PictureView {
  return {
    id: pictureId(key),
    url: pictureUrl(key),
    camera: key[0],
    at: iso(key[1]),
    seq: key[2],
    type: entry.type,
    bytes: entry.length,
    ...(entry.meta ? { meta: entry.meta } : {}),
  };
}
