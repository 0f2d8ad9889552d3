/**
 * Per-fragment sample tables read from a segment file's own `moof` boxes, in compact
 * typed arrays, with a bounded LRU cache per segment file. The progressive download
 * (moov built per request) and trick play both need every sample of a range; reading
 * and parsing every moof on each request costs one pread per GOP, so tables are kept
 * here keyed by file and fragment offset (a segment still being written only gains
 * fragments; the ones already cached stay valid because files are append-only).
 *
 * A segment not cached yet is first looked up in the persisted tables (written when the
 * segment closed, playback/sample-table-codec.ts, storage/segment-tables.ts): one compact
 * record per segment instead of one moof read per GOP. A record is used only when it
 * describes the file the caller planned with (same size, same init size, every
 * fragment asked for at the same offset and size); otherwise it is ignored, the moofs
 * are read, and the source is told so it can rebuild the record off the request path.
 *
 * Invariant: a fragment's sample data lies inside the fragment (moof + mdat) and is
 * addressed relative to the moof start (default-base-is-moof, as the ingest writes it);
 * anything else is refused with MP4_UNSUPPORTED rather than served wrong.
 */
import type { FileHandle } from 'node:fs/promises';
import { LRUCache } from 'lru-cache';
import { openSegmentFile, type PsViews } from './segment-source.ts';
import { createHash } from 'node:crypto';
import { Mp4FormatError } from '../media/mp4/boxes.ts';
import { parseInit, type InitInfo } from '../media/mp4/init-info.ts';
import { parseMoof } from '../media/mp4/moof.ts';
import { readExactly } from '../media/mp4/file-read.ts';
import { decodeSampleTables, type PersistedTables } from './sample-table-codec.ts';
import { sameInitButDurations } from '../media/mp4/init-duration.ts';

export type { FragmentRef, FragmentTable, SampleRun, TrackFragment } from './sample-table-types.ts';
import type { FragmentRef, FragmentTable, SampleRun, TrackFragment } from './sample-table-types.ts';

export interface SegmentTables {
  path: string;
  /** File size the caller planned with (index), when given. */
  fileBytes?: number;
  init: Buffer;
  info: InitInfo;
  /** The fragments asked for, in the order asked. */
  fragments: FragmentTable[];
}

const TFHD_BASE_DATA_OFFSET = 0x01;

/** Parses the moof at the start of `moof` (a fragment at `ref`) into a compact table. */
export function fragmentTable(moof: Buffer, ref: FragmentRef, info: InitInfo): FragmentTable {
  const parsed = parseMoof(moof, info.trexDefaults);
  const moofSize = moof.readUInt32BE(0);
  const tracks: TrackFragment[] = parsed.tracks.map((t) => {
    if (t.tfhdFlags & TFHD_BASE_DATA_OFFSET)
      throw new Mp4FormatError('MP4_UNSUPPORTED', `fragment at ${ref.offset}: explicit base data offsets are not served`);
    const runs: SampleRun[] = [];
    let next = -1;
    let i = 0;
    for (const r of t.runs) {
      const rel = r.dataOffset ?? (next < 0 ? 0 : next);
      let bytes = 0;
      for (let k = 0; k < r.sampleCount; k++) bytes += t.sizes[i + k]!;
      if (rel < moofSize || rel + bytes > ref.size) {
        throw new Mp4FormatError(
          'MP4_BAD_BOX',
          `fragment at ${ref.offset}: track ${t.trackId} data [${rel}, ${rel + bytes}) outside the fragment (${ref.size} bytes)`,
        );
      }
      runs.push({ fileOffset: ref.offset + rel, count: r.sampleCount, bytes });
      next = rel + bytes;
      i += r.sampleCount;
    }
    return {
      trackId: t.trackId,
      baseDecodeTime: t.baseDecodeTime,
      durations: Uint32Array.from(t.durations),
      sizes: Uint32Array.from(t.sizes),
      flags: Uint32Array.from(t.flags),
      compositionOffsets: Int32Array.from(t.compositionOffsets),
      runs,
      durationTicks: t.durationTicks,
    };
  });
  return { offset: ref.offset, size: ref.size, moofSize, tracks };
}

/** A moof is a few KiB: one read of this much usually holds all of it. */
const MOOF_GUESS = 8192;

