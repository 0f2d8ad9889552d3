/**
 * Pictures in the index (docs/design/pictures.md): where each stored picture is, and
 * the pack files that hold them. Three LMDB databases, opened here (they are this
 * store's alone):
 *
 *   pictures  [atMs, seq] → [camera, pack, offset, length, type, meta?] (msgpack array):
 *                                     time first, so a node's writes append at the end
 *                                     of the tree and its pages stay full: ~45 bytes a
 *                                     picture with LMDB's own overhead (a camera-first
 *                                     key measured 111-119 bytes with 4-20 cameras
 *                                     writing at once: each camera's insertion point
 *                                     split pages in half). `seq` tells apart pictures
 *                                     of one ms, node-wide.
 *   piccam    [camera, minuteMs] → null: the minutes in which a camera has pictures, so
 *                                     a camera's search reads only those minutes.
 *   picpacks  packId → PackRecord: one per pack file, its durable (fdatasync'ed and
 *                                     committed) length and the time range of its
 *                                     pictures, so a pack's entries are found without
 *                                     scanning every picture.
 *   piclock   [atMs, seq] → [camera, untilMs | null]: locked pictures (null: until
 *                                     unlocked); cover never removes one while its lock
 *                                     holds (pictures/cover.ts moves it out of its pack).
 *   piccovered [origin node, pack] → origin offset: how far a copy of another node's
 *                                     pack was covered here (a few bytes per pack of
 *                                     hundreds of MB), so announcing it again (the
 *                                     writer's restart, a death) does not copy it again.
 *
 * A picture's identity (its id and URL) is [camera, atMs, seq]; the store checks the
 * camera of the entry at [atMs, seq] against it.
 *
 * Invariant (as for video, invariant 2 of docs/design/architecture.md): an entry never
 * points at bytes that were not fdatasync'ed before its commit; a pack record's `bytes`
 * is committed with the entries that end there, in one transaction.
 */
import type { Database } from 'lmdb';
import { first, type Tables } from './tables.ts';

/** A picture's identity: its camera, time and seq (its id is these joined by dots). */
export type PictureKey = [camera: string, atMs: number, seq: number];

/** One stored picture: its bytes are `length` bytes at `offset` of pack `pack`. */
export interface PictureEntry {
  pack: number;
  /** Offset of the picture's bytes (after its record header) in the pack file. */
  offset: number;
  length: number;
  type: string;
  /** Free metadata given at write time (e.g. a plate number). */
  meta?: Record<string, string>;
}

type TimeKey = [atMs: number, seq: number];
/** What is stored in `pictures`: positional, for size. */
type StoredEntry = [string, number, number, number, string] | [string, number, number, number, string, Record<string, string>];

/** One pack file: pictures appended one after another (pictures/pack-format.ts). */
export interface PackRecord {
  id: number;
  pool: string;
  /** Path relative to the data dir: pictures/<pool>/<id>.pack */
  file: string;
  /** Bytes of the file that are durable and indexed (a longer file has an unindexed tail). */
  bytes: number;
  /** Pictures indexed in it. */
  count: number;
  createdMs: number;
  /** No more appends (rotated by size or age). */
  closed: boolean;
  /**
   * Being covered (pictures/cover.ts): committed before its file is unlinked, so a crash
   * in between is finished at the next start instead of the file being indexed again.
   */
  covering?: true;
  /** [first atMs, last atMs] of its pictures; null while it has none. */
  range: [number, number] | null;
  /**
   * A copy of another node's pack (cluster/picture-copies.ts): that node and its pack id;
   * `start`, the offset in that pack of this file's first record; `head`, the length of
   * this file's own header. The records after the header are the origin's, byte for byte
   * and in order, so offset x here is `start + x - head` there (`originEnd`).
   */
  copyOf?: PackOrigin;
}

export interface PackOrigin {
  node: string;
  pack: number;
  start: number;
  head: number;
}

