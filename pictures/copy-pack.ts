/**
 * Copies of other nodes' picture packs on this node (docs/design/pictures.md "Copies in
 * a cluster"), and the byte ranges of packs this node serves to nodes that copy them.
 *
 * A pack is known across the cluster by its origin: the node that wrote it and that
 * node's pack id (pack ids are per node). Offsets are the origin's: a holder appends
 * the origin's records byte for byte and in order after its own header, so its file
 * offset x is the origin's `start + x - head` (index/pictures.ts `originEnd`). A holder's
 * copy of one origin pack may be several local packs ("pieces"), each continuing where
 * the previous ends: a piece is closed when the origin's pack is closed, when its writer
 * is judged dead, and at every start (reconcile closes every pack), and a later range
 * goes into a new piece. Only closed packs are covered (pictures/cover.ts), so a piece
 * is never covered while bytes are appended to it.
 *
 * Durability (invariant 2 of docs/design/architecture.md): a range's whole records
 * (CRC checked) are written at the piece's durable end, fdatasync'ed, and only then
 * indexed with the piece's new length, in one commit (`appendCopies`: a key the index
 * holds already is never overwritten). A crash after the fdatasync leaves whole records
 * reconcile indexes; one inside the write a torn tail it truncates. A piece's file is
 * created as a pack is (exclusive create, header, fdatasync, folder fsync, record); its
 * header names its origin, so reconcile rebuilds the record of a file without one.
 *
 * Error codes: STORAGE_IO (a write or sync failed: the piece is cut back to its durable
 * end), VALIDATION_FAILED (a range that does not continue the copy, or holds no whole
 * record).
 */
