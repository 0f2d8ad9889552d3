/**
 * Segments and what is kept with them (docs/design/index-layout.md): the entry with its
 * GOP table (`segments`), its search view (`segtimes`), the camera-day summaries
 * (`daysum`), the pool's bytes (`poolusage`) and the camera's bytes in the pool
 * (`poolcameras`), and its cached sample tables (`sampletables`). Every put and remove
 * writes all of them in one commit batch, so none of them ever disagrees with the
 * entries after a crash or a failed commit. A deletion and its `delete` intent, and a
 * thinned entry and the end of its `thin` intent, are one method each
 * (storage/segment-delete.ts, storage/thin.ts): no caller can commit one without the
 * other.
 *
 * Writes resolve after the commit is durable (lmdb-js default sync mode), which is
 * what invariant 2 needs: callers fdatasync the file first, then await the put. A put
 * whose commit failed (a full disk) rejects with STORAGE_IO and is put again with
 * backoff until it commits or is superseded (its bytes were durable before the first
 * put).
 *
 * Read-modify-write values (`daysum`, `poolusage`, `poolcameras`) are computed from the
 * last value *put*, held in memory until its commit resolves, not from the committed
 * value: lmdb-js batches async writes, so a read right after a put still sees the old
 * value.
 *
 * Reads: no LMDB cursor outlives one synchronous batch read. A range iterator left
 * open (a consumer that stops early without closing a generator, or one held across
 * an await) pins its read transaction and a reader slot; a retention pass that did so
 * on every tick filled the reader table within minutes (MDB_READERS_FULL, issue 12),
 * and an idle playback stream that did so stopped LMDB from reusing pages (issue 13).
 * Every walk here reads batches of materialised records, so abandoning it is free.
 */
import { intentKey } from './intent-store.ts';
import { addRuns, cutRuns, daysOf, decodeSummary, encodeSummary, runsInDay, type Run } from './day-summary.ts';
import type { IntentKey, IntentRecord, SegmentRecord } from './records.ts';
import { first, type SegKey, type SegmentTimes, type Tables } from './tables.ts';

/** Segments read per LMDB range read when walking many. */
export const SEGMENT_BATCH = 256;

/** Re-put of a segment entry whose commit failed: first delay, doubling to the cap. */
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 30_000;

/**
 * Segments starting before a range that overlapping() looks at: enough for a few
 * writers' series of similar segment lengths side by side (a segment is looked for only
 * among these; one further back, e.g. an hour-long segment of one node beside another
 * node's 2 s ones, is missed).
 */
const OVERLAP_LOOKBACK = 16;

export interface SegmentTimesView {
  startMs: number;
  endMs: number;
  types: { type: string; fromMs: number }[];
}

interface Put {
  pool: string;
  bytes: number;
  endMs: number;
}

export class SegmentStore {
  /**
   * Day summaries with writes not yet committed: read-modify-write must start from the
   * last value put, not the older committed one. An entry leaves once its last put commits.
   */
  private readonly daysumPending = new Map<string, { runs: Run[]; pending: number }>();
  /** Segment entries whose last put failed, to put again (key → the record as it was put). */
  private readonly retry = new Map<string, SegmentRecord>();
  private retryTimer: NodeJS.Timeout | null = null;
  private retryDelayMs = RETRY_FIRST_MS;
  private closed = false;
  /** Bytes per pool, mirrored in `poolusage`. */
  private readonly usage = new Map<string, number>();
  /** Bytes per pool and camera (`pool\0camera`), mirrored in `poolcameras`. */
  private readonly cameraUsage = new Map<string, number>();
  /**
   * Pool and bytes of segments whose latest put may not be committed yet, and of every
   * open segment: a read of `segments` would return the older committed bytes, and the
   * usage delta must be taken from what was last put.
   */
  private readonly lastPut = new Map<string, Put>();

  constructor(private readonly t: Tables) {}

  /** Loads the pools' usage (at open, after the migrations built it). */
  load(): void {
    for (const { key, value } of this.t.poolusage.getRange({})) this.usage.set(key, value);
    for (const { key, value } of this.t.poolcameras.getRange({})) this.cameraUsage.set(`${key[0]}\u0000${key[1]}`, value);
  }