async function readMoofAt(fh: FileHandle, ref: FragmentRef): Promise<Buffer> {
  const head = await readExactly(fh, ref.offset, Math.min(MOOF_GUESS, ref.size));
  const size = head.length >= 8 ? head.readUInt32BE(0) : 0;
  if (head.toString('latin1', 4, 8) !== 'moof' || size < 8 || size > ref.size)
    throw new Mp4FormatError('MP4_UNEXPECTED_BOX', `no moof at offset ${ref.offset}`);
  return size <= head.length ? head.subarray(0, size) : readExactly(fh, ref.offset, size);
}

/**
 * The init and every fragment's table of a segment file, read from its moofs (for the
 * persisted tables, storage/segment-tables.ts). PS files are read through their fMP4
 * view like everything else. `fileBytes` is what the caller's index says; a file
 * smaller than that is refused (MP4_TRUNCATED).
 */
export async function readFileTables(
  path: string,
  initSize: number,
  fragments: readonly FragmentRef[],
  fileBytes: number,
  views?: PsViews,
): Promise<PersistedTables> {
  const fh = await openSegmentFile(path, views);
  try {
    await checkUnchanged(fh, path, fileBytes);
    const init = await readExactly(fh, 0, initSize);
    const info = parseInit(init);
    const tables: FragmentTable[] = [];
    for (const ref of fragments) tables.push(fragmentTable(await readMoofAt(fh, ref), ref, info));
    return { fileBytes, init, fragments: tables };
  } finally {
    await fh.close();
  }
}

/**
 * Where persisted tables come from (storage/segment-tables.ts implements it on the
 * index). Both calls are synchronous and cheap: they sit on the request path.
 */
export interface PersistedTableSource {
  /** The stored record of the segment file at `path`, if there is one. */
  get(path: string): Uint8Array | undefined;
  /** No usable record for `path` (none, or `reason`): a chance to (re)build it in the background. */
  missing(path: string, reason: string | null): void;
}

/**
 * Throws MP4_TRUNCATED (served as SEGMENT_GONE) when the file opened as `fh` is
 * smaller than the `fileBytes` a request was planned with: it was rewritten (thinned)
 * or cut since, and its offsets no longer mean what the plan says.
 */
export async function checkUnchanged(fh: FileHandle, path: string, fileBytes: number | undefined): Promise<void> {
  if (fileBytes === undefined) return;
  const { size } = await fh.stat();
  if (size < fileBytes) throw new Mp4FormatError('MP4_TRUNCATED', `${path} has ${size} bytes, ${fileBytes} when the request was planned: rewritten since`);
}

interface CachedSegment {
  /** Largest file size seen for this path: files only grow, unless rewritten. */
  fileBytes: number;
  init: Buffer;
  info: InitInfo;
  fragments: Map<number, FragmentTable>;
  bytes: number;
}

/** Rough heap cost of a table: 16 bytes per sample plus fixed overhead. */
function tableBytes(f: FragmentTable): number {
  let n = 200;
  for (const t of f.tracks) n += 150 + t.durations.length * 16 + t.runs.length * 40;
  return n;
}

/**
 * LRU (lru-cache) of segment tables bounded by an estimate of their heap bytes
 * (default 16 MiB: about 3 hours of one 25 fps camera with AAC). Whole segments are
 * evicted, oldest use first; a segment's size is counted again each time it is read.
 * One per node, built with the node's read caches (playback/read-caches.ts).
 */
export class SampleTableCache {
  private readonly segments: LRUCache<string, CachedSegment>;
  /** Parsed inits by content: a camera's segments nearly always share one init. */
  private readonly inits = new LRUCache<string, InitInfo>({ max: 64 });

  constructor(
    // Small on purpose: a miss with a persisted record costs ~0.1 ms per segment, while
    // every cached fragment is heap objects that each major GC marks (at 64 MiB the GC
    // pauses were the p99 of bench/playback's cold first bytes: 55–90 ms, 46–50 at 16).
    readonly maxBytes = 16 * 1024 * 1024,
    private readonly persisted?: PersistedTableSource,
    /** PS views kept across opens (the node's); without, each read converts what it reads. */
    readonly views?: PsViews,
  ) {
    this.segments = new LRUCache<string, CachedSegment>({ maxSize: maxBytes, sizeCalculation: (seg) => Math.max(1, seg.bytes) });
  }

  get bytes(): number {
    return this.segments.calculatedSize;
  }

