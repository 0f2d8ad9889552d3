/**
 * Smart-stream records in the index (docs/design/architecture.md section 5: `smart`),
 * and the store that reads and writes them. Two LMDB dbs (index/tables.ts):
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
import type { SmartFileRecord, SmartKey, SmartKind, SmartRecord } from './records.ts';
import { first, type SegKey, type Tables } from './tables.ts';

export { SMART_KINDS, type SmartFileRecord, type SmartKey, type SmartKind, type SmartRecord } from './records.ts';

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

export class SmartStore {
  constructor(private readonly t: Tables) {}

  /**
   * Packets appended to a smart file and the file's entry (bytes, records, end) in one
   * commit: the entry never counts packets the index does not have, nor the reverse.
   */
  async putPackets(file: SmartFileRecord, packets: readonly { key: SmartKey; value: SmartRecord }[]): Promise<void> {
    for (const { key, value } of packets) void this.t.smart.put(key, value);
    await this.t.commit(this.t.smartfiles.put([file.camera, file.startMs], { ...file }));
  }

  /** A smart file's entry (closed, or its bytes after a recovery). */
  async putFile(file: SmartFileRecord): Promise<void> {
    await this.t.commit(this.t.smartfiles.put([file.camera, file.startMs], { ...file }));
  }

  /** A smart file's entry and every packet it holds, in one commit (smart/smart-retention.ts). */
  async removeFile(file: SmartFileRecord): Promise<void> {
    const { camera } = file;
    await this.t.commit(
      this.t.root.transaction(() => {
        for (const { key, value } of this.t.smart.getRange({ start: [camera, file.startMs - 1000, -1], end: [camera, file.endMs + 1, -1] })) {
          if (value.fileMs === file.startMs) void this.t.smart.remove(key);
        }
        void this.t.smartfiles.remove([camera, file.startMs]);
      }),
    );
  }

  /** Smart files of `camera` that start in [fromMs, toMs), in time order. */
  filesStartingIn(camera: string, fromMs: number, toMs: number): SmartFileRecord[] {
    return [...this.t.smartfiles.getRange({ start: [camera, fromMs], end: [camera, toMs] })].map((e) => e.value);
  }

  /** Smart files of `camera` that may hold packets in [fromMs, toMs), in time order. */
  filesInRange(camera: string, fromMs: number, toMs: number): SmartFileRecord[] {
    const out: SmartFileRecord[] = [];
    const before = first(this.t.smartfiles, { start: [camera, fromMs], end: [camera, -1], reverse: true });
    if (before && before.value.camera === camera && before.value.endMs >= fromMs) out.push(before.value);
    for (const { value } of this.t.smartfiles.getRange({ start: [camera, fromMs], end: [camera, toMs] })) {
      if (out.length > 0 && out[out.length - 1]!.startMs === value.startMs) continue;
      out.push(value);
    }
    return out;
  }

  /** Packets of `camera` with fromMs <= ms < toMs matching `filter`, in time order, at most `limit`. */
  inRange(camera: string, fromMs: number, toMs: number, filter: SmartFilter, limit: number): { hits: SmartHit[]; truncated: boolean } {
    const hits: SmartHit[] = [];
    for (const { key, value } of this.t.smart.getRange({ start: [camera, fromMs, -1], end: [camera, toMs, -1] })) {
      if (!matches(value, filter)) continue;
      if (hits.length === limit) return { hits, truncated: true };
      hits.push({ ms: key[1], seq: key[2], record: value });
    }
    return { hits, truncated: false };
  }

  /** The first matching packet strictly after `atMs` (or, with `reverse`, strictly before it). */
  next(camera: string, atMs: number, filter: SmartFilter, reverse = false): SmartHit | null {
    const range = reverse
      ? { start: [camera, atMs, -1] as SmartKey, end: [camera, -1, -1] as SmartKey, reverse: true }
      : { start: [camera, atMs + 1, -1] as SmartKey, end: [camera, Number.MAX_SAFE_INTEGER, -1] as SmartKey };
    for (const { key, value } of this.t.smart.getRange(range)) {
      if (matches(value, filter)) return { ms: key[1], seq: key[2], record: value };
    }
    return null;
  }

  /** The newest key of `camera` (a new writer continues after it, keeping keys ordered). */
  lastKey(camera: string): SmartKey | null {
    const e = first(this.t.smart, { start: [camera, Number.MAX_SAFE_INTEGER, 0], end: [camera, -1, -1], reverse: true });
    return e && e.key[0] === camera ? e.key : null;
  }

  /** Packets of `camera` (tests, tools). */
  packetCount(camera: string): number {
    return this.t.smart.getKeysCount({ start: [camera, -1, -1], end: [camera, Number.MAX_SAFE_INTEGER, -1] });
  }

  /** Every smart file of `camera`, in time order. */
  files(camera: string): SmartFileRecord[] {
    const range: { start: SegKey; end: SegKey } = { start: [camera, -1], end: [camera, Number.MAX_SAFE_INTEGER] };
    return [...this.t.smartfiles.getRange(range)].map((e) => e.value);
  }
}
