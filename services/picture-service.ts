/**
 * Pictures behind HTTP and NATS (docs/api/http-pictures.md, docs/pictures.md): write a
 * picture of a camera, read it back by its URL. Validation happens here, before the
 * storage is asked to write: an unknown camera, a bad time or type, bad metadata and a
 * body that is not a whole JPEG are typed errors and store nothing (invariant 7).
 */
import { z } from 'zod';
import type { PictureKey } from '../index/pictures.ts';
import { BadTimeError, NoVideoError, RecorderError, ValidationError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import { iso, parseRangeMs, parseTimeMs, type Clock } from '../lib/time.ts';
import { validate } from '../lib/validate.ts';
import { parsePictureId, pictureId, pictureUrl } from '../pictures/layout.ts';
import type { PictureInput, PictureStorage } from '../pictures/picture-storage.ts';
import { inspectJpeg } from '../pictures/jpeg.ts';
import { PreviewCache, parsePreviewSpec, renderPreview, specKey, type PreviewSpec } from '../pictures/preview.ts';
import type { Part } from '../pictures/multipart.ts';
import { buildZip, type ZipItem } from '../pictures/zip.ts';
import { SIGNATURE_BYTES, signatureOf } from '../pictures/signature.ts';
import type { PictureHit } from '../index/pictures.ts';
import { pictureLockHolds } from '../pictures/cover.ts';
import type { FrameGrabber } from '../playback/frame-grab.ts';
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';

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

/** Pictures one search page answers at most (and by default). */
export const SEARCH_MAX_LIMIT = 1000;
const SEARCH_DEFAULT_LIMIT = 100;
/** Pictures one ZIP holds at most (previews: fewer, each is rendered before the first byte to know its size). */
export const ZIP_MAX_PICTURES = 10_000;
export const ZIP_MAX_PREVIEWS = 2000;

const listOf = z
  .union([z.string().min(1), z.array(z.string().min(1))])
  .transform((v) => (Array.isArray(v) ? v : [v]).flatMap((s) => s.split(',')).filter(Boolean));

const filterSchema = z
  .object({
    camera: listOf.optional(),
    from: z.string().min(1),
    to: z.string().min(1),
    type: listOf.optional(),
    limit: z.coerce.number().int().min(1).max(SEARCH_MAX_LIMIT).optional(),
    after: z.string().min(1).optional(),
    locked: z.enum(['true', 'false']).optional(),
  })
  .strict();

/** Lock one picture (by its URL): until when (absent: until unlocked). */
const lockOneSchema = z.object({ until: z.union([z.string().min(1), z.number()]).optional() }).strict();

/** Lock or unlock in batch: the pictures of cameras over [from, to), optionally of some types. */
const lockBatchSchema = z
  .object({
    camera: listOf,
    from: z.union([z.string().min(1), z.number()]),
    to: z.union([z.string().min(1), z.number()]),
    type: listOf.optional(),
    until: z.union([z.string().min(1), z.number()]).optional(),
  })
  .strict();

const snapshotSchema = z.object({ at: z.string().min(1).optional(), access_token: z.string().optional() }).strict();

/** How long an event's snapshot waits for the event's instant to be recorded and indexed. */
export const EVENT_SNAPSHOT_WAIT_MS = 30_000;
/** A camera's events closer than this to its last snapshot take none (an event flood costs nothing). */
export const EVENT_SNAPSHOT_EVERY_MS = 1000;

/** Pictures one batch lock or unlock touches at most (a larger range: several requests). */
export const LOCK_BATCH_MAX = 100_000;

const similarSchema = z
  .object({
    camera: listOf.optional(),
    from: z.string().min(1).optional(),
    to: z.string().min(1).optional(),
    limit: z.coerce.number().int().min(1).max(100).optional(),
    access_token: z.string().optional(),
  })
  .strict();

const jsonPutSchema = z
  .object({
    camera: z.string().min(1),
    at: z.union([z.string().min(1), z.number()]).optional(),
    type: z
      .string()
      .regex(/^[a-z0-9_-]{1,32}$/)
      .optional(),
    meta: z.record(z.string(), z.string()).optional(),
    data: z.string().min(4).describe('the JPEG, base64'),
  })
  .strict();

/** What a picture search or batch download selects. */
export interface PictureFilter {
  cameras: string[] | null;
  fromMs: number;
  toMs: number;
  types: Set<string> | null;
  meta: Record<string, string> | undefined;
  /** Only locked (true) or unlocked (false) pictures; null: both. */
  locked: boolean | null;
}

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
  /** Present when the picture is locked: until when (null: until unlocked). */
  lockedUntil?: string | null;
}

