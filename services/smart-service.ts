/**
 * The smart-stream domain functions behind HTTP (api/smart.ts) and NATS
 * (`rec.v1.smart.search`, `rec.v1.smart.next`): search by time and content, jump to
 * the next (or previous) packet of a class/rule/topic, the stats of what was skipped,
 * and the raw separated stream of a range as one resumable body. They read the index
 * and the files only (invariant 6).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { z } from 'zod';
import type { RecorderIndex } from '../index/db.ts';
import type { SmartFilter, SmartHit } from '../index/smart.ts';
import { RecorderError } from '../lib/errors.ts';
import { iso, parseRangeMs, parseTimeMs } from '../lib/time.ts';
import { SMART_FORMAT_VERSION, SMART_KINDS, encodeFileHeader } from '../smart/smart-frame.ts';
import { smartStats, type SmartStats } from '../smart/smart-writer.ts';
import { validate } from './schemas.ts';

export const SMART_SEARCH_DEFAULT_LIMIT = 1000;
export const SMART_SEARCH_MAX_LIMIT = 10000;

const term = z.string().min(1).max(128);
const filterShape = {
  class: term.optional(),
  rule: term.optional(),
  topic: term.optional(),
  kind: z.enum(SMART_KINDS).optional(),
};
const time = z.union([z.string(), z.number()]);
export const smartSearchSchema = z
  .object({
    camera: z.string().min(1).max(64),
    from: time,
    to: time,
    limit: z.coerce.number().int().min(1).max(SMART_SEARCH_MAX_LIMIT).optional(),
    ...filterShape,
  })
  .strict();
export const smartNextSchema = z
  .object({
    camera: z.string().min(1).max(64),
    after: time.optional(),
    before: time.optional(),
    ...filterShape,
  })
  .strict()
  .refine((b) => (b.after === undefined) !== (b.before === undefined), { message: 'give exactly one of after and before' });

export interface SmartRecordView {
  at: string;
  kind: string;
  classes: string[];
  rules: string[];
  topics: string[];
  objects: number;
  /** The time the packet states for itself (ONVIF UtcTime), when it has one. */
  contentTime?: string;
}

export interface SmartRawBody {
  etag: string;
  contentLength: number;
  fromMs: number;
  toMs: number;
  /** Bytes [start, end] (inclusive) of the body. */
  stream(start?: number, end?: number): Readable;
}

function view(h: SmartHit): SmartRecordView {
  const r = h.record;
  return {
    at: iso(h.ms),
    kind: r.kind,
    classes: r.classes ?? [],
    rules: r.rules ?? [],
    topics: r.topics ?? [],
    objects: r.objects ?? 0,
    ...(r.contentMs !== undefined ? { contentTime: iso(r.contentMs) } : {}),
  };
}

function filterOf(q: {
  class?: string | undefined;
  rule?: string | undefined;
  topic?: string | undefined;
  kind?: SmartFilter['kind'] | undefined;
}): SmartFilter {
  return {
    ...(q.class !== undefined ? { class: q.class } : {}),
    ...(q.rule !== undefined ? { rule: q.rule } : {}),
    ...(q.topic !== undefined ? { topic: q.topic } : {}),
    ...(q.kind !== undefined ? { kind: q.kind } : {}),
  };
}

export class SmartService {
  constructor(
    private readonly index: RecorderIndex,
    private readonly dataDir: string,
    private readonly requireCamera: (id: string) => { id: string },
  ) {}

  search(body: unknown): { records: SmartRecordView[]; truncated: boolean } {
    const q = validate(smartSearchSchema, body);
    this.requireCamera(q.camera);
    const { fromMs, toMs } = parseRangeMs(q.from, q.to);
    const { hits, truncated } = this.index.smart.inRange(q.camera, fromMs, toMs, filterOf(q), q.limit ?? SMART_SEARCH_DEFAULT_LIMIT);
    return { records: hits.map(view), truncated };
  }