import { mkdir, open } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { RecorderIndex } from '../index/db.ts';
import { originEnd, type CopiedLock, type PackOrigin, type PackRecord, type PictureEntry, type PictureKey } from '../index/pictures.ts';
import { RecorderError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import type { Clock } from '../lib/time.ts';
import { encodePackHeader, RECORD_FIXED, readPackHeader, scanRecordBuffer, type ScannedRecord } from './pack-format.ts';
import { packRelPath } from './layout.ts';
import { ID_PATTERN } from '../storage/layout.ts';
import { fsyncDir } from './pack-writer.ts';
import { PendingLocks, type LockChange } from './pending-locks.ts';

/** What one range answer carries at least (more when its first record is larger). */
export const RANGE_CHUNK_BYTES = 16 * 1024 * 1024;

/** A byte range of an origin's pack as a node that holds it serves it. */
export interface PackRange {
  pool: string;
  createdMs: number;
  /** The origin offset of `bytes[0]`. */
  from: number;
  /** The origin offset just past the durable bytes the serving node holds of the pack. */
  end: number;
  bytes: Buffer;
  /** Locks of the pictures in `bytes` (held or expired), so a copy starts with its source's locks. */
  locks: CopiedLock[];
}

type Piece = PackRecord & { copyOf: PackOrigin };

export interface CopyPacksDeps {
  index: RecorderIndex;
  dataDir: string;
  log: Logger;
  /** A pack id never used on this node (shared with the pack writers). */
  newPackId: () => number;
  clock: Clock;
}

export class CopyPacks {
  /** Appends and closes of copy pieces, one at a time (a piece is appended by one writer). */
  private chain: Promise<unknown> = Promise.resolve();
  /** Lock changes asked for pictures not here yet, applied when their copy is indexed (pictures/pending-locks.ts). */
  readonly pendingLocks = new PendingLocks();
  private byOrigin: Map<string, Set<number>> | null = null;

  constructor(private readonly d: CopyPacksDeps) {}

  /** This node's copy pieces of `origin`'s pack `pack`, in origin order (none when it holds none of it). */
  pieces(origin: string, pack: number): Piece[] {
    const ids = this.pieceIds().get(`${origin}\0${pack}`);
    if (!ids) return [];
    const out: Piece[] = [];
    for (const id of ids) {
      const p = this.d.index.pictures.pack(id);
      // A piece cover removed has no record any more: forgotten here too.
      if (!p?.copyOf) ids.delete(id);
      else if (!p.covering) out.push(p as Piece);
    }
    return out.sort((a, b) => a.copyOf.start - b.copyOf.start);
  }

  /**
   * Piece ids by origin pack, read from the index once (after the start's reconcile) and
   * kept as pieces are made here: an announcement is handled without reading every pack
   * record (a node holds tens of thousands of packs).
   */
  private pieceIds(): Map<string, Set<number>> {
    if (!this.byOrigin) {
      this.byOrigin = new Map();
      for (const p of this.d.index.pictures.allPacks()) if (p.copyOf) this.remember(p.copyOf.node, p.copyOf.pack, p.id);
    }
    return this.byOrigin;
  }

  private remember(origin: string, pack: number, id: number): void {
    const k = `${origin}\0${pack}`;
    const set = this.byOrigin!.get(k) ?? new Set<number>();
    set.add(id);
    this.byOrigin!.set(k, set);
  }

  /**
   * How far into `origin`'s pack this node's copy reaches (an origin offset), counting
   * what cover took of it here (it is not copied again); null: none of it ever was.
   */
  progress(origin: string, pack: number): number | null {
    const ends = this.pieces(origin, pack).map(originEnd);
    const covered = this.d.index.pictures.coveredThrough(origin, pack);
    if (covered !== undefined) ends.push(covered);
    return ends.length === 0 ? null : Math.max(...ends);
  }

  /**
   * The durable bytes of `origin`'s pack this node holds from origin offset `from` (0:
   * from its first record), at least one whole record and about RANGE_CHUNK_BYTES; null
   * when it holds none of the pack or not that offset. `self` is this node's id: its own
   * packs are served as they are.
   */
  async range(self: string, origin: string, pack: number, from: number): Promise<PackRange | null> {
    // `local`: where the served bytes are in this node's file; `at`: the same place in the origin's offsets.
    let rec: PackRecord;
    let at: number;
    let local: number;
    let end: number;
    if (origin === self) {
      const own = this.d.index.pictures.pack(pack);
      if (!own || own.copyOf || own.covering) return null;
      const first = await this.headerEnd(own.file);
      if (first === null) return null;
      at = from === 0 ? first : from;
      if (at < first || at > own.bytes) return null;
      rec = own;
      local = at;
      end = own.bytes;
    } else {
      const pieces = this.pieces(origin, pack);
      if (pieces.length === 0) return null;
      at = from === 0 ? pieces[0]!.copyOf.start : from;
      end = Math.max(...pieces.map(originEnd));
      // The last piece reaching `at` (a piece's end is where the next one starts).
      const piece = [...pieces].reverse().find((p) => p.copyOf.start <= at && at <= originEnd(p));
      if (!piece) return null;
      rec = piece;
      local = piece.copyOf.head + at - piece.copyOf.start;
    }
    const bytes = await this.read(rec.file, local, rec.bytes);
    if (bytes === null) return null;
    return { pool: rec.pool, createdMs: rec.createdMs, from: at, end, bytes, locks: this.d.index.pictures.locksIn(rec.id, local, local + bytes.length) };
  }

  /**
   * Appends a range pulled from a node that holds `origin`'s pack: its whole records are
   * written after this node's copy, synced, then indexed. The range must start where the
   * copy ends (or, with none here, anywhere: the first piece starts there). Returns the
   * pictures indexed (with their bytes, for the signer), how many keys were taken
   * already, and how far the copy now reaches.
   */
  append(
    origin: string,
    pack: number,
    got: PackRange,
  ): Promise<{ indexed: { key: PictureKey; payload: Buffer }[]; skipped: number; progress: number; cameras: string[] }> {
    return this.exclusive(async () => {
      const pieces = this.pieces(origin, pack);
      const last = pieces[pieces.length - 1];
      const reach = this.progress(origin, pack);
      if (reach !== null && got.from !== reach) {
        throw new RecorderError('VALIDATION_FAILED', `a range of ${origin}/${pack} from ${got.from} does not continue the copy here (at ${reach})`);
      }
      const { records, end } = scanRecordBuffer(got.bytes, got.from);
      if (records.length === 0) throw new RecorderError('VALIDATION_FAILED', `a range of ${origin}/${pack} from ${got.from} holds no whole record`);
      // The open piece that ends where the range starts, else a new one (after a closed or covered piece).
      const piece = last && !last.closed && originEnd(last) === got.from ? last : await this.createPiece(origin, pack, got.pool, got.createdMs, got.from);
      const at = piece.bytes;
      const data = got.bytes.subarray(0, end - got.from);
      const abs = join(this.d.dataDir, piece.file);
      const fh = await open(abs, 'r+');
      try {
        try {
          await fh.write(data, 0, data.length, at);
          await fh.datasync();
        } catch (err) {
          await fh.truncate(at).catch(() => undefined);
          throw new RecorderError('STORAGE_IO', `copy pack ${piece.file}: ${(err as Error).message}`, { cause: err });
        }
      } finally {
        await fh.close();
      }
      const entries = entriesAt(records, piece.id, at - got.from);
      const next: Piece = { ...piece, bytes: at + data.length };
      const locks = this.pendingLocks.merge(
        entries.map((e) => e.key),
        got.locks,
        this.d.clock.nowMs(),
      );
      // A commit that fails leaves synced bytes past the piece's durable end: the retry
      // writes the same origin bytes at the same place, or reconcile indexes them.
      const { indexed, skipped } = await this.d.index.pictures.appendCopies(next, entries, locks);
      this.pendingLocks.forget(entries.map((e) => e.key));
      const kept = new Set(indexed.map((k) => `${k[1]}/${k[2]}`));
      const out = records
        .filter((r) => kept.has(`${r.header.atMs}/${r.header.seq}`))
        .map((r) => ({
          key: [r.header.camera, r.header.atMs, r.header.seq] as PictureKey,
          payload: got.bytes.subarray(r.offset - got.from, r.offset - got.from + r.length),
        }));
      return { indexed: out, skipped, progress: end, cameras: [...new Set(records.map((r) => r.header.camera))] };
    });
  }

  /**
   * Notes a lock change for a picture not here (a copy may be in flight): applied by the
   * append that indexes it. Serialized with appends, so a change is either noted before
   * an append's commit (and merged into it) or finds the picture indexed: false then,
   * and the caller applies it as to any picture here.
   */
  noteLock(key: PictureKey, change: LockChange, nowMs: number): Promise<boolean> {
    return this.exclusive(() => {
      if (this.d.index.pictures.get(key)) return Promise.resolve(false);
      this.pendingLocks.note(key, change, nowMs);
      return Promise.resolve(true);
    });
  }

  /** Closes this node's open pieces of `origin` (of its pack `pack` only, when given): cover may take them now. */
  close(origin: string, pack?: number): Promise<number> {
    return this.exclusive(async () => {
      let n = 0;
      const candidates = pack === undefined ? this.d.index.pictures.allPacks() : this.pieces(origin, pack);
      for (const p of candidates) {
        if (!p.copyOf || p.copyOf.node !== origin || p.closed || p.covering || (pack !== undefined && p.copyOf.pack !== pack)) continue;
        await this.d.index.pictures.putPack({ ...p, closed: true });
        n++;
      }
      return n;
    });
  }

  private exclusive<T>(work: () => Promise<T>): Promise<T> {
    const run = this.chain.then(work, work);
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async createPiece(origin: string, pack: number, pool: string, createdMs: number, start: number): Promise<Piece> {
    // A peer names the pool: only a pool id goes into a path here.
    if (!ID_PATTERN.test(pool)) throw new RecorderError('VALIDATION_FAILED', `a copy of ${origin}/${pack} names pool ${JSON.stringify(pool)}, not a pool id`);
    const id = this.d.newPackId();
    const file = packRelPath(pool, id);
    const abs = join(this.d.dataDir, file);
    await mkdir(dirname(abs), { recursive: true });
    const head = encodePackHeader({ id, pool, createdMs, copyOf: { node: origin, pack, start } });
    const fh = await open(abs, 'wx');
    try {
      await fh.write(head, 0, head.length, 0);
      await fh.datasync();
    } catch (err) {
      throw new RecorderError('STORAGE_IO', `copy pack ${file} could not be created: ${(err as Error).message}`, { cause: err });
    } finally {
      await fh.close();
    }
    await fsyncDir(dirname(abs));
    const rec: Piece = {
      id,
      pool,
      file,
      bytes: head.length,
      count: 0,
      createdMs,
      closed: false,
      range: null,
      copyOf: { node: origin, pack, start, head: head.length },
    };
    await this.d.index.pictures.putPack(rec);
    this.pieceIds();
    this.remember(origin, pack, id);
    this.d.log.info({ pool, pack: id, origin, originPack: pack, start }, 'picture copy pack created');
    return rec;
  }

  /** Where a pack's first record starts (null: its file is gone or not a pack). */
  private async headerEnd(file: string): Promise<number | null> {
    try {
      const fh = await open(join(this.d.dataDir, file), 'r');
      try {
        const h = await readPackHeader(fh, (await fh.stat()).size);
        return h.ok ? h.end : null;
      } finally {
        await fh.close();
      }
    } catch {
      return null;
    }
  }

  /**
   * Bytes of a pack from `from` up to `to` (its durable end): at least its first whole
   * record, about RANGE_CHUNK_BYTES; null when the file is gone (covered meanwhile).
   */
  private async read(file: string, from: number, to: number): Promise<Buffer | null> {
    let fh;
    try {
      fh = await open(join(this.d.dataDir, file), 'r');
    } catch {
      return null;
    }
    try {
      let n = Math.min(RANGE_CHUNK_BYTES, to - from);
      if (to - from >= RECORD_FIXED) {
        const fixed = Buffer.alloc(RECORD_FIXED);
        await fh.read(fixed, 0, RECORD_FIXED, from);
        n = Math.min(to - from, Math.max(n, RECORD_FIXED + fixed.readUInt16BE(5) + fixed.readUInt32BE(7)));
      }
      const buf = Buffer.alloc(Math.max(0, n));
      const { bytesRead } = await fh.read(buf, 0, buf.length, from);
      return buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  }
}

/** Index entries of records scanned in origin offsets, stored `shift` bytes further in pack `pack`. */
function entriesAt(records: readonly ScannedRecord[], pack: number, shift: number): { key: PictureKey; entry: PictureEntry }[] {
  return records.map((r) => {
    const h = r.header;
    const entry: PictureEntry = { pack, offset: r.offset + shift, length: r.length, type: h.type };
    if (h.meta && Object.keys(h.meta).length > 0) entry.meta = h.meta;
    return { key: [h.camera, h.atMs, h.seq] as PictureKey, entry };
  });
}

/**
 * A range as it travels between nodes (`GET /api/cluster/picture-packs/…`): a u32 (big
 * endian) length of a JSON head `{pool, createdMs, from, end, locks}`, the head, then
 * the bytes. One answer carries the bytes and the locks of the pictures in them, so a
 * copy and its locks are indexed in one commit.
 */
export function encodePackRange(r: PackRange): Buffer {
  const head = Buffer.from(JSON.stringify({ pool: r.pool, createdMs: r.createdMs, from: r.from, end: r.end, locks: r.locks }));
  const len = Buffer.alloc(4);
  len.writeUInt32BE(head.length);
  return Buffer.concat([len, head, r.bytes]);
}

/** Inverse of encodePackRange; VALIDATION_FAILED for anything else. */
export function decodePackRange(buf: Buffer): PackRange {
  const bad = (why: string): RecorderError => new RecorderError('VALIDATION_FAILED', `a pack range answer ${why}`);
  if (buf.length < 4) throw bad('is shorter than its head');
  const len = buf.readUInt32BE(0);
  if (4 + len > buf.length) throw bad('is shorter than its head');
  let h: unknown;
  try {
    h = JSON.parse(buf.subarray(4, 4 + len).toString('utf8'));
  } catch {
    throw bad('has a head that is not JSON');
  }
  const o = h as Partial<Record<keyof PackRange, unknown>>;
  const locksOk = Array.isArray(o.locks) && o.locks.every(isLock);
  if (typeof o.pool !== 'string' || !Number.isSafeInteger(o.createdMs) || !Number.isSafeInteger(o.from) || !Number.isSafeInteger(o.end) || !locksOk) {
    throw bad('has a head without pool, createdMs, from, end and locks');
  }
  return {
    pool: o.pool,
    createdMs: o.createdMs as number,
    from: o.from as number,
    end: o.end as number,
    locks: o.locks as CopiedLock[],
    bytes: buf.subarray(4 + len),
  };
}

function isLock(l: unknown): l is CopiedLock {
  return (
    Array.isArray(l) &&
    l.length === 4 &&
    typeof l[0] === 'string' &&
    Number.isSafeInteger(l[1]) &&
    Number.isSafeInteger(l[2]) &&
    (l[3] === null || Number.isSafeInteger(l[3]))
  );
}