/** How far into its origin's pack a copy pack reaches: the origin offset just past its durable bytes. */
export function originEnd(pack: PackRecord & { copyOf: PackOrigin }): number {
  return pack.copyOf.start + pack.bytes - pack.copyOf.head;
}

/** A lock as it travels with a copy: the picture and until when (null: until unlocked). */
export type CopiedLock = [camera: string, atMs: number, seq: number, untilMs: number | null];

export interface PictureHit {
  key: PictureKey;
  entry: PictureEntry;
}

const MAX_MS = Number.MAX_SAFE_INTEGER;
export const MINUTE_MS = 60_000;
const minuteOf = (ms: number): number => ms - (((ms % MINUTE_MS) + MINUTE_MS) % MINUTE_MS);

function decode(k: TimeKey, v: StoredEntry): PictureHit {
  const entry: PictureEntry = { pack: v[1], offset: v[2], length: v[3], type: v[4] };
  if (v.length === 6) entry.meta = v[5];
  return { key: [v[0], k[0], k[1]], entry };
}

function encode(camera: string, e: PictureEntry): StoredEntry {
  return e.meta && Object.keys(e.meta).length > 0 ? [camera, e.pack, e.offset, e.length, e.type, e.meta] : [camera, e.pack, e.offset, e.length, e.type];
}

/** A pack record with the pictures of `keys` counted and its time range widened to them. */
export function widenPack(pack: PackRecord, keys: readonly PictureKey[]): PackRecord {
  let range = pack.range;
  for (const [, atMs] of keys) range = range ? [Math.min(range[0], atMs), Math.max(range[1], atMs)] : [atMs, atMs];
  return { ...pack, range, count: pack.count + keys.length };
}

export interface PictureQuery {
  /** Only these cameras (null: every camera). */
  cameras: readonly string[] | null;
  fromMs: number;
  toMs: number;
  limit: number;
  /** Continue after this picture (paging). */
  after?: PictureKey;
  keep?: (hit: PictureHit) => boolean;
}

export class PictureStore {
  private readonly pictures: Database<StoredEntry, TimeKey>;
  private readonly piccam: Database<null, [string, number]>;
  private readonly packs: Database<PackRecord, number>;
  /** [atMs, seq] → visual signature (pictures/signature.ts) then the camera's id in UTF-8. */
  private readonly sigs: Database<Buffer, TimeKey>;
  private readonly locks: Database<[string, number | null], TimeKey>;
  /** [origin node, its pack id] → the origin offset through which a copy of it here was covered. */
  private readonly covered: Database<number, [string, number]>;

  constructor(private readonly t: Tables) {
    this.pictures = t.root.openDB<StoredEntry, TimeKey>({ name: 'pictures' });
    this.piccam = t.root.openDB<null, [string, number]>({ name: 'piccam' });
    this.packs = t.root.openDB<PackRecord, number>({ name: 'picpacks' });
    this.sigs = t.root.openDB<Buffer, TimeKey>({ name: 'picsig', encoding: 'binary' });
    this.locks = t.root.openDB<[string, number | null], TimeKey>({ name: 'piclock' });
    this.covered = t.root.openDB<number, [string, number]>({ name: 'piccovered' });
  }

  // ---- locks -------------------------------------------------------------------

  /** Locks the pictures (until `untilMs`, null: until unlocked) in one commit; keys without a picture are skipped. Returns how many were locked. */
  async lock(keys: readonly PictureKey[], untilMs: number | null): Promise<number> {
    let n = 0;
    await this.t.commit(
      this.t.root.transaction(() => {
        for (const key of keys) {
          if (!this.get(key)) continue;
          void this.locks.put([key[1], key[2]], [key[0], untilMs]);
          n++;
        }
      }),
    );
    return n;
  }