  /** The next packet after `after` (or the previous before `before`) matching the filter. */
  next(body: unknown): { record: SmartRecordView } {
    const q = validate(smartNextSchema, body);
    this.requireCamera(q.camera);
    const reverse = q.before !== undefined;
    const atMs = reverse ? parseTimeMs(q.before, 'before') : parseTimeMs(q.after, 'after');
    const hit = this.index.smart.next(q.camera, atMs, filterOf(q), reverse);
    if (!hit) throw new RecorderError('NO_SMART_DATA', `no smart-stream packet of camera ${q.camera} ${reverse ? 'before' : 'after'} ${iso(atMs)} matches`);
    return { record: view(hit) };
  }

  stats(camera: string): SmartStats {
    this.requireCamera(camera);
    return smartStats(camera);
  }

  /**
   * The stored packets of [from, to) as one body in the smart file format: a file header
   * (startMs = the first packet's time) then the records exactly as stored. Only
   * committed bytes are used, so the same range gives the same bytes (and ETag) until
   * new packets arrive inside it.
   */
  raw(camera: string, from: unknown, to: unknown): SmartRawBody {
    this.requireCamera(camera);
    const { fromMs, toMs } = parseRangeMs(from, to);
    const parts: { path: string; rel: string; start: number; end: number }[] = [];
    let firstMs: number | null = null;
    let lastMs = fromMs;
    // Records of one file are in time order: the in-range ones are one contiguous span.
    const spans = new Map<number, { start: number; end: number }>();
    for (const h of this.index.smart.inRange(camera, fromMs, toMs, {}, Number.MAX_SAFE_INTEGER).hits) {
      const span = spans.get(h.record.fileMs);
      if (span) span.end = h.record.offset + h.record.size;
      else spans.set(h.record.fileMs, { start: h.record.offset, end: h.record.offset + h.record.size });
      firstMs ??= h.ms;
      lastMs = h.ms;
    }
    for (const f of this.index.smart.filesInRange(camera, fromMs, toMs)) {
      const span = spans.get(f.startMs);
      if (span && span.end <= f.bytes) parts.push({ path: join(this.dataDir, f.file), rel: f.file, ...span });
    }
    if (firstMs === null || parts.length === 0)
      throw new RecorderError('NO_SMART_DATA', `no smart-stream packets of camera ${camera} between ${iso(fromMs)} and ${iso(toMs)}`);
    const header = encodeFileHeader(firstMs);
    const contentLength = header.length + parts.reduce((n, p) => n + p.end - p.start, 0);
    const etag = `"smart${SMART_FORMAT_VERSION}-${createHash('sha1')
      .update(JSON.stringify([camera, firstMs, parts.map((p) => [p.rel, p.start, p.end])]))
      .digest('hex')
      .slice(0, 32)}"`;
    return {
      etag,
      contentLength,
      fromMs: firstMs,
      toMs: lastMs,
      stream(start = 0, end = contentLength - 1) {
        return Readable.from(slices(header, parts, start, end + 1));
      },
    };
  }
}

/** Bytes [from, to) of header + parts, read from the files as they are consumed. */
async function* slices(header: Buffer, parts: { path: string; start: number; end: number }[], from: number, to: number): AsyncGenerator<Buffer> {
  let at = 0;
  const pieces: ({ buf: Buffer } | { path: string; start: number; end: number })[] = [{ buf: header }, ...parts];
  for (const piece of pieces) {
    const len = 'buf' in piece ? piece.buf.length : piece.end - piece.start;
    const lo = Math.max(from, at);
    const hi = Math.min(to, at + len);
    if (lo < hi) {
      if ('buf' in piece) yield piece.buf.subarray(lo - at, hi - at);
      else for await (const chunk of createReadStream(piece.path, { start: piece.start + (lo - at), end: piece.start + (hi - at) - 1 })) yield chunk as Buffer;
    }
    at += len;
    if (at >= to) return;
  }
}