  close(): void {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.retry.clear();
  }

  /** Segment entries waiting to be put again after a failed commit. */
  get pendingRetries(): number {
    return this.retry.size;
  }

  // ---- writes ---------------------------------------------------------------

  /** The segment, its search view, day summaries and its pool's usage land in one commit batch. */
  put(seg: SegmentRecord): Promise<boolean> {
    const k = keyString(seg.camera, seg.startMs);
    this.retry.delete(k);
    // What was durable when this put was made (the writer goes on changing its record).
    const asPut: SegmentRecord = { ...seg, types: seg.types.map((t) => ({ ...t })), flags: { ...seg.flags } };
    const prev = this.lastPut.get(k) ?? this.committedBytes(seg.camera, seg.startMs);
    if (prev) this.addUsage(prev.pool, seg.camera, -prev.bytes);
    this.addUsage(seg.pool, seg.camera, seg.bytes);
    const mine: Put = { pool: seg.pool, bytes: seg.bytes, endMs: seg.endMs };
    this.lastPut.set(k, mine);
    void this.t.segtimes.put([seg.camera, seg.startMs], segmentTimes(seg));
    // Tables exist only for closed segments and describe the file as it was then: a
    // closed segment put again (thinned, repaired) may point at other bytes.
    if (!seg.open) void this.t.sampletables.remove([seg.camera, seg.startMs]);
    // The new record replaces the old one's time: cut what the old covered, add the new runs.
    const coveredEnd = Math.max(seg.endMs, prev?.endMs ?? seg.endMs);
    this.updateDays(seg.camera, seg.startMs, coveredEnd, (runs, day) => addRuns(cutRuns(runs, seg.startMs, coveredEnd), runsInDay(segmentRuns(seg), day)));
    const done = this.t.segments.put([seg.camera, seg.startMs], seg);
    // Once committed (and closed) the stored record is the truth again.
    if (!seg.open)
      void done.then(
        () => this.lastPut.get(k) === mine && this.lastPut.delete(k),
        () => undefined,
      );
    return this.t.commit(done).catch((err: unknown) => {
      // Not superseded by a later put or a removal: put it again when the disk has room.
      if (this.lastPut.get(k) === mine) this.scheduleRetry(k, asPut);
      throw err;
    });
  }

  /**
   * A thinned segment's rebuilt entry (storage/thin.ts), and the end of its `thin`
   * intent, in one commit: after a crash either both happened or neither.
   */
  putThinned(seg: SegmentRecord): Promise<boolean> {
    const key: IntentKey = ['thin', seg.camera, seg.startMs];
    void this.t.intents.remove(key);
    return this.put(seg);
  }

  /** Removes a segment entry (and its bytes from its pool's usage) with everything kept with it. */
  remove(camera: string, startMs: number): Promise<boolean> {
    return this.removeEntry(camera, startMs, null);
  }

  /**
   * Step 1 of a crash-safe deletion (storage/segment-delete.ts): the entry goes and a
   * `delete` intent naming `files` is recorded, in one commit. The caller unlinks the
   * files, then ends the intent (`index.intents.finish`).
   */
  async removeWithIntent(seg: Pick<SegmentRecord, 'camera' | 'startMs'>, files: string[]): Promise<IntentRecord> {
    const intent: IntentRecord = { kind: 'delete', camera: seg.camera, startMs: seg.startMs, files };
    await this.removeEntry(seg.camera, seg.startMs, intent);
    return intent;
  }

  private removeEntry(camera: string, startMs: number, intent: IntentRecord | null): Promise<boolean> {
    const k = keyString(camera, startMs);
    this.retry.delete(k);
    const prev = this.lastPut.get(k) ?? this.committedBytes(camera, startMs);
    this.lastPut.delete(k);
    if (prev) this.addUsage(prev.pool, camera, -prev.bytes);
    if (intent) void this.t.intents.put(intentKey(intent), intent);
    const times = this.t.segtimes.get([camera, startMs]);
    const endMs = prev?.endMs ?? (times ? (times[0] as number) : startMs);
    if (endMs > startMs) this.updateDays(camera, startMs, endMs, (runs) => cutRuns(runs, startMs, endMs));
    void this.t.segtimes.remove([camera, startMs]);
    void this.t.sampletables.remove([camera, startMs]);
    return this.t.commit(this.t.segments.remove([camera, startMs]));
  }