  /** Removes the locks of the pictures in one commit; returns how many were locked. */
  async unlock(keys: readonly PictureKey[]): Promise<number> {
    let n = 0;
    await this.t.commit(
      this.t.root.transaction(() => {
        for (const key of keys) {
          const l = this.locks.get([key[1], key[2]]);
          if (!l || l[0] !== key[0]) continue;
          void this.locks.remove([key[1], key[2]]);
          n++;
        }
      }),
    );
    return n;
  }

  /** The picture's lock: `{untilMs}` (null: until unlocked), or undefined when it has none (expired ones included: the caller compares). */
  lockOf(key: PictureKey): { untilMs: number | null } | undefined {
    const l = this.locks.get([key[1], key[2]]);
    return l && l[0] === key[0] ? { untilMs: l[1] } : undefined;
  }

  /**
   * Bytes of the pool's pictures whose lock holds at `nowMs` (the lock share a pool's
   * `maxLockShare` bounds). Reads every lock: a pool holds thousands, not millions.
   */
  lockedBytes(pool: string, nowMs: number): number {
    let bytes = 0;
    const packPool = new Map<number, string | undefined>();
    for (const { key, value } of this.locks.getRange({})) {
      if (value[1] !== null && value[1] <= nowMs) continue;
      const entry = this.get([value[0], key[0], key[1]]);
      if (!entry) continue;
      if (!packPool.has(entry.pack)) packPool.set(entry.pack, this.pack(entry.pack)?.pool);
      if (packPool.get(entry.pack) === pool) bytes += entry.length;
    }
    return bytes;
  }

  /** Bytes of the pool's packs that hold indexed pictures (its picture usage). */
  poolBytes(pool: string): number {
    let bytes = 0;
    for (const { value } of this.packs.getRange({})) if (value.pool === pool && !value.covering) bytes += value.bytes;
    return bytes;
  }

  /** Visual signatures of stored pictures, in one commit (computed after the pictures were answered). */
  async putSignatures(list: readonly { key: PictureKey; signature: Buffer }[]): Promise<void> {
    await this.t.commit(
      this.t.root.transaction(() => {
        for (const { key, signature } of list) {
          if (this.get(key)) void this.sigs.put([key[1], key[2]], Buffer.concat([signature, Buffer.from(key[0])]));
        }
      }),
    );
  }

  /** Signatures (of `sigBytes` bytes) of pictures in [fromMs, toMs), each with its key. */
  *signatures(fromMs: number, toMs: number, sigBytes: number): Generator<{ key: PictureKey; signature: Buffer }> {
    for (const { key, value } of this.sigs.getRange({ start: [fromMs, -1], end: [toMs, -1] })) {
      yield { key: [value.subarray(sigBytes).toString(), key[0], key[1]], signature: value.subarray(0, sigBytes) };
    }
  }

  // ---- writes (each one commit) ----------------------------------------------

  /** A new or changed pack record alone (a pack created, closed, or reconciled empty). */
  async putPack(pack: PackRecord): Promise<void> {
    await this.t.commit(this.packs.put(pack.id, pack));
  }

  /**
   * Pictures appended to a pack, their cameras' minutes and the pack's new durable
   * length, in one commit: the record never counts bytes whose entries are missing,
   * nor the reverse. The caller has fdatasync'ed the pack through `pack.bytes` before.
   */
  async append(pack: PackRecord, entries: readonly { key: PictureKey; entry: PictureEntry }[]): Promise<void> {
    await this.t.commit(
      this.t.root.transaction(() => {
        const minutes = new Set<string>();
        for (const { key, entry } of entries) {
          void this.pictures.put([key[1], key[2]], encode(key[0], entry));
          const minute = minuteOf(key[1]);
          const m = `${key[0]}\u0000${minute}`;
          if (minutes.has(m)) continue;
          minutes.add(m);
          if (this.piccam.get([key[0], minute]) === undefined) void this.piccam.put([key[0], minute], null);
        }
        void this.packs.put(pack.id, pack);
      }),
    );
  }