  /**
   * Tables of `fragments` of the segment file at `path` whose init is `initSize` bytes.
   * Reads only what is not cached. Throws Mp4FormatError on bad bytes and the fs
   * error (ENOENT…) when the file is gone.
   */
  async read(path: string, initSize: number, fragments: readonly FragmentRef[], fileBytes?: number): Promise<SegmentTables> {
    let seg = this.segments.get(path);
    // A segment is append-only; a smaller one was rewritten at the same path (thinned
    // to its I-frames by retention): nothing cached for it is valid any more.
    if (seg && (seg.init.length !== initSize || (fileBytes !== undefined && fileBytes < seg.fileBytes))) {
      this.drop(path);
      seg = undefined;
    }
    let missing = seg ? fragments.filter((f) => seg!.fragments.get(f.offset)?.size !== f.size) : fragments;
    if ((!seg || missing.length > 0) && this.persisted && fileBytes !== undefined) {
      const stored = this.fromRecord(path, initSize, missing, fileBytes, seg);
      if (stored) {
        seg = stored;
        missing = [];
      }
    }
    if (!seg || missing.length > 0) {
      const fh = await openSegmentFile(path, this.views);
      try {
        if (!seg) {
          const init = await readExactly(fh, 0, initSize);
          seg = { fileBytes: fileBytes ?? 0, init, info: this.initInfo(init), fragments: new Map(), bytes: initSize + 2000 };
        }
        for (const ref of missing) {
          const table = fragmentTable(await readMoofAt(fh, ref), ref, seg.info);
          const old = seg.fragments.get(ref.offset);
          seg.fragments.set(ref.offset, table);
          seg.bytes += tableBytes(table) - (old ? tableBytes(old) : 0);
        }
      } finally {
        await fh.close();
      }
    }
    if (fileBytes !== undefined && fileBytes > seg.fileBytes) seg.fileBytes = fileBytes;
    // Most recently used, at its size now; older segments go while the total is over maxBytes.
    this.segments.set(path, seg);
    return {
      path,
      ...(fileBytes !== undefined ? { fileBytes } : {}),
      init: seg.init,
      info: seg.info,
      fragments: fragments.map((f) => seg.fragments.get(f.offset)!),
    };
  }

  /**
   * The segment as cached, with every fragment of its persisted record added, when the
   * record exists and describes the file planned with; otherwise null (and the source
   * is told). A record never overrides what was read from the file: an init that
   * differs from the one cached makes the record unusable.
   */
  private fromRecord(path: string, initSize: number, wanted: readonly FragmentRef[], fileBytes: number, seg: CachedSegment | undefined): CachedSegment | null {
    const source = this.persisted!;
    const record = source.get(path);
    if (!record) {
      source.missing(path, null);
      return null;
    }
    let tables: PersistedTables;
    try {
      tables = decodeSampleTables(record);
    } catch (err) {
      source.missing(path, (err as Error).message);
      return null;
    }
    const byOffset = new Map(tables.fragments.map((f) => [f.offset, f]));
    let why: string | null = null;
    if (tables.fileBytes !== fileBytes) why = `record of a ${tables.fileBytes}-byte file, the index says ${fileBytes}`;
    else if (tables.init.length !== initSize) why = `record with a ${tables.init.length}-byte init, the index says ${initSize}`;
    // The durations in an init are filled in when its segment closes: a cache entry read
    // while it was open and the record written after are the same init.
    else if (seg && !sameInitButDurations(seg.init, tables.init)) why = 'record init differs from the file';
    else {
      const ref = wanted.find((f) => byOffset.get(f.offset)?.size !== f.size);
      if (ref) why = `no fragment of ${ref.size} bytes at ${ref.offset} in the record`;
    }
    if (why) {
      source.missing(path, why);
      return null;
    }
    let info: InitInfo;
    try {
      info = seg?.info ?? this.initInfo(tables.init);
    } catch (err) {
      source.missing(path, (err as Error).message);
      return null;
    }
    seg ??= { fileBytes, init: tables.init, info, fragments: new Map(), bytes: initSize + 2000 };
    for (const table of tables.fragments) {
      const old = seg.fragments.get(table.offset);
      if (old?.size === table.size) continue;
      seg.fragments.set(table.offset, table);
      seg.bytes += tableBytes(table) - (old ? tableBytes(old) : 0);
    }
    return seg;
  }

  private initInfo(init: Buffer): InitInfo {
    const key = createHash('sha1').update(init).digest('hex');
    let info = this.inits.get(key);
    if (!info) {
      info = parseInit(init);
      this.inits.set(key, info);
    }
    return info;
  }

  /** Forget a file (deleted or rewritten). */
  drop(path: string): void {
    this.segments.delete(path);
  }
}