  /**
   * Stores a closed segment's sample tables, only if the segment's entry is still the
   * one they were read for (`expected`: same file, bytes, init and GOP table, closed).
   * Checked inside the write transaction, so a removal or re-put queued before it wins
   * and one queued after it removes the record in its own commit. Resolves to whether
   * the record was stored.
   */
  async putSampleTables(expected: SegmentRecord, record: Buffer): Promise<boolean> {
    const key: SegKey = [expected.camera, expected.startMs];
    let stored = false;
    await this.t.root.transaction(() => {
      const now = this.t.segments.get(key);
      if (
        !now ||
        now.open ||
        now.file !== expected.file ||
        now.bytes !== expected.bytes ||
        now.initSize !== expected.initSize ||
        !Buffer.from(now.gops).equals(Buffer.from(expected.gops))
      )
        return;
      void this.t.sampletables.put(key, record);
      stored = true;
    });
    return stored;
  }

  /** The stored sample tables of a segment (playback/sample-table-codec.ts), if any. */
  sampleTables(camera: string, startMs: number): Buffer | undefined {
    return this.t.sampletables.get([camera, startMs]);
  }

  /** Keys of every stored sample-table record (tests, benches). */
  sampleTableKeys(): { camera: string; startMs: number }[] {
    return [...this.t.sampletables.getKeys({})].map((k) => ({ camera: k[0], startMs: k[1] }));
  }

  /** Drops every segment entry and what is kept with them (`recorder reindex --rebuild`). */
  async clear(): Promise<void> {
    await this.t.sampletables.clearAsync();
    await this.t.segtimes.clearAsync();
    await this.t.segments.clearAsync();
    await this.t.poolusage.clearAsync();
    await this.t.poolcameras.clearAsync();
    await this.t.daysum.clearAsync();
    this.usage.clear();
    this.cameraUsage.clear();
    this.lastPut.clear();
    this.daysumPending.clear();
  }

  private scheduleRetry(k: string, seg: SegmentRecord): void {
    if (this.closed) return;
    this.retry.set(k, seg);
    if (this.retryTimer) return;
    this.retryTimer = setTimeout(() => void this.retryPuts(), this.retryDelayMs);
    this.retryTimer.unref();
  }

  /** Puts again the segment entries whose commit failed (a put of the same key since has superseded them). */
  private async retryPuts(): Promise<void> {
    this.retryTimer = null;
    const batch = [...this.retry.values()];
    this.retry.clear();
    let failed = false;
    await Promise.all(batch.map((seg) => this.put(seg).catch(() => (failed = true))));
    this.retryDelayMs = failed ? Math.min(this.retryDelayMs * 2, RETRY_MAX_MS) : RETRY_FIRST_MS;
  }

  private updateDays(camera: string, fromMs: number, toMs: number, change: (runs: Run[], day: number) => Run[]): void {
    for (const day of daysOf(fromMs, toMs)) {
      const k = keyString(camera, day);
      const entry = this.daysumPending.get(k) ?? { runs: decodeSummary(this.t.daysum.get([camera, day])), pending: 0 };
      entry.runs = change(entry.runs, day);
      entry.pending++;
      this.daysumPending.set(k, entry);
      const done = entry.runs.length > 0 ? this.t.daysum.put([camera, day], encodeSummary(entry.runs)) : this.t.daysum.remove([camera, day]);
      // Also when the commit failed: the runs held are what was last put, and the
      // segment entry's re-put (or its removal) writes them again.
      const settled = (): void => {
        entry.pending--;
        if (entry.pending === 0 && this.daysumPending.get(k) === entry) this.daysumPending.delete(k);
      };
      void done.then(settled, settled);
    }
  }

  private committedBytes(camera: string, startMs: number): Put | undefined {
    const seg = this.t.segments.get([camera, startMs]);
    return seg ? { pool: seg.pool, bytes: seg.bytes, endMs: seg.endMs } : undefined;
  }

