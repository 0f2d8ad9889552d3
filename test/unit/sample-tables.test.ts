/**
 * Persisted sample tables (playback/sample-table-codec.ts, storage/segment-tables.ts) on
 * real ffmpeg output written by the real segment writer (fMP4 and PS, H.264 with
 * B-frames + AAC) into a real LMDB index:
 *   - the record decodes to exactly the tables parsed from the moofs, and a download
 *     built from it is byte-identical (same head, same ETag) to one built from moofs;
 *   - synthetic edge values survive the round trip;
 *   - corrupt, truncated, other-format or mismatching records are refused and the
 *     cache falls back to the moofs (never wrong tables), asking for a rebuild;
 *   - the record goes with the segment's removal, is dropped by a re-put (thinning) and
 *     rebuilt to match the thinned file; a write for an entry that changed meanwhile is
 *     not stored.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { crc32 } from 'node:zlib';
import { RecorderIndex } from '../../index/db.ts';
import { decodeGops } from '../../index/gop-table.ts';
import type { CameraConfig, SegmentRecord } from '../../index/records.ts';
import { silentLogger } from '../../lib/log.ts';
import { Fmp4Splitter, type Fmp4Chunk } from '../../media/mp4/fmp4-splitter.ts';
import { buildProgressive, progressiveEtag, progressiveStream } from '../../playback/progressive-mp4.ts';
import {
  SAMPLE_TABLE_FORMAT,
  SampleTableRecordError,
  decodeSampleTables,
  encodeSampleTables,
  type PersistedTables,
} from '../../playback/sample-table-codec.ts';
import { SampleTableCache, type FragmentTable, type PersistedTableSource, type SegmentTables } from '../../playback/sample-table.ts';
import { SegmentTableStore } from '../../storage/segment-tables.ts';
import { SegmentWriter } from '../../storage/segment-writer.ts';
import { thinSegment } from '../../storage/thin.ts';
import { tempDir } from '../helpers/recorder.ts';

const run = promisify(execFile);

async function chunksOf(dir: string, seconds: number): Promise<Fmp4Chunk[]> {
  const file = join(dir, 'src.mp4');
  await run('ffmpeg', [
    '-v',
    'error',
    '-y',
    '-f',
    'lavfi',
    '-i',
    'testsrc=size=160x120:rate=25',
    '-f',
    'lavfi',
    '-i',
    'sine=r=48000',
    '-t',
    String(seconds),
    '-c:v',
    'libx264',
    '-g',
    '25',
    '-bf',
    '2',
    '-pix_fmt',
    'yuv420p',
    '-c:a',
    'aac',
    '-ac',
    '1',
    '-f',
    'mp4',
    '-movflags',
    'frag_keyframe+empty_moov+default_base_moof',
    file,
  ]);
  const out: Fmp4Chunk[] = [];
  for await (const c of Readable.from([await readFile(file)]).pipe(new Fmp4Splitter())) out.push(c as Fmp4Chunk);
  return out;
}

interface Recorded {
  dir: string;
  index: RecorderIndex;
  store: SegmentTableStore;
  segs: SegmentRecord[];
}

/** Real segments written by the segment writer, with the store on its close hook (as node.ts wires it). */
async function record(t: import('ava').ExecutionContext, format: 'mp4' | 'ps', seconds = 7): Promise<Recorded> {
  const dir = await tempDir(t);
  const chunks = await chunksOf(dir, seconds);
  const index = await RecorderIndex.open(dir);
  t.teardown(() => index.close());
  const store = new SegmentTableStore({ index, dataDir: dir, log: silentLogger });
  t.teardown(() => store.stop());
  const camera: CameraConfig = { id: 'cam', pool: 'default', streams: { main: 'rtsp://x/y' }, record: { stream: 'main', format } };
  let now = Date.UTC(2026, 10, 25, 12, 0, 0);
  const writer = new SegmentWriter(
    camera,
    { index, dataDir: dir, clock: { nowMs: () => now }, log: silentLogger, segmentMs: 3000, onSegmentClosed: (s) => store.segmentClosed(s) },
    null,
  );
  for (const c of chunks) {
    if (c.kind === 'fragment') now += 1000;
    await writer.handle(c);
  }
  await writer.close();
  await store.idle();
  return { dir, index, store, segs: [...index.segments.all('cam')] };
}

