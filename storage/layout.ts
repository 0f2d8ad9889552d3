/**
 * The disk layout (docs/design/architecture.md section 5), in one place:
 *   <data>/index/                                    LMDB
 *   <data>/pools/<pool>/<camera>/<yyyy-mm-dd>/<startMs>.<mp4|ps>
 * The file name carries the segment's wall-clock start, so the index can be rebuilt
 * from the files alone (invariant 1). Ids are restricted to a safe alphabet at the
 * API edge (see ID_PATTERN), so they can be path components.
 */
import { join, relative, sep } from 'node:path';
import { utcDay } from '../lib/time.ts';
import type { SegmentFormat } from '../index/records.ts';

/** Camera and pool ids: safe as a path component and a NATS subject token. */
export const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

export function segmentRelPath(pool: string, camera: string, startMs: number, format: SegmentFormat): string {
  return join('pools', pool, camera, utcDay(startMs), `${startMs}.${format}`);
}

/** `<data>/smart/<camera>/<yyyy-mm-dd>/<startMs>.smart`: a camera's separated smart stream (smart/smart-frame.ts). */
export function smartRelPath(camera: string, startMs: number): string {
  return join('smart', camera, utcDay(startMs), `${startMs}.smart`);
}

export function poolsDir(dataDir: string): string {
  return join(dataDir, 'pools');
}

export interface ParsedSegmentPath {
  pool: string;
  camera: string;
  startMs: number;
  format: SegmentFormat;
}

/** Inverse of segmentRelPath; null for anything that is not a segment file. */
export function parseSegmentRelPath(rel: string): ParsedSegmentPath | null {
  const parts = rel.split(sep);
  if (parts.length !== 5 || parts[0] !== 'pools') return null;
  const [, pool, camera, day, name] = parts as [string, string, string, string, string];
  const m = /^(\d{10,15})\.(mp4|ps)$/.exec(name);
  if (!m || !ID_PATTERN.test(pool) || !ID_PATTERN.test(camera)) return null;
  const startMs = Number(m[1]);
  if (utcDay(startMs) !== day) return null;
  return { pool, camera, startMs, format: m[2] as SegmentFormat };
}

export function toRel(dataDir: string, abs: string): string {
  return relative(dataDir, abs);
}