/** A match of search by image: the picture and its similarity to the query in [0, 1]. */
export type SimilarMatch = PictureView & { score: number };

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

  private frames: FrameGrabber | null = null;
  private eventSnapshots = false;
  /** Per camera: the event instant of its last snapshot, and whether one is waiting. */
  private readonly lastSnapshot = new Map<string, { atMs: number; waiting: boolean }>();
  private stopped = false;

  constructor(
    readonly storage: PictureStorage,
    private readonly requireCamera: (id: string) => { id: string; pool: string },
    private readonly clock: Clock,
    private readonly log: Logger,
    /** Largest picture accepted (RECORDER_PICTURE_MAX_BYTES). */
    readonly maxBytes: number,
    /** The node's preview cache (built by the composition root, node.ts). */
    readonly previews: PreviewCache,
    /** Retention's mutex: a lock change never lands between cover's look at a lock and its removal of the pack. */
    private readonly exclusive: <T>(work: () => Promise<T>) => Promise<T> = (work) => work(),
  ) {}

  /** The node's frame decodes (snapshots come from them); `eventSnapshots`: NVR events take one (RECORDER_EVENT_SNAPSHOTS). */
  attachFrames(frames: FrameGrabber, opts: { eventSnapshots: boolean }): void {
    this.frames = frames;
    this.eventSnapshots = opts.eventSnapshots;
  }

  /** No more event snapshots (the node stops). */
  stop(): void {
    this.stopped = true;
  }

  /**
   * A snapshot on request: the recorded I-frame at or before `at` (default: the newest
   * recorded instant) stored as a picture of type `snapshot`. NO_VIDEO where nothing is
   * recorded.
   */
  async snapshot(cameraId: string, query: Record<string, unknown>): Promise<PictureView> {
    const q = validate(snapshotSchema, query);
    const camera = this.requireCamera(cameraId);
    const atMs = q.at !== undefined ? parseTimeMs(q.at, 'at') : this.newestRecorded(camera.id);
    return this.storeFrame(camera, atMs, 'snapshot', {});
  }

  /**
   * An NVR event a camera records: once the event's instant is recorded and indexed
   * (at most EVENT_SNAPSHOT_WAIT_MS), its I-frame is stored as a picture typed with the
   * event (`meta.event` = the event's type as sent). One at a time per camera and at
   * most one per EVENT_SNAPSHOT_EVERY_MS of event time; never throws (logged).
   */
  eventSnapshot(cameraId: string, type: string, atMs: number): void {
    if (!this.eventSnapshots || !this.frames || this.stopped) return;
    const last = this.lastSnapshot.get(cameraId);
    if (last && (last.waiting || Math.abs(atMs - last.atMs) < EVENT_SNAPSHOT_EVERY_MS)) return;
    const state = { atMs, waiting: true };
    this.lastSnapshot.set(cameraId, state);
    const pictureType = /^[a-z0-9_-]{1,32}$/.test(type) ? type : 'event';
    void (async () => {
      const deadline = this.clock.nowMs() + EVENT_SNAPSHOT_WAIT_MS;
      while (!this.stopped && !this.recordedAt(cameraId, atMs)) {
        if (this.clock.nowMs() > deadline) {
          this.log.warn({ camera: cameraId, at: iso(atMs), type }, 'event snapshot: the event instant was not recorded in time; none taken');
          return;
        }
        await new Promise((r) => setTimeout(r, 500));
      }
      if (this.stopped) return;
      const pic = await this.storeFrame(this.requireCamera(cameraId), atMs, pictureType, { event: type.slice(0, 256) });
      this.log.info({ camera: cameraId, picture: pic.id, type }, 'event snapshot stored');
    })()
      .catch((err: unknown) => this.log.warn({ camera: cameraId, err: (err as Error).message }, 'event snapshot failed'))
      .finally(() => {
        state.waiting = false;
      });
  }

  /** Whether the GOP holding `atMs` is indexed (the segment's committed end is past it). */
  private recordedAt(camera: string, atMs: number): boolean {
    const seg = this.storage.index.segments.inRange(camera, atMs, atMs + 1)[0];
    return seg !== undefined && seg.startMs <= atMs && seg.endMs > atMs;
  }

  /** The last indexed instant of a camera (NO_VIDEO: none). */
  private newestRecorded(camera: string): number {
    const seg = this.storage.index.segments.last(camera);
    if (!seg || seg.endMs <= seg.startMs) throw new NoVideoError(`no video of camera ${camera}`);
    return seg.endMs - 1;
  }

  private async storeFrame(camera: { id: string; pool: string }, atMs: number, type: string, meta: Record<string, string>): Promise<PictureView> {
    if (!this.frames) throw new RecorderError('SHUTTING_DOWN', 'frame decoding is not ready');
    const frame = await this.frames.grab(camera.id, atMs);
    const input: PictureInput = { camera: camera.id, pool: camera.pool, atMs: frame.frameMs, type, bytes: frame.jpeg };
    if (Object.keys(meta).length > 0) input.meta = meta;
    const stored = await this.store(input);
    this.storage.signer.add(stored.key, frame.jpeg);
    return { ...view(stored.key, stored.entry), width: stored.width, height: stored.height };
  }

  /** In a cluster: told of each camera a picture was stored for (the node joins its holders catalog). */
  onStored(hook: (camera: string) => void): void {
    this.storedHook = hook;
  }

  private storedHook: ((camera: string) => void) | null = null;

  private async store(input: PictureInput): Promise<Awaited<ReturnType<PictureStorage['put']>>> {
    const stored = await this.storage.put(input);
    this.storedHook?.(input.camera);
    return stored;
  }

  /**
   * The fewest `copies` (cluster/picture-copies.ts) among the pools of `cameras` (every
   * pool when none is named): how many nodes hold each of their pictures. A camera
   * unknown here counts 1.
   */
  fewestCopies(cameras: readonly string[]): number {
    const pools = this.storage.index.pools;
    if (cameras.length === 0) return Math.min(...pools.list().map((p) => p.copies ?? 1), 3);
    return Math.min(
      ...cameras.map((c) => {
        try {
          return pools.get(this.requireCamera(c).pool)?.copies ?? 1;
        } catch {
          return 1;
        }
      }),
    );
  }

  /** Whether this node stores the picture `id` (a peer asks before passing a request on). */
  has(id: string): boolean {
    const key = parsePictureId(id);
    return key !== null && this.storage.index.pictures.get(key) !== undefined;
  }

  /** Stores `body` (a JPEG) as a picture of `camera` at `at` (default: now). */
  async put(query: Record<string, unknown>, body: unknown): Promise<PictureView> {
    // The JPEG's structure is checked once, by the storage, before anything is written.
    const input = this.input(query, body);
    const stored = await this.store(input);
    this.log.debug({ picture: pictureId(stored.key), bytes: input.bytes.length }, 'picture stored');
    this.storage.signer.add(stored.key, Buffer.from(input.bytes.buffer, input.bytes.byteOffset, input.bytes.length));
    return { ...view(stored.key, stored.entry), width: stored.width, height: stored.height };
  }

  /**
   * Several pictures in one request (multipart/form-data): text fields `camera`, `at`,
   * `type`, `meta.<name>` apply to the picture parts after them (the query gives the
   * first values); each part with a filename or an image/* type is a picture. Every
   * field and picture is checked before any is written, so bad input stores none; the
   * writes are queued together (one fdatasync when they fit one batch).
   */
  async putMany(query: Record<string, unknown>, parts: readonly Part[]): Promise<PictureView[]> {
    const fields: Record<string, unknown> = { ...query };
    const inputs: { query: Record<string, unknown>; body: Buffer; n: number }[] = [];
    parts.forEach((part, n) => {
      if (part.filename !== undefined || part.type?.startsWith('image/') || part.type === 'application/octet-stream') {
        inputs.push({ query: { ...fields }, body: part.data, n });
      } else {
        fields[part.name] = part.data.toString('utf8');
      }
    });
    if (inputs.length === 0) throw new RecorderError('PICTURE_INVALID', 'the multipart body holds no picture part (one with a filename or an image/jpeg type)');
    const checked = inputs.map(({ query: q, body, n }) => {
      try {
        return this.check(q, body);
      } catch (err) {
        if (err instanceof RecorderError) throw new RecorderError(err.code, `part ${n + 1}: ${err.message}`, { details: err.details });
        throw err;
      }
    });
    const stored = await Promise.all(checked.map((c) => this.store(c)));
    stored.forEach((p, i) => this.storage.signer.add(p.key, Buffer.from(checked[i]!.bytes.buffer, checked[i]!.bytes.byteOffset, checked[i]!.bytes.length)));
    return stored.map((p) => ({ ...view(p.key, p.entry), width: p.width, height: p.height }));
  }

  /** `rec.v1.picture.put`: a small picture as base64 in a JSON body (NATS carries ~1 MB a message). */
  async putJson(body: unknown): Promise<PictureView> {
    const b = validate(jsonPutSchema, body);
    const bytes = Buffer.from(b.data, 'base64');
    const query: Record<string, unknown> = {
      camera: b.camera,
      ...(b.at !== undefined ? { at: String(b.at) } : {}),
      ...(b.type !== undefined ? { type: b.type } : {}),
    };
    for (const [k, v] of Object.entries(b.meta ?? {})) query[`meta.${k}`] = v;
    return this.put(query, bytes);
  }

  /**
   * Pictures matching a filter, in time order, one page: `next` is the id to pass as
   * `after` for the following page (null on the last). `visible` says whether the
   * caller may see a camera (its pool); cameras named in the query must be visible.
   */
  search(query: Record<string, unknown>, visible: (camera: string) => boolean): { pictures: PictureView[]; next: string | null } {
    const { filter, limit, after } = this.filter(query, visible);
    const hits = this.storage.search(filter.cameras, filter.fromMs, filter.toMs, limit ?? SEARCH_DEFAULT_LIMIT, this.keep(filter, visible), after);
    const full = hits.length === (limit ?? SEARCH_DEFAULT_LIMIT);
    return { pictures: hits.map((h) => this.lockedView(h.key, h.entry)), next: full ? pictureId(hits[hits.length - 1]!.key) : null };
  }

  /** Locks one picture (cover never removes it while the lock holds); `until` absent: until unlocked. */
  async lock(id: string, body: unknown): Promise<PictureView> {
    const key = this.key(id);
    const b = validate(lockOneSchema, body ?? {});
    const untilMs = this.untilOf(b.until);
    return this.exclusive(async () => {
      const entry = this.storage.entry(key);
      this.assertLockShare([key]);
      await this.storage.index.pictures.lock([key], untilMs);
      this.log.info({ picture: id, untilMs }, 'picture locked');
      return this.lockedView(key, entry);
    });
  }

  /** Removes one picture's lock (a picture without one: answered as it is). */
  async unlock(id: string): Promise<PictureView> {
    const key = this.key(id);
    return this.exclusive(async () => {
      const entry = this.storage.entry(key);
      await this.storage.index.pictures.unlock([key]);
      this.log.info({ picture: id }, 'picture unlocked');
      return this.lockedView(key, entry);
    });
  }

  /** Locks (or with `unlock`, unlocks) every picture of the cameras over [from, to) (and the types given). */
  /** The cameras a batch lock or unlock names (validated as `lockBatch` does; a peer is asked only about these). */
  lockBatchCameras(body: unknown): string[] {
    return [...new Set(validate(lockBatchSchema, body ?? {}).camera)].map((c) => this.requireCamera(c).id);
  }

  async lockBatch(body: unknown, visible: (camera: string) => boolean, unlock: boolean): Promise<{ pictures: number }> {
    const b = validate(lockBatchSchema, body ?? {});
    const cameras = [...new Set(b.camera)].map((c) => this.requireCamera(c).id);
    for (const c of cameras) if (!visible(c)) throw new RecorderError('FORBIDDEN', `no access to camera ${c}`);
    const { fromMs, toMs } = parseRangeMs(String(b.from), String(b.to));
    const untilMs = unlock ? null : this.untilOf(b.until);
    const types = b.type ? new Set(b.type) : null;
    const hits = this.storage.search(cameras, fromMs, toMs, LOCK_BATCH_MAX + 1, types ? (h) => types.has(h.entry.type) : undefined);
    if (hits.length > LOCK_BATCH_MAX) throw new ValidationError(`over ${LOCK_BATCH_MAX} pictures in one batch: narrow the range`);
    const keys = hits.map((h) => h.key);
    const n = await this.exclusive(() => {
      if (unlock) return this.storage.index.pictures.unlock(keys);
      this.assertLockShare(keys);
      return this.storage.index.pictures.lock(keys, untilMs);
    });
    this.log.info({ cameras, fromMs, toMs, pictures: n, unlock }, unlock ? 'pictures unlocked' : 'pictures locked');
    return { pictures: n };
  }

  /**
   * `rec.v1.picture.lock` / `.unlock` (the VMS sees every pool): one picture by `id`, or
   * in batch by `camera`, `from`, `to` (and `type`), as the HTTP routes.
   */
  async lockJson(body: unknown, unlock: boolean): Promise<{ picture: PictureView } | { pictures: number }> {
    const b = (body ?? {}) as Record<string, unknown>;
    if (typeof b.id !== 'string') return this.lockBatch(body, () => true, unlock);
    const { id, ...rest } = b;
    return { picture: unlock ? await this.unlock(id) : await this.lock(id, rest) };
  }

  /**
   * A peer's `pictures.lock-one` (services/cluster-pictures.ts): the lock or unlock of one
   * picture here. A picture not here may be a copy in flight (pulled before the lock,
   * indexed after this request): the change is noted and applied when its copy is
   * indexed (pictures/pending-locks.ts); the peer is still told PICTURE_NOT_FOUND.
   */
  async lockForPeer(req: { id?: unknown; until?: string | number; unlock?: unknown }): Promise<{ picture: PictureView }> {
    const { id, unlock, ...rest } = req;
    try {
      return (await this.lockJson({ id, ...rest }, unlock === true)) as { picture: PictureView };
    } catch (err) {
      const key = typeof id === 'string' ? parsePictureId(id) : null;
      if (!(err instanceof RecorderError && err.code === 'PICTURE_NOT_FOUND' && key)) throw err;
      const change = unlock === true ? { unlock: true as const } : { unlock: false as const, untilMs: this.untilOf(rest.until) };
      // Indexed meanwhile (its copy's commit came between): locked as any picture here.
      if (await this.storage.copies.noteLock(key, change, this.clock.nowMs())) throw err;
      return (await this.lockJson({ id, ...rest }, unlock === true)) as { picture: PictureView };
    }
  }

  /**
   * A pool with a picture quota keeps locks to `maxLockShare` of it, as video's locks are
   * kept to a share of the pool's capacity: locked pictures are never covered, so locks
   * without a bound would leave cover nothing to take. LOCK_SHARE_EXCEEDED when locking
   * `keys` (those not already locked) would pass it; a pool without `pictureCapacityBytes`
   * has no bound. Called under the storage mutex.
   */
  private assertLockShare(keys: readonly PictureKey[]): void {
    const pics = this.storage.index.pictures;
    const nowMs = this.clock.nowMs();
    const adding = new Map<string, number>();
    for (const key of keys) {
      const entry = pics.get(key);
      if (!entry || pictureLockHolds(pics.lockOf(key), nowMs)) continue;
      const pool = pics.pack(entry.pack)?.pool;
      if (pool !== undefined) adding.set(pool, (adding.get(pool) ?? 0) + entry.length);
    }
    for (const [poolId, bytes] of adding) {
      const pool = this.storage.index.pools.get(poolId);
      if (!pool?.pictureCapacityBytes) continue;
      const cap = Math.floor(pool.pictureCapacityBytes * pool.maxLockShare);
      const locked = pics.lockedBytes(poolId, nowMs);
      if (locked + bytes > cap) {
        throw new RecorderError(
          'LOCK_SHARE_EXCEEDED',
          `locking ${bytes} bytes of pictures would make pool ${poolId}'s locked pictures ${locked + bytes} bytes, over ${cap} (maxLockShare ${pool.maxLockShare} of pictureCapacityBytes ${pool.pictureCapacityBytes})`,
          { details: { pool: poolId, lockedBytes: locked, addingBytes: bytes, capBytes: cap } },
        );
      }
    }
  }

  /** A lock's end: a future instant, or null (until unlocked). */
  private untilOf(until: string | number | undefined): number | null {
    if (until === undefined) return null;
    const ms = parseTimeMs(String(until), 'until');
    if (ms <= this.clock.nowMs()) throw new BadTimeError('until must be in the future');
    return ms;
  }

  /** The view of a picture with its lock, when one holds. */
  private lockedView(key: PictureKey, entry: { length: number; type: string; meta?: Record<string, string> }): PictureView {
    const lock = this.storage.index.pictures.lockOf(key);
    const v = view(key, entry);
    if (pictureLockHolds(lock, this.clock.nowMs())) v.lockedUntil = lock!.untilMs === null ? null : iso(lock!.untilMs);
    return v;
  }

  /**
   * The batch download: every picture the filter selects (originals, or the preview the
   * query's preview keys ask for, the same for each) as one stored ZIP of exact length.
   * The same request answers the same bytes (entries in time order, named by id, dated
   * by the picture's time); its ETag is a hash of what it holds.
   */
  async zip(query: Record<string, unknown>, visible: (camera: string) => boolean): Promise<PictureZip> {
    const { entries, spec } = await this.zipEntries(query, visible);
    return zipOf(entries, spec ? specKey(spec) : 'original');
  }

  /**
   * This node's entries of a batch download (each with its size: a preview is rendered
   * to know it, and cached) and the preview asked for; VALIDATION_FAILED past the limit.
   */
  async zipEntries(query: Record<string, unknown>, visible: (camera: string) => boolean): Promise<{ entries: ZipEntry[]; spec: PreviewSpec | null }> {
    const { access_token: _token, scale, width, height, fit, maxBytes, ...rest } = query;
    const previewQuery = Object.fromEntries(Object.entries({ scale, width, height, fit, maxBytes }).filter(([, v]) => v !== undefined));
    const spec = parsePreviewSpec(previewQuery);
    const { filter, limit, after } = this.filter(rest, visible);
    if (limit !== undefined || after !== undefined) throw new ValidationError('limit and after page a search; a ZIP holds every picture of the range');
    const max = zipLimit(spec !== null);
    const hits = this.storage.search(filter.cameras, filter.fromMs, filter.toMs, max + 1, this.keep(filter, visible));
    if (hits.length > max) throw zipTooLarge(spec !== null);
    const entries: ZipEntry[] = [];
    for (const { key, entry } of hits) {
      const etag = this.etag(key, entry);
      const item = { id: pictureId(key), atMs: key[1], seq: key[2], camera: key[0], etag };
      if (!spec) entries.push({ ...item, size: entry.length, load: () => this.storage.read(key, entry) });
      else {
        const size = (await this.preview(key, etag, spec)).length;
        entries.push({ ...item, size, load: () => this.preview(key, etag, spec) });
      }
    }
    return { entries, spec };
  }

  private filter(query: Record<string, unknown>, visible: (camera: string) => boolean): { filter: PictureFilter; limit?: number; after?: PictureKey } {
    const { access_token: _token, ...q0 } = query;
    const { rest, meta } = splitMeta(q0);
    const q = validate(filterSchema, rest);
    const { fromMs, toMs } = parseRangeMs(q.from, q.to);
    let cameras: string[] | null = null;
    if (q.camera) {
      cameras = [...new Set(q.camera)].map((c) => this.requireCamera(c).id);
      for (const c of cameras) if (!visible(c)) throw new RecorderError('FORBIDDEN', `no access to camera ${c}`);
    }
    const out: { filter: PictureFilter; limit?: number; after?: PictureKey } = {
      filter: { cameras, fromMs, toMs, types: q.type ? new Set(q.type) : null, meta, locked: q.locked === undefined ? null : q.locked === 'true' },
    };
    if (q.limit !== undefined) out.limit = q.limit;
    if (q.after !== undefined) out.after = this.key(q.after);
    return out;
  }

  private keep(f: PictureFilter, visible: (camera: string) => boolean): (hit: PictureHit) => boolean {
    const meta = f.meta ? Object.entries(f.meta).map(([k, v]) => [k, v.toLowerCase()] as const) : null;
    return (hit) => {
      if (f.types && !f.types.has(hit.entry.type)) return false;
      if (meta && !meta.every(([k, v]) => hit.entry.meta?.[k]?.toLowerCase() === v)) return false;
      if (f.locked !== null && pictureLockHolds(this.storage.index.pictures.lockOf(hit.key), this.clock.nowMs()) !== f.locked) return false;
      return f.cameras !== null || visible(hit.key[0]);
    };
  }

  /** A write's query and body checked (camera, time, type, metadata, JPEG structure); nothing is written. */
  private check(query: Record<string, unknown>, body: unknown): PictureInput {
    const input = this.input(query, body);
    inspectJpeg(input.bytes);
    return input;
  }

  /** A write's query and body checked (camera, time, type, metadata, a non-empty body); the JPEG's structure is not. */
  private input(query: Record<string, unknown>, body: unknown): PictureInput {
    const { rest, meta } = splitMeta(query);
    const q = validate(putQuerySchema, rest);
    const camera = this.requireCamera(q.camera);
    const now = this.clock.nowMs();
    const atMs = q.at === undefined ? now : parseTimeMs(q.at, 'at');
    if (atMs > now + PICTURE_MAX_FUTURE_MS)
      throw new BadTimeError(`at (${iso(atMs)}) is more than ${PICTURE_MAX_FUTURE_MS / 60_000} min ahead of the recorder's clock`);
    if (!(body instanceof Uint8Array) || body.length === 0)
      throw new RecorderError('PICTURE_INVALID', 'the body must be the picture: a JPEG (Content-Type image/jpeg)');
    return { camera: camera.id, pool: camera.pool, atMs, type: q.type, ...(meta ? { meta } : {}), bytes: body };
  }

  /**
   * Search by image: the stored pictures most like the query JPEG (dHash and colour
   * layout, pictures/signature.ts), best first with their scores (0-1), over an optional
   * camera and time filter. Pictures whose signature is not computed yet are not found.
   */
  async similar(query: Record<string, unknown>, body: unknown, visible: (camera: string) => boolean): Promise<{ matches: SimilarMatch[] }> {
    validate(similarSchema, query);
    return this.similarTo(query, await this.querySignature(body), visible);
  }

  /** The signature of a query picture (the body of `POST /api/pictures/similar`); PICTURE_INVALID when it is not a JPEG. */
  async querySignature(body: unknown): Promise<Buffer> {
    if (!(body instanceof Uint8Array) || body.length === 0) throw new RecorderError('PICTURE_INVALID', 'the body must be the query picture: a JPEG');
    inspectJpeg(body);
    return signatureOf(Buffer.from(body));
  }

  /**
   * This node's pictures most similar to `sig`, best first (what a peer asks with a
   * query picture's signature: the picture itself does not travel).
   */
  similarTo(query: Record<string, unknown>, sig: Uint8Array, visible: (camera: string) => boolean): { matches: SimilarMatch[] } {
    const q = validate(similarSchema, query);
    if (sig.length !== SIGNATURE_BYTES) throw new ValidationError(`a signature is ${SIGNATURE_BYTES} bytes`);
    const fromMs = q.from !== undefined ? parseTimeMs(q.from, 'from') : 0;
    const toMs = q.to !== undefined ? parseTimeMs(q.to, 'to') : Number.MAX_SAFE_INTEGER;
    const cameras = q.camera ? new Set(q.camera.map((c) => this.requireCamera(c).id)) : null;
    for (const c of cameras ?? []) if (!visible(c)) throw new RecorderError('FORBIDDEN', `no access to camera ${c}`);
    const limit = q.limit ?? 10;
    // The in-memory signatures (pictures/signature-index.ts); the index is checked for each match.
    const best = this.storage.signatures.best(Buffer.from(sig), fromMs, toMs, limit, (camera) => (cameras ? cameras.has(camera) : visible(camera)));
    const matches: SimilarMatch[] = [];
    for (const { key, score } of best) {
      const entry = this.storage.index.pictures.get(key);
      if (entry) matches.push({ ...view(key, entry), score: Math.round(score * 1000) / 1000 });
    }
    return { matches };
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
    return { bytes, etag: this.etag(key, entry), view: view(key, entry) };
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
  etag(key: PictureKey, entry = this.storage.entry(key)): string {
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

/** One picture of a batch download: where it sorts, its size, its ETag, and how to load its bytes. */
export interface ZipEntry {
  id: string;
  atMs: number;
  seq: number;
  camera: string;
  size: number;
  etag: string;
  load: () => Promise<Buffer>;
}

export interface PictureZip {
  length: number;
  stream: Readable;
  etag: string;
  count: number;
  /**
   * The nodes judged dead when the ZIP was listed (in a cluster): pictures they stored
   * come from their copies (pools with copies), and what they stored in their last
   * second, not copied yet, may be missing. The route says so in `X-Recorder-Nodes-Down`.
   */
  fromCopiesOf?: string[];
}

/** How many pictures one ZIP may hold (fewer with previews: each is rendered before the first byte). */
export function zipLimit(previews: boolean): number {
  return previews ? ZIP_MAX_PREVIEWS : ZIP_MAX_PICTURES;
}

export function zipTooLarge(previews: boolean): ValidationError {
  return new ValidationError(`over ${zipLimit(previews)} pictures ${previews ? 'with previews ' : ''}in one ZIP: narrow the range or the filter`);
}

/**
 * The ZIP of `entries` (from one node or several): in time order (then seq, then
 * camera), named by id, dated by the picture's time; its ETag a hash of `variant` (the
 * preview asked for) and each entry's id and ETag, so the same pictures give the same
 * bytes and the same ETag whichever node builds it.
 */
export async function zipOf(entries: readonly ZipEntry[], variant: string): Promise<PictureZip> {
  const sorted = [...entries].sort((a, b) => a.atMs - b.atMs || a.seq - b.seq || (a.camera < b.camera ? -1 : a.camera > b.camera ? 1 : 0));
  const hash = createHash('sha256').update(variant);
  const items: ZipItem[] = sorted.map((e) => {
    hash.update(`\n${e.id} ${e.etag}`);
    return { name: `${e.id}.jpg`, mtime: new Date(e.atMs), size: e.size, load: e.load };
  });
  const { length, stream } = await buildZip(items);
  return { length, stream, etag: `"z${hash.digest('hex').slice(0, 32)}"`, count: items.length };
}