const refsOf = (seg: SegmentRecord) => decodeGops(seg.gops).map((g) => ({ offset: g.offset, size: g.size }));

/** Tables parsed from the file's moofs, as before persisted tables existed. */
async function fromMoofs(dir: string, seg: SegmentRecord): Promise<SegmentTables> {
  return new SampleTableCache().read(join(dir, seg.file), seg.initSize, refsOf(seg), seg.bytes);
}

async function collect(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/** A source over a plain map, recording what the cache tells it. */
function mapSource(records: Map<string, Uint8Array>): PersistedTableSource & { calls: { path: string; reason: string | null }[]; gets: number } {
  return {
    calls: [],
    gets: 0,
    get(path) {
      this.gets++;
      return records.get(path);
    },
    missing(path, reason) {
      this.calls.push({ path, reason });
    },
  };
}

for (const format of ['mp4', 'ps'] as const) {
  test(`${format}: the record written at close decodes to exactly the moofs' tables, and the download built from it is byte-identical`, async (t) => {
    const { dir, index, store, segs } = await record(t, format);
    t.true(segs.length >= 2, `${segs.length} segments`);
    t.is(store.stats.stored, segs.length, 'one record per closed segment');
    const viaRecord = new SampleTableCache(undefined, store);
    const planned: { a: SegmentTables; b: SegmentTables }[] = [];
    for (const seg of segs) {
      const bytes = index.segments.sampleTables(seg.camera, seg.startMs);
      t.truthy(bytes, `record of ${seg.file}`);
      t.is(bytes![0], SAMPLE_TABLE_FORMAT);
      const decoded = decodeSampleTables(bytes!);
      const moofs = await fromMoofs(dir, seg);
      t.is(decoded.fileBytes, seg.bytes);
      t.true(decoded.init.equals(moofs.init), 'init as in the file');
      t.deepEqual(decoded.fragments, moofs.fragments);
      const a = await viaRecord.read(join(dir, seg.file), seg.initSize, refsOf(seg), seg.bytes);
      t.deepEqual(a.fragments, moofs.fragments);
      planned.push({ a, b: moofs });
    }
    // Persisted and moof tables make the same file, byte for byte, with the same ETag.
    const slices = segs.map((s) => ({ path: join(dir, s.file), fragments: refsOf(s) }));
    const fromRecord = buildProgressive({ segments: planned.map((p) => p.a), skipMs: 300, trimEndMs: 200 });
    const fromMoof = buildProgressive({ segments: planned.map((p) => p.b), skipMs: 300, trimEndMs: 200 });
    t.true(fromRecord.head.equals(fromMoof.head));
    t.deepEqual(fromRecord.parts, fromMoof.parts);
    t.is(progressiveEtag(planned[0]!.a.init, slices, 300, 200), progressiveEtag(planned[0]!.b.init, slices, 300, 200));
    t.true((await collect(progressiveStream(fromRecord))).equals(await collect(progressiveStream(fromMoof))));
  });
}

test('a record is used without reading the file; the file is only opened when serving', async (t) => {
  const { dir, index, segs } = await record(t, 'mp4', 4);
  const seg = segs[0]!;
  const path = join(dir, seg.file);
  const original = await fromMoofs(dir, seg);
  const records = new Map([[path, index.segments.sampleTables(seg.camera, seg.startMs)!]]);
  // Garbage of the same size at the path: reading its moofs would fail.
  await writeFile(path, Buffer.alloc(seg.bytes, 0xab));
  const source = mapSource(records);
  const got = await new SampleTableCache(undefined, source).read(path, seg.initSize, refsOf(seg), seg.bytes);
  t.deepEqual(got.fragments, original.fragments);
  t.true(got.init.equals(original.init));
  t.deepEqual(source.calls, []);
  // Without the record the same read fails on the garbage (so the record was what served it).
  await t.throwsAsync(new SampleTableCache(undefined, mapSource(new Map())).read(path, seg.initSize, refsOf(seg), seg.bytes));
});

test('records that do not match what the index says are ignored: the moofs are read and a rebuild is asked for', async (t) => {
  const { dir, index, segs } = await record(t, 'mp4', 7);
  const [seg, other] = segs as [SegmentRecord, SegmentRecord];
  const path = join(dir, seg.file);
  const good = index.segments.sampleTables(seg.camera, seg.startMs)!;
  const moofs = await fromMoofs(dir, seg);
  const cases: [string, Uint8Array, RegExp][] = [
    ["another segment's record", index.segments.sampleTables(other.camera, other.startMs)!, /record of a \d+-byte file|no fragment/],
    ['a flipped byte', Buffer.from(good).fill(good[40]! ^ 0xff, 40, 41), /checksum/],
    ['cut short', good.subarray(0, good.length - 9), /checksum|cut short|bytes/],
    ['a newer format', withFormat(good, SAMPLE_TABLE_FORMAT + 1), /format/],
  ];
  for (const [what, rec, reason] of cases) {
    const source = mapSource(new Map([[path, rec]]));
    const got = await new SampleTableCache(undefined, source).read(path, seg.initSize, refsOf(seg), seg.bytes);
    t.deepEqual(got.fragments, moofs.fragments, what);
    t.is(source.calls.length, 1, what);
    t.regex(source.calls[0]!.reason ?? '', reason, what);
  }
  // The index says the file is larger than the record's (appended since): ignored.
  const source = mapSource(new Map([[path, good]]));
  await new SampleTableCache(undefined, source).read(path, seg.initSize, refsOf(seg), seg.bytes + 1).catch(() => undefined);
  t.regex(source.calls[0]?.reason ?? '', /the index says/);
  // No record at all: read from the file, rebuild asked for without a complaint.
  const none = mapSource(new Map());
  await new SampleTableCache(undefined, none).read(path, seg.initSize, refsOf(seg), seg.bytes);
  t.deepEqual(none.calls, [{ path, reason: null }]);
  // Cached tables are not looked up again.
  const cache = new SampleTableCache(undefined, none);
  await cache.read(path, seg.initSize, refsOf(seg), seg.bytes);
  const gets = none.gets;
  await cache.read(path, seg.initSize, refsOf(seg), seg.bytes);
  t.is(none.gets, gets);
});

function withFormat(rec: Uint8Array, format: number): Buffer {
  const b = Buffer.from(rec);
  b[0] = format;
  b.writeUInt32LE(crc32(b.subarray(0, b.length - 4)), b.length - 4);
  return b;
}

type TrackTable = FragmentTable['tracks'][number];

function track(o: Partial<Omit<TrackTable, 'sizes'>> & { sizes: number[] }, fileOffset: number): TrackTable {
  const n = o.sizes.length;
  const durations = o.durations ?? Uint32Array.from({ length: n }, () => 1024);
  const sizes = Uint32Array.from(o.sizes);
  let bytes = 0;
  for (const s of sizes) bytes += s;
  return {
    trackId: o.trackId ?? 1,
    baseDecodeTime: o.baseDecodeTime ?? 0n,
    durations,
    sizes,
    flags: o.flags ?? Uint32Array.from({ length: n }, (_, i) => (i === 0 ? 0x02000000 : 0x01010000)),
    compositionOffsets: o.compositionOffsets ?? new Int32Array(n),
    runs: o.runs ?? [{ fileOffset, count: n, bytes }],
    durationTicks: durations.reduce((a, d) => a + d, 0),
  };
}

test('synthetic edge values survive the round trip; values that do not hold together are refused', (t) => {
  const init = Buffer.concat([Buffer.from('init bytes'), Buffer.alloc(100)]);
  const big = [0, 1, 127, 128, 16383, 16384, 0x1fffff, 0x200000, 0xfffffff, 0x10000000, 0xffffffff];
  const sizesA = [10, 20, 30];
  const fragA: FragmentTable = {
    offset: 110,
    size: 1000,
    moofSize: 100,
    tracks: [
      track(
        {
          trackId: 1,
          baseDecodeTime: (1n << 64n) - 5000n,
          sizes: sizesA,
          durations: Uint32Array.from([0xffffffff, 0, 3]),
          compositionOffsets: Int32Array.from([-(2 ** 31), 2 ** 31 - 1, -1]),
          flags: Uint32Array.from(big.slice(0, 3)),
        },
        210,
      ),
      track({ trackId: 7, sizes: [], runs: [] }, 0),
    ],
  };
  // A second fragment after a hole, with two runs interleaved with another track.
  const fragB: FragmentTable = {
    offset: 2000,
    size: 5000,
    moofSize: 200,
    tracks: [
      track(
        {
          trackId: 1,
          baseDecodeTime: 12345n,
          sizes: [5, 6, 7, 8],
          runs: [
            { fileOffset: 2200, count: 2, bytes: 11 },
            { fileOffset: 2300, count: 2, bytes: 15 },
          ],
        },
        0,
      ),
      track({ trackId: 2, baseDecodeTime: 0n, sizes: big.slice(0, 8).map((v) => v % 300), flags: Uint32Array.from(big.slice(0, 8)) }, 2211),
    ],
  };
  // Sizes that take each fixed-width form, with values equal to their form's marker.
  const u8Sizes = Array.from({ length: 40 }, (_, i) => (i % 13 === 0 ? 255 : i % 17 === 0 ? 70_000 : 100 + i));
  const u16Sizes = Array.from({ length: 40 }, (_, i) => (i % 11 === 0 ? 0xffff : i % 7 === 0 ? 0x1_0000 : 1000 + 37 * i));
  const sum = (xs: number[]): number => xs.reduce((n, x) => n + x, 0);
  const fragC: FragmentTable = {
    offset: 7000,
    size: 200 + sum(u8Sizes) + sum(u16Sizes),
    moofSize: 200,
    tracks: [track({ trackId: 2, baseDecodeTime: 5n, sizes: u8Sizes }, 7200), track({ trackId: 1, baseDecodeTime: 99n, sizes: u16Sizes }, 7200 + sum(u8Sizes))],
  };
  const tables: PersistedTables = { fileBytes: fragC.offset + fragC.size, init, fragments: [fragA, fragB, fragC] };
  const enc = encodeSampleTables(tables);
  t.deepEqual(decodeSampleTables(enc), tables);
  // Mostly-small sizes cost less than two bytes each, mostly-16-bit ones less than four.
  const sizesOnly = (sizes: number[]): number =>
    encodeSampleTables({ fileBytes: 1e9, init, fragments: [{ offset: 110, size: 200 + sum(sizes), moofSize: 200, tracks: [track({ sizes }, 310)] }] }).length;
  const constant = sizesOnly(u8Sizes.map(() => 100));
  t.true(sizesOnly(u8Sizes) < constant + 2 * 40, `u8: ${sizesOnly(u8Sizes)} bytes, ${constant} with constant sizes`);
  t.true(sizesOnly(u16Sizes) < constant + 4 * 40, `u16: ${sizesOnly(u16Sizes)} bytes, ${constant} with constant sizes`);
  // Constant values cost a run, not a value per sample.
  const many = track({ sizes: Array.from({ length: 1000 }, () => 300) }, 210);
  const small = encodeSampleTables({ fileBytes: 400_000, init, fragments: [{ offset: 110, size: 310_000, moofSize: 100, tracks: [many] }] });
  t.true(small.length < 80, `${small.length} bytes for 1000 equal samples (values one by one: over 2000)`);

  const refuse = (what: string, t2: PersistedTables, re: RegExp): void => {
    const err = t.throws(() => decodeSampleTables(encodeSampleTables(t2)), undefined, what);
    t.true(err instanceof SampleTableRecordError, what);
    t.regex(err.message, re, what);
  };
  refuse('a fragment past the file', { ...tables, fileBytes: tables.fileBytes - 1 }, /runs past the file/);
  const base: PersistedTables = { fileBytes: 7000, init, fragments: [fragA, fragB] };
  refuse('samples before the moof end', { ...base, fragments: [{ ...fragA, moofSize: 150 }] }, /outside its fragment/);
  refuse('samples past the fragment', { ...base, fragments: [{ ...fragA, size: 150 }] }, /outside its fragment/);
  refuse(
    'runs that do not hold every sample',
    { ...base, fragments: [{ ...fragA, tracks: [{ ...fragA.tracks[0]!, runs: [{ fileOffset: 210, count: 2, bytes: 30 }] }] }] },
    /every sample/,
  );
  refuse('overlapping fragments', { ...base, fragments: [fragA, { ...fragB, offset: 1000 }] }, /overlaps/);

  // Every truncation and every single flipped byte is refused (never decoded into other tables).
  for (let n = 0; n < enc.length; n++) t.throws(() => decodeSampleTables(enc.subarray(0, n)), { instanceOf: SampleTableRecordError });
  for (let i = 0; i < enc.length; i++) {
    const b = Buffer.from(enc);
    b[i]! ^= 0x10;
    t.throws(() => decodeSampleTables(b), { instanceOf: SampleTableRecordError }, `byte ${i}`);
  }
});

test('the record goes with the segment, is dropped by a re-put of the closed segment, and is never stored for an entry that changed', async (t) => {
  const { dir, index, store, segs } = await record(t, 'mp4', 7);
  const [a, b, c] = segs as [SegmentRecord, SegmentRecord, SegmentRecord];
  const has = (s: SegmentRecord): boolean => index.segments.sampleTables(s.camera, s.startMs) !== undefined;
  t.true(has(a) && has(b) && has(c));
  const recordOfA = index.segments.sampleTables(a.camera, a.startMs)!;

  // Removal (retention's deleteSegment, purge, reconcile all go through index.segments.remove).
  await index.segments.remove(a.camera, a.startMs);
  t.false(has(a));
  t.false(await index.segments.putSampleTables(a, recordOfA), 'no record for a segment that is gone');
  t.false(has(a));
  // A build that was queued before the removal finds nothing to do.
  store.segmentClosed(a);
  await store.idle();
  t.false(has(a));

  // An entry that changed since the tables were read (bytes, GOP table, open) is not written.
  const recordOfB = index.segments.sampleTables(b.camera, b.startMs)!;
  t.false(await index.segments.putSampleTables({ ...b, bytes: b.bytes + 1 }, recordOfB));
  t.false(await index.segments.putSampleTables({ ...b, gops: b.gops.subarray(12) }, recordOfB));
  t.true(await index.segments.putSampleTables(b, recordOfB));
  // Racing a removal in the same write batch, either order: no record outlives its segment.
  // (lmdb-js runs transaction callbacks after the batch's plain writes, so the build may
  // see the removal even when queued first; either way nothing is left.)
  await Promise.all([index.segments.putSampleTables(b, recordOfB), index.segments.remove(b.camera, b.startMs)]);
  t.false(has(b), 'build queued first, removal after');
  await index.segments.put(b);
  const [, removedFirst] = await Promise.all([index.segments.remove(b.camera, b.startMs), index.segments.putSampleTables(b, recordOfB)]);
  t.false(removedFirst, 'a build queued after the removal in the same turn stores nothing');
  t.false(has(b));

  // Thinning rewrites c: its record goes in the commit of the new entry, and the next read rebuilds it for the new file.
  const thinned = await thinSegment(index, dir, c);
  t.true(thinned.bytesAfter < thinned.bytesBefore);
  t.false(has(c), 'record dropped with the re-put');
  const fresh = index.segments.get(c.camera, c.startMs)!;
  const cache = new SampleTableCache(undefined, store);
  const got = await cache.read(join(dir, fresh.file), fresh.initSize, refsOf(fresh), fresh.bytes);
  await store.idle();
  const rebuilt = decodeSampleTables(index.segments.sampleTables(c.camera, c.startMs)!);
  t.is(rebuilt.fileBytes, fresh.bytes);
  t.deepEqual(rebuilt.fragments, got.fragments);
  t.deepEqual(rebuilt.fragments, (await fromMoofs(dir, fresh)).fragments);

  // A full re-index clears them all.
  await index.segments.clear();
  t.is(index.segments.sampleTableKeys().length, 0);
});