  private addUsage(pool: string, camera: string, delta: number): void {
    if (delta === 0) return;
    const bytes = Math.max(0, (this.usage.get(pool) ?? 0) + delta);
    this.usage.set(pool, bytes);
    void this.t.poolusage.put(pool, bytes);
    const k = `${pool}\u0000${camera}`;
    const cameraBytes = Math.max(0, (this.cameraUsage.get(k) ?? 0) + delta);
    if (cameraBytes > 0) {
      this.cameraUsage.set(k, cameraBytes);
      void this.t.poolcameras.put([pool, camera], cameraBytes);
    } else {
      this.cameraUsage.delete(k);
      void this.t.poolcameras.remove([pool, camera]);
    }
  }

  // ---- reads ----------------------------------------------------------------

  get(camera: string, startMs: number): SegmentRecord | undefined {
    return this.t.segments.get([camera, startMs]);
  }

  /** Bytes of the pool's indexed segments (open ones as far as they are durable). */
  poolUsage(pool: string): number {
    return this.usage.get(pool) ?? 0;
  }

  /**
   * Cameras with segments in the pool (a keyed read of `poolcameras`), including
   * cameras deleted without purge and cameras since moved to another pool.
   */
  poolCameras(pool: string): string[] {
    return [...this.t.poolcameras.getKeys({ start: [pool, ''], end: [pool, '\uffff'] })].map((k) => k[1]);
  }

  /** Recorded runs of one camera-day (pending writes included). */
  daySummary(camera: string, day: number): Run[] {
    return this.daysumPending.get(keyString(camera, day))?.runs ?? decodeSummary(this.t.daysum.get([camera, day]));
  }

  /** Cameras that have segments (including cameras deleted without purge), by key order. */
  *cameras(): Iterable<string> {
    let start: SegKey | undefined = undefined;
    for (;;) {
      let next: string | undefined;
      for (const key of this.t.segments.getKeys(start ? { start, limit: 1 } : { limit: 1 })) next = key[0];
      if (next === undefined) return;
      yield next;
      start = [next, Number.MAX_VALUE];
    }
  }

  /** Start, end and type runs of the segments overlapping [fromMs, toMs), in time order. */
  timesInRange(camera: string, fromMs: number, toMs: number): SegmentTimesView[] {
    const out: SegmentTimesView[] = [];
    const before = first(this.t.segtimes, { start: [camera, fromMs], end: [camera, -1], reverse: true });
    if (before && before.key[0] === camera && (before.value[0] as number) > fromMs) out.push(segmentTimesView(before.key, before.value));
    for (const { key, value } of this.t.segtimes.getRange({ start: [camera, fromMs], end: [camera, toMs] })) {
      if (out.length > 0 && out[out.length - 1]!.startMs === key[1]) continue;
      out.push(segmentTimesView(key, value));
    }
    return out;
  }

  /** Segments of `camera` that overlap [fromMs, toMs), in time order. */
  inRange(camera: string, fromMs: number, toMs: number): SegmentRecord[] {
    const out: SegmentRecord[] = [];
    // The segment that starts before `from` may still cover it.
    const before = this.atOrBefore(camera, fromMs);
    if (before && before.endMs > fromMs) out.push(before);
    for (const { value } of this.t.segments.getRange({ start: [camera, fromMs], end: [camera, toMs] })) {
      if (out.length > 0 && out[out.length - 1]!.startMs === value.startMs) continue;
      out.push(value);
    }
    return out;
  }

  /**
   * Every segment of `camera` whose span overlaps [fromMs, toMs), in start order,
   * also where two writers' segments overlap in time (a partition made two cluster
   * nodes record the camera: playback/one-timeline.ts picks one). Unlike inRange, which
   * takes only the last segment starting before `fromMs`, this looks back over the
   * OVERLAP_LOOKBACK segments starting before it (their times only, from `segtimes`).
   */
  overlapping(camera: string, fromMs: number, toMs: number): SegmentRecord[] {
    const starts: number[] = [];
    for (const { key, value } of this.t.segtimes.getRange({ start: [camera, fromMs], end: [camera, -1], reverse: true, limit: OVERLAP_LOOKBACK })) {
      if (key[1] < fromMs && (value[0] as number) > fromMs) starts.push(key[1]);
    }
    const out: SegmentRecord[] = [];
    for (const startMs of starts.reverse()) {
      const seg = this.t.segments.get([camera, startMs]);
      if (seg) out.push(seg);
    }
    for (const { value } of this.t.segments.getRange({ start: [camera, fromMs], end: [camera, toMs] })) out.push(value);
    return out;
  }