  /**
   * Pictures copied from another node (cluster/picture-copies.ts, and reconcile of a copy
   * pack's tail), as `append` does, except that a key this index already holds is left
   * as it is: the same picture held already (moved out of a covered pack), or another
   * camera's picture with the same time and seq (seqs are per node): counted in
   * `skipped`, never overwritten. `locks` (of the copied pictures) go in the same commit,
   * so a copy never exists here without the lock its source had. The caller has
   * fdatasync'ed the pack through `pack.bytes`.
   */
  async appendCopies(
    pack: PackRecord,
    entries: readonly { key: PictureKey; entry: PictureEntry }[],
    locks: readonly CopiedLock[] = [],
  ): Promise<{ indexed: PictureKey[]; skipped: number }> {
    const indexed: PictureKey[] = [];
    let skipped = 0;
    await this.t.commit(
      this.t.root.transaction(() => {
        for (const { key, entry } of entries) {
          if (this.pictures.get([key[1], key[2]]) !== undefined) {
            skipped++;
            continue;
          }
          void this.pictures.put([key[1], key[2]], encode(key[0], entry));
          const minute = minuteOf(key[1]);
          if (this.piccam.get([key[0], minute]) === undefined) void this.piccam.put([key[0], minute], null);
          indexed.push(key);
        }
        const mine = new Set(indexed.map((k) => `${k[1]}/${k[2]}`));
        for (const [camera, atMs, seq, untilMs] of locks) if (mine.has(`${atMs}/${seq}`)) void this.locks.put([atMs, seq], [camera, untilMs]);
        void this.packs.put(pack.id, widenPack(pack, indexed));
      }),
    );
    return { indexed, skipped };
  }

  /**
   * The locks (held or expired) of the pictures whose entries point into pack `packId` at
   * offsets in [from, to). Reads every lock, as `lockedBytes` does: a node holds
   * thousands, not millions, and most pulls find none.
   */
  locksIn(packId: number, from: number, to: number): CopiedLock[] {
    const out: CopiedLock[] = [];
    for (const { key, value } of this.locks.getRange({})) {
      const entry = this.get([value[0], key[0], key[1]]);
      if (entry && entry.pack === packId && entry.offset >= from && entry.offset < to) out.push([value[0], key[0], key[1], value[1]]);
    }
    return out;
  }

  /**
   * A pack's record and every entry pointing into it, with their signatures and locks,
   * in one commit (its file is gone or goes). Entries moved to another pack are not its
   * own any more and stay.
   */
  async removePack(pack: PackRecord, opts: { covered?: boolean } = {}): Promise<number> {
    let removed = 0;
    await this.t.commit(
      this.t.root.transaction(() => {
        // A copy covered here is remembered (`coveredThrough`), so announcing its pack again does not copy it again.
        if (opts.covered && pack.copyOf) {
          const through = originEnd({ ...pack, copyOf: pack.copyOf });
          const had = this.covered.get([pack.copyOf.node, pack.copyOf.pack]) ?? 0;
          if (through > had) void this.covered.put([pack.copyOf.node, pack.copyOf.pack], through);
        }
        for (const { key } of this.entriesOfPack(pack)) {
          void this.pictures.remove([key[1], key[2]]);
          void this.sigs.remove([key[1], key[2]]);
          void this.locks.remove([key[1], key[2]]);
          removed++;
        }
        void this.packs.remove(pack.id);
      }),
    );
    return removed;
  }

  // ---- reads -----------------------------------------------------------------

  /** The origin offset through which this node covered its copy of `origin`'s pack `pack` (undefined: never). */
  coveredThrough(origin: string, pack: number): number | undefined {
    return this.covered.get([origin, pack]);
  }

  get(key: PictureKey): PictureEntry | undefined {
    const v = this.pictures.get([key[1], key[2]]);
    return v && v[0] === key[0] ? decode([key[1], key[2]], v).entry : undefined;
  }

  pack(id: number): PackRecord | undefined {
    return this.packs.get(id);
  }

