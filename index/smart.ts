/**
 * Smart-stream records in the index (docs/design/architecture.md section 5: `smart`), and the queries
 * on them. Two LMDB dbs, opened in index/db.ts:
 *
 *   smart       [cameraId, ms, seq] → SmartRecord: one per stored packet, where it is
 *                                     (file, offset, size) and what it says (classes,
 *                                     rules, topics), so search never scans files.
 *                                     `seq` tells apart packets of the same ms.
 *   smartfiles  [cameraId, startMs] → SmartFileRecord: one per smart file, its
 *                                     committed (durable) bytes and time range.
 *
 * Invariant (as for video, invariant 2): every entry points at bytes that were
 * fdatasync'ed before the entry was committed (smart/smart-writer.ts).
 */
import type { RecorderIndex } from './db.ts';
import type { SmartKind } from '../smart/smart-frame.ts';

export type SmartKey = [string, number, number];

export interface SmartRecord {
  /** startMs of the smart file that holds the packet (key of `smartfiles`). */
  fileMs: number;
  /** Offset of the record (its header) in that file, and header + payload bytes. */
  offset: number;
  size: number;
  kind: SmartKind;
  classes?: string[];
  rules?: string[];
  topics?: string[];
  objects?: number;
  /** The time the packet states for itself (ONVIF Frame/@UtcTime), if any. */
  contentMs?: number;
}

export interface SmartFileRecord {
  camera: string;
  startMs: number;
  /** ms of the last committed record. */
  endMs: number;
  /** Relative to the data dir: smart/<camera>/<yyyy-mm-dd>/<startMs>.smart */
  file: string;
  /** Durable bytes the index covers (header + committed records). */
  bytes: number;
  records: number;
  open: boolean;
}

export interface SmartFilter {
  class?: string;
  rule?: string;
  topic?: string;
  kind?: SmartKind;
}

export interface SmartHit {
  ms: number;
  seq: number;
  record: SmartRecord;
}

const lower = (s: string): string => s.toLowerCase();

/** Class and rule match whole words, case-insensitive; topic matches any part of a topic. */
export function matches(r: SmartRecord, f: SmartFilter): boolean {
  if (f.kind !== undefined && r.kind !== f.kind) return false;
  if (f.class !== undefined && !(r.classes ?? []).some((c) => lower(c) === lower(f.class!))) return false;
  if (f.rule !== undefined && !(r.rules ?? []).some((c) => lower(c) === lower(f.rule!))) return false;
  if (f.topic !== undefined && !(r.topics ?? []).some((c) => lower(c).includes(lower(f.topic!)))) return false;
  return true;
}

/** Packets of `camera` with fromMs <= ms < toMs matching `filter`, in time order, at most `limit`. */
export function smartInRange(index: RecorderIndex, camera: string, fromMs: number, toMs: number, filter: SmartFilter, limit: number): { hits: SmartHit[]; truncated: boolean } {
  const hits: SmartHit[] = [];
  for (const { key, value } of index.smart.getRange({ start: [camera, fromMs, -1], end: [camera, toMs, -1] })) {
    if (!matches(value, filter)) continue;
    if (hits.length === limit) return { hits, truncated: true };
    hits.push({ ms: key[1], seq: key[2], record: value });
  }
  return { hits, truncated: false };
}

/** The first matching packet strictly after `afterMs` (or, with `reverse`, strictly before). */
export function smartNext(index: RecorderIndex, camera: string, atMs: number, filter: SmartFilter, reverse = false): SmartHit | null {
  const range = reverse
    ? { start: [camera, atMs, -1] as SmartKey, end: [camera, -1, -1] as SmartKey, reverse: true }
    : { start: [camera, atMs + 1, -1] as SmartKey, end: [camera, Number.MAX_SAFE_INTEGER, -1] as SmartKey };
  for (const { key, value } of index.smart.getRange(range)) {
    if (matches(value, filter)) return { ms: key[1], seq: key[2], record: value };
  }
  return null;
}

/** Smart files of `camera` that may hold packets in [fromMs, toMs), in time order. */
export function smartFilesInRange(index: RecorderIndex, camera: string, fromMs: number, toMs: number): SmartFileRecord[] {
  const out: SmartFileRecord[] = [];
  for (const { value } of index.smartfiles.getRange({ start: [camera, fromMs], end: [camera, -1], reverse: true, limit: 1 })) {
    if (value.camera === camera && value.endMs >= fromMs) out.push(value);
  }
  for (const { value } of index.smartfiles.getRange({ start: [camera, fromMs], end: [camera, toMs] })) {
    if (out.length > 0 && out[out.length - 1]!.startMs === value.startMs) continue;
    out.push(value);
  }
  return out;
}

/** The newest key of `camera` (a new writer continues after it, keeping keys ordered). */
export function lastSmartKey(index: RecorderIndex, camera: string): SmartKey | null {
  for (const { key } of index.smart.getRange({ start: [camera, Number.MAX_SAFE_INTEGER, 0], end: [camera, -1, -1], reverse: true, limit: 1 })) {
    if (key[0] === camera) return key;
  }
  return null;
}