  /** The camera's last segment that starts at or before `atMs`. */
  atOrBefore(camera: string, atMs: number): SegmentRecord | undefined {
    const e = first(this.t.segments, { start: [camera, atMs], end: [camera, -1], reverse: true });
    return e && e.value.camera === camera ? e.value : undefined;
  }

  /** The camera's first segment that starts after `afterMs`. */
  after(camera: string, afterMs: number): SegmentRecord | undefined {
    return first(this.t.segments, { start: [camera, afterMs + 1], end: [camera, Number.MAX_SAFE_INTEGER] })?.value;
  }

  last(camera: string): SegmentRecord | undefined {
    return this.atOrBefore(camera, Number.MAX_SAFE_INTEGER);
  }

  /**
   * At most `limit` segments of `camera` in key order from `fromMs` (inclusive): forward
   * up to `toMs` (exclusive), or with `reverse` backwards from `fromMs`. One read; the
   * caller pages on from the last one (playback).
   */
  page(camera: string, fromMs: number, opts: { toMs?: number; reverse?: boolean; limit: number }): SegmentRecord[] {
    const range = opts.reverse
      ? { start: [camera, fromMs] as SegKey, end: [camera, -1] as SegKey, reverse: true }
      : { start: [camera, fromMs] as SegKey, end: [camera, opts.toMs ?? Number.MAX_SAFE_INTEGER] as SegKey };
    return [...this.t.segments.getRange({ ...range, limit: opts.limit })].map((e) => e.value).filter((s) => s.camera === camera);
  }

  /**
   * Every segment (of `camera` from `fromMs`, or of all cameras), in key order, read in
   * batches of SEGMENT_BATCH: no read transaction is held between batches, so the
   * caller may await between records and stop at any point.
   */
  *all(camera?: string, fromMs = -1): Generator<SegmentRecord, void, undefined> {
    const end: SegKey | undefined = camera === undefined ? undefined : [camera, Number.MAX_SAFE_INTEGER];
    let start: SegKey | undefined = camera === undefined ? undefined : [camera, fromMs];
    let skipFirst = false;
    for (;;) {
      const batch = [...this.t.segments.getRange({ ...(start ? { start } : {}), ...(end ? { end } : {}), limit: SEGMENT_BATCH })];
      for (let i = skipFirst ? 1 : 0; i < batch.length; i++) yield batch[i]!.value;
      if (batch.length < SEGMENT_BATCH) return;
      // The next batch starts at the last key read, which it then skips.
      start = batch[batch.length - 1]!.key;
      skipFirst = true;
    }
  }
}

function keyString(camera: string, ms: number): string {
  return `${camera}\u0000${ms}`;
}

/** The search view of a `segtimes` record. */
export function segmentTimesView(key: SegKey, v: SegmentTimes): SegmentTimesView {
  const types: { type: string; fromMs: number }[] = [];
  for (let i = 1; i + 1 < v.length; i += 2) types.push({ type: v[i] as string, fromMs: v[i + 1] as number });
  return { startMs: key[1], endMs: v[0] as number, types };
}

/** A segment's record-type runs with their ends. */
export function segmentRuns(seg: { startMs: number; endMs: number; types: { type: string; fromMs: number }[] }): Run[] {
  return seg.types.map((t, i) => ({ fromMs: t.fromMs, toMs: seg.types[i + 1]?.fromMs ?? seg.endMs, type: t.type }));
}

export function segmentTimes(seg: Pick<SegmentRecord, 'endMs' | 'types'>): SegmentTimes {
  const out: SegmentTimes = [seg.endMs];
  for (const run of seg.types) out.push(run.type, run.fromMs);
  return out;
}