  /** Every pack record, by id (packs are few: one per few hundred MB). */
  allPacks(): PackRecord[] {
    return [...this.packs.getRange({})].map((e) => e.value);
  }

  /**
   * The pool of a camera's pictures here (the first picture found through its minutes),
   * undefined when none is here: what a camera known only by its pictures (a backup from
   * another cluster) is read under.
   */
  poolOfCamera(camera: string): string | undefined {
    for (const [, minute] of this.piccam.getKeys({ start: [camera, 0], end: [camera, MAX_MS] })) {
      for (const { value } of this.pictures.getRange({ start: [minute, -1], end: [minute + MINUTE_MS, -1] })) {
        if (value[0] === camera) return this.packs.get(value[1])?.pool;
      }
    }
    return undefined;
  }

  /** The pack records after `id`, by id (a backup's walk from its cursor: cluster/picture-backup.ts). */
  packsAfter(id: number): PackRecord[] {
    return [...this.packs.getRange({ start: id + 1 })].map((e) => e.value);
  }

  /** The highest pack id ever recorded (0: none). */
  lastPackId(): number {
    const e = first(this.packs, { reverse: true });
    return e ? e.key : 0;
  }

  /** The highest seq of any picture at `atMs`, or -1. */
  lastSeq(atMs: number): number {
    const e = first(this.pictures, { start: [atMs, MAX_MS], end: [atMs, -1], reverse: true });
    return e ? e.key[1] : -1;
  }

  /**
   * Pictures with fromMs <= atMs < toMs of the cameras asked for, in time order (then
   * seq), after `after` when given, at most `limit` of those `keep` accepts. With
   * cameras named, only the minutes in which one of them has pictures are read.
   */
  search(q: PictureQuery): PictureHit[] {
    const out: PictureHit[] = [];
    const from = q.after ? Math.max(q.fromMs, q.after[1]) : q.fromMs;
    const cams = q.cameras ? new Set(q.cameras) : null;
    const windows: [number, number][] = [];
    if (!cams) windows.push([from, q.toMs]);
    else {
      const minutes = new Set<number>();
      for (const c of cams) for (const key of this.piccam.getKeys({ start: [c, minuteOf(from)], end: [c, q.toMs] })) minutes.add(key[1]);
      for (const m of [...minutes].sort((a, b) => a - b)) windows.push([Math.max(from, m), Math.min(q.toMs, m + MINUTE_MS)]);
    }
    for (const [a, b] of windows) {
      const start: TimeKey = q.after && q.after[1] === a ? [a, q.after[2] + 1] : [a, -1];
      for (const { key, value } of this.pictures.getRange({ start, end: [b, -1] })) {
        if (cams && !cams.has(value[0])) continue;
        const hit = decode(key, value);
        if (q.keep && !q.keep(hit)) continue;
        out.push(hit);
        if (out.length >= q.limit) return out;
      }
    }
    return out;
  }

  /** Entries of `pack`, with their keys (reconcile, check, retention), read through its time range. */
  entriesOfPack(pack: PackRecord): PictureHit[] {
    const out: PictureHit[] = [];
    if (!pack.range) return out;
    for (const { key, value } of this.pictures.getRange({ start: [pack.range[0], -1], end: [pack.range[1], MAX_MS] })) {
      if (value[1] === pack.id) out.push(decode(key, value));
    }
    return out;
  }

  /** Pictures indexed. */
  count(): number {
    return this.pictures.getKeysCount();
  }

  /** Bytes of LMDB pages the picture databases hold (bench: index bytes per picture). */
  indexBytes(): number {
    let bytes = 0;
    for (const db of [this.pictures, this.piccam]) {
      const s = db.getStats() as { treeBranchPageCount: number; treeLeafPageCount: number; overflowPages: number; pageSize: number };
      bytes += (s.treeBranchPageCount + s.treeLeafPageCount + s.overflowPages) * s.pageSize;
    }
    return bytes;
  }
}
