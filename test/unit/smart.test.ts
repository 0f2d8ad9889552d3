/**
 * Pure parts of the smart stream: our TS demuxer (against our muxer and against
 * ffmpeg's MPEG-TS), the smart file framing, ONVIF XML / KLV / SEI user-data parsing,
 * and the writer's handling of bad and flooding input on a real LMDB.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { RecorderIndex } from '../../index/db.ts';
import { createLogger } from '../../lib/log.ts';
import { classifyPayload, parseKlv, parseOnvifMetadata, SmartPacketError } from '../../smart/onvif-meta.ts';
import { decodeFileHeader, decodeRecords, encodeFileHeader, encodeRecord, SMART_FILE_HEADER_BYTES } from '../../smart/smart-frame.ts';
import { TsDemuxer, TsMuxer, unwrap, type PesPacket } from '../../smart/ts-demux.ts';
import { deleteSmartBefore, deleteSmartRange } from '../../smart/smart-retention.ts';
import { Fmp4Splitter, type Fmp4Chunk } from '../../media/mp4/fmp4-splitter.ts';
import { fragmentUserData, seiUserData, videoSampleFormat } from '../../media/codec/sei-userdata.ts';
import { SmartWriter, smartStats, SMART_MAX_PACKETS_PER_SEC } from '../../smart/smart-writer.ts';

const run = promisify(execFile);

function doc(cls: string, utc: string, extra = ''): Buffer {
  return Buffer.from(
    `<?xml version="1.0"?><tt:MetadataStream xmlns:tt="http://www.onvif.org/ver10/schema" xmlns:wsnt="http://docs.oasis-open.org/wsn/b-2">` +
      `<tt:VideoAnalytics><tt:Frame UtcTime="${utc}"><tt:Object ObjectId="1"><tt:Appearance><tt:Class><tt:Type Likelihood="0.8">${cls}</tt:Type></tt:Class></tt:Appearance></tt:Object>` +
      `<tt:Object ObjectId="2"><tt:Appearance><tt:Class><tt:ClassCandidate><tt:Type>Face</tt:Type><tt:Likelihood>0.5</tt:Likelihood></tt:ClassCandidate></tt:Class></tt:Appearance></tt:Object></tt:Frame></tt:VideoAnalytics>${extra}</tt:MetadataStream>`,
  );
}

const EVENT =
  '<tt:Event><wsnt:NotificationMessage><wsnt:Topic Dialect="x">tns1:RuleEngine/FieldDetector/ObjectsInside</wsnt:Topic>' +
  '<wsnt:Message><tt:Message UtcTime="2026-01-01T00:00:00Z"><tt:Source><tt:SimpleItem Name="RuleName" Value="Yard"/></tt:Source></tt:Message></wsnt:Message></wsnt:NotificationMessage></tt:Event>';

test('ONVIF metadata: classes (2.x and 1.x), objects, UtcTime, topics and rule names', (t) => {
  const c = parseOnvifMetadata(doc('Human', '2026-03-01T10:00:00.250Z', EVENT));
  t.deepEqual(c.classes, ['Human', 'Face']);
  t.is(c.objects, 2);
  t.is(c.contentMs, Date.parse('2026-03-01T10:00:00.250Z'));
  t.deepEqual(c.topics, ['tns1:RuleEngine/FieldDetector/ObjectsInside']);
  t.deepEqual(c.rules, ['Yard']);
  // No prefix at all (some vendors): matched by local name.
  const plain = parseOnvifMetadata(
    Buffer.from(
      '<MetadataStream><VideoAnalytics><Frame UtcTime="2026-03-01T10:00:01Z"><Object><Appearance><Class><Type>Vehicle</Type></Class></Appearance></Object></Frame></VideoAnalytics></MetadataStream>',
    ),
  );
  t.deepEqual(plain.classes, ['Vehicle']);
});

test('malformed XML, foreign XML and oversize documents are refused with SmartPacketError', (t) => {
  for (const [bytes, problem] of [
    [Buffer.from('<tt:MetadataStream><tt:VideoAnalytics><tt:Frame UtcTime='), 'malformedXml'],
    [Buffer.from('<a><b></a></b>'), 'malformedXml'],
    [Buffer.from('<html><body/></html>'), 'unknownPayload'],
    [Buffer.concat([Buffer.from('<tt:MetadataStream>'), Buffer.alloc(300 * 1024, 0x20), Buffer.from('</tt:MetadataStream>')]), 'malformedXml'],
  ] as const) {
    const err = t.throws(() => parseOnvifMetadata(bytes), { instanceOf: SmartPacketError });
    t.is(err.problem, problem);
    t.is(err.code, 'SMART_PACKET_INVALID');
  }
  // A hostile document cannot bloat the index: terms are capped.
  const many = Array.from(
    { length: 100 },
    (_, i) => `<tt:Object><tt:Appearance><tt:Class><tt:Type>C${i}</tt:Type></tt:Class></tt:Appearance></tt:Object>`,
  ).join('');
  t.is(
    parseOnvifMetadata(Buffer.from(`<tt:MetadataStream><tt:VideoAnalytics><tt:Frame>${many}</tt:Frame></tt:VideoAnalytics></tt:MetadataStream>`)).classes
      .length,
    32,
  );
});

test('payload classification and KLV framing', (t) => {
  const ul = Buffer.from('060e2b34020b01010e01030101000000', 'hex');
  const klv = Buffer.concat([ul, Buffer.from([0x81, 3, 1, 2, 3])]);
  t.is(classifyPayload(klv), 'klv');
  t.is(classifyPayload(Buffer.from('\ufeff  <x/>')), 'onvif');
  t.is(classifyPayload(Buffer.from([0, 1, 2, 3])), null);
  t.deepEqual(parseKlv(klv).topics, [`klv:${ul.toString('hex')}`]);
  t.is(t.throws(() => parseKlv(Buffer.concat([ul, Buffer.from([0x82, 0x10, 0x00, 1])])), { instanceOf: SmartPacketError }).problem, 'malformedKlv');
  // MISB ST 0601 tag 2: the packet's own time (UNIX microseconds).
  const stamp = Buffer.alloc(8);
  stamp.writeBigUInt64BE(1_760_000_000_123_456n);
  const misb = Buffer.concat([ul, Buffer.from([12, 1, 2, 0x00, 0x00, 2, 8]), stamp.subarray(0, 8)]);
  misb[16] = misb.length - 17;
  t.is(parseKlv(misb).contentMs, 1_760_000_000_123);
});

test('smart framing round-trips and stops at a torn record', (t) => {
  const recs = [0, 1, 2].map((i) =>
    encodeRecord({ kind: 'onvif', streamType: 6, timeMs: 1_760_000_000_000 + i, mediaTicks90k: 2 ** 33 + i * 9000, payload: Buffer.from(`<x>${i}</x>`) }),
  );
  const file = Buffer.concat([encodeFileHeader(1_760_000_000_000), ...recs]);
  t.deepEqual(decodeFileHeader(file), { startMs: 1_760_000_000_000, version: 1 });
  const all = decodeRecords(file, SMART_FILE_HEADER_BYTES);
  t.is(all.records.length, 3);
  t.is(all.validBytes, file.length);
  t.is(all.records[2]!.mediaTicks90k, 2 ** 33 + 18000);
  t.is(all.records[1]!.payload.toString(), '<x>1</x>');
  // Torn tail (crash mid-write) and a flipped payload byte (CRC) both end the read there.
  t.is(decodeRecords(file.subarray(0, file.length - 3), SMART_FILE_HEADER_BYTES).records.length, 2);
  const flipped = Buffer.from(file);
  flipped[file.length - 2] = flipped[file.length - 2]! ^ 0xff;
  const r = decodeRecords(flipped, SMART_FILE_HEADER_BYTES);
  t.is(r.records.length, 2);
  t.is(r.validBytes, file.length - recs[2]!.length);
  t.is(decodeFileHeader(Buffer.from('nope')), null);
});

function collect(chunks: Buffer[], cut = 0): { pes: PesPacket[]; demux: TsDemuxer } {
  const pes: PesPacket[] = [];
  const demux = new TsDemuxer({ onPes: (p) => pes.push(p) });
  const all = Buffer.concat(chunks);
  if (cut > 0) for (let at = 0; at < all.length; at += cut) demux.push(all.subarray(at, at + cut));
  else demux.push(all);
  demux.end();
  return { pes, demux };
}

test('TS demux: packets, boundaries and PTS/DTS kept across any cut of the input', (t) => {
  const mux = new TsMuxer([
    { pid: 0x101, streamType: 0x06 },
    { pid: 0x102, streamType: 0x06, registration: 'KLVA' },
  ]);
  const big = Buffer.alloc(1000, 0x41);
  const chunks = [
    mux.psi(),
    mux.pes(0x101, Buffer.from('<a/>'), 90000),
    mux.pes(0x101, big, 93600, { dts: 93000 }),
    mux.pes(0x102, Buffer.from([6, 14, 43, 52]), 100),
  ];
  for (const cut of [0, 1, 7, 188, 500]) {
    const { pes, demux } = collect(chunks, cut);
    t.deepEqual(
      pes.map((p) => [p.pid, p.pts, p.dts, p.payload.length]),
      [
        [0x101, 90000, undefined, 4],
        [0x101, 93600, 93000, 1000],
        [0x102, 100, undefined, 4],
      ],
      `cut ${cut}`,
    );
    t.true(pes[1]!.payload.equals(big));
    t.is(pes[2]!.registration, 'KLVA');
    t.deepEqual(demux.counters, { truncatedPes: 0, syncLost: 0, badSection: 0 });
  }
});

test('TS demux: truncated PES, continuity gaps, lost sync and unannounced PIDs are counted, never emitted', (t) => {
  const mux = new TsMuxer([{ pid: 0x101, streamType: 0x06 }]);
  const psi = mux.psi();
  const long = mux.pes(0x101, Buffer.alloc(600, 1), 9000); // 4 TS packets
  const ok = mux.pes(0x101, Buffer.from('<ok/>'), 18000);
  // Drop the second TS packet of the long PES: a continuity gap.
  const gap = Buffer.concat([long.subarray(0, 188), long.subarray(376)]);
  let r = collect([psi, gap, ok]);
  t.deepEqual(
    r.pes.map((p) => p.payload.toString()),
    ['<ok/>'],
  );
  t.is(r.demux.counters.truncatedPes, 1);
  // Cut off at the end: the declared length is never reached.
  r = collect([psi, long.subarray(0, 376)]);
  t.is(r.pes.length, 0);
  t.is(r.demux.counters.truncatedPes, 1);
  // Garbage between packets: resync on the next sync byte.
  r = collect([psi, Buffer.from('garbage!'), ok]);
  t.deepEqual(
    r.pes.map((p) => p.payload.toString()),
    ['<ok/>'],
  );
  t.true(r.demux.counters.syncLost >= 1);
  // A PID no PMT announced is ignored.
  const other = new TsMuxer([{ pid: 0x105, streamType: 0x06 }]);
  r = collect([psi, other.pes(0x105, Buffer.from('x'), 1)]);
  t.is(r.pes.length, 0);
});

test('TS demux: PTS unwraps across the 33-bit wrap', (t) => {
  t.is(unwrap(100, 2 ** 33 - 100), 2 ** 33 + 100);
  t.is(unwrap(2 ** 33 - 100, 2 ** 33 + 100), 2 ** 33 - 100);
  const mux = new TsMuxer([{ pid: 0x101, streamType: 0x06 }]);
  const { pes } = collect([mux.psi(), mux.pes(0x101, Buffer.from('a'), 2 ** 33 - 9000), mux.pes(0x101, Buffer.from('b'), 9000)]);
  t.deepEqual(
    pes.map((p) => p.pts),
    [2 ** 33 - 9000, 2 ** 33 + 9000],
  );
});

test("TS demux reads ffmpeg's MPEG-TS data stream (stream type 0x06, one PES per packet)", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'smart-ts-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // Build a TS with ffmpeg: our own TS in, ffmpeg remuxes the data stream.
  const mux = new TsMuxer([{ pid: 0x101, streamType: 0x06 }]);
  const docs = [0, 1, 2, 3, 4].map((i) => doc(i % 2 ? 'Vehicle' : 'Human', `2026-03-01T10:00:0${i}Z`));
  await writeFile(join(dir, 'in.ts'), Buffer.concat([mux.psi(), ...docs.map((d, i) => mux.pes(0x101, d, 90000 * (i + 1)))]));
  await run('ffmpeg', [
    '-v',
    'error',
    '-y',
    '-i',
    join(dir, 'in.ts'),
    '-map',
    '0:d',
    '-c',
    'copy',
    '-f',
    'mpegts',
    '-muxdelay',
    '0',
    '-muxpreload',
    '0',
    join(dir, 'out.ts'),
  ]);
  const { pes } = collect([await readFile(join(dir, 'out.ts'))], 1000);
  t.is(pes.length, 5);
  t.true(pes.every((p, i) => p.streamType === 0x06 && p.payload.equals(docs[i]!)));
  const pts = pes.map((p) => p.pts!);
  t.deepEqual(
    pts.map((p) => p - pts[0]!),
    [0, 90000, 180000, 270000, 360000],
  );
});

test('the smart writer times, stores, indexes, caps a flood and deletes with retention', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'smart-w-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const index = await RecorderIndex.open(dataDir);
  t.teardown(() => index.close());
  let now = 1_760_000_000_000;
  const anchorMs = now - 5000;
  const writer = new SmartWriter('w1', {
    index,
    dataDir,
    clock: { nowMs: () => now },
    log: createLogger('silent'),
    segmentMs: 6000,
    // fMP4 time 0 is at anchorMs.
    wallMsAt: (sec) => anchorMs + sec * 1000,
  });
  const mux = new TsMuxer([
    { pid: 0x100 + 1, streamType: 0x1b },
    { pid: 0x102, streamType: 0x06 },
    { pid: 0x103, streamType: 0x03 },
  ]);
  const origin = 450000; // the first video PES: fMP4 time 0
  writer.feed(Buffer.concat([mux.psi(), mux.pes(0x101, Buffer.alloc(50), origin, { dts: origin, streamId: 0xe0, unbounded: true })]));
  // 10 s of one document per second, then a bad one of each kind.
  for (let i = 0; i < 10; i++) {
    writer.feed(mux.pes(0x102, doc(i % 2 ? 'Vehicle' : 'Human', new Date(anchorMs + i * 1000).toISOString()), origin + i * 90000));
    now += 1000;
  }
  writer.feed(mux.pes(0x102, Buffer.from('<tt:MetadataStream><broken'), origin));
  writer.feed(mux.pes(0x102, Buffer.from([1, 2, 3, 4]), origin));
  writer.feed(mux.pes(0x103, Buffer.from('audio?'), origin));
  // A flood: 1000 packets within one instant.
  for (let i = 0; i < 1000; i++) writer.feed(mux.pes(0x102, doc('Flood', new Date(anchorMs + 10_000).toISOString()), origin + 10 * 90000));
  await writer.close();

  const stats = smartStats('w1');
  t.is(stats.skipped.malformedXml, 1);
  t.is(stats.skipped.unknownPayload, 1);
  t.is(stats.skipped.unknownStreamType, 1);
  t.true(stats.skipped.flood >= 1000 - 2 * SMART_MAX_PACKETS_PER_SEC, `flood ${stats.skipped.flood}`);
  const { hits } = index.smart.inRange('w1', anchorMs - 1, anchorMs + 60_000, {}, 10_000);
  t.is(hits.length, stats.packets);
  const firstTen = hits.slice(0, 10);
  t.deepEqual(
    firstTen.map((h) => h.ms),
    Array.from({ length: 10 }, (_, i) => anchorMs + i * 1000),
    'times from PTS through the video anchor',
  );
  t.deepEqual(
    firstTen.map((h) => h.record.contentMs),
    firstTen.map((h) => h.ms),
  );
  t.is(index.smart.inRange('w1', anchorMs - 1, anchorMs + 60_000, { class: 'vehicle' }, 100).hits.length, 5);
  t.is(index.smart.next('w1', anchorMs, { class: 'Human' })!.ms, anchorMs + 2000);
  t.is(index.smart.next('w1', anchorMs + 2000, { class: 'Human' }, true)!.ms, anchorMs);
  // Keys of equal ms are told apart by seq, never overwritten.
  const flood = hits.filter((h) => h.ms === anchorMs + 10_000);
  t.deepEqual(
    flood.map((h) => h.seq),
    flood.map((_, i) => i),
  );
  // Files rotate at segmentMs and each reads back whole.
  const files = index.smart.files('w1');
  t.true(files.length >= 2, `${files.length} files`);
  let records = 0;
  for (const f of files) {
    t.false(f.open);
    const bytes = await readFile(join(dataDir, f.file));
    t.is(bytes.length, f.bytes);
    const d = decodeRecords(bytes, SMART_FILE_HEADER_BYTES);
    t.is(d.validBytes, bytes.length);
    records += d.records.length;
  }
  t.is(records, hits.length);
  // Retention: a range that holds only part of a file deletes nothing; then everything.
  t.is((await deleteSmartRange(index, dataDir, 'w1', anchorMs + 1, anchorMs + 2)).files, 0);
  const first = await deleteSmartBefore(index, dataDir, 'w1', files[0]!.endMs + 1);
  t.is(first.files, 1);
  t.is(index.smart.inRange('w1', anchorMs - 1, files[0]!.endMs + 1, {}, 10_000).hits.length, 0);
  await deleteSmartBefore(index, dataDir, 'w1', Number.MAX_SAFE_INTEGER);
  t.is(index.smart.files('w1').length, 0);
});

test("SEI user data in H.264 samples (ffmpeg h264_metadata) is found with its sample time; x264's own is not", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'smart-sei-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'sei.mp4');
  const xml =
    '<MetadataStream><VideoAnalytics><Frame><Object><Appearance><Class><Type>Human</Type></Class></Appearance></Object></Frame></VideoAnalytics></MetadataStream>';
  await run('ffmpeg', [
    '-v',
    'error',
    '-y',
    '-f',
    'lavfi',
    '-i',
    'testsrc=size=160x120:rate=10:duration=3',
    '-c:v',
    'libx264',
    '-g',
    '10',
    '-bsf:v',
    `h264_metadata=sei_user_data=086f3693-b7b3-4f2c-9653-21492feee5b8+${xml}`,
    '-f',
    'mp4',
    '-movflags',
    'frag_keyframe+empty_moov+default_base_moof',
    file,
  ]);
  const chunks: Fmp4Chunk[] = [];
  const splitter = new Fmp4Splitter();
  splitter.end(await readFile(file));
  for await (const c of splitter as AsyncIterable<Fmp4Chunk>) chunks.push(c);
  const init = chunks.find((c) => c.kind === 'init')!;
  const fmt = videoSampleFormat(init.bytes);
  t.deepEqual(fmt && { codec: fmt.codec, lengthSize: fmt.lengthSize }, { codec: 'h264', lengthSize: 4 });
  const found = chunks.filter((c): c is Extract<Fmp4Chunk, { kind: 'fragment' }> => c.kind === 'fragment').map((f) => fragmentUserData(f, fmt!));
  const messages = found.flatMap((f) => f.messages);
  t.true(messages.length >= 1, `${messages.length} messages`);
  t.true(
    messages.every((m) => m.uuid === '086f3693b7b34f2c965321492feee5b8'),
    'x264 encoder info is left out',
  );
  t.is(messages[0]!.data.toString().replace(/\0$/, ''), xml, 'ffmpeg ends the string with a NUL');
  t.is(messages[0]!.decodeTicks, 0n);
  t.true(found.every((f) => f.bad === 0));

  // Stored through the writer: indexed by UUID topic and by the XML's class.
  const dataDir = await mkdtemp(join(tmpdir(), 'smart-sei-w-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const index = await RecorderIndex.open(dataDir);
  t.teardown(() => index.close());
  const writer = new SmartWriter('sei1', {
    index,
    dataDir,
    clock: { nowMs: () => 1_760_000_000_000 },
    log: createLogger('silent'),
    segmentMs: 60_000,
    wallMsAt: (sec) => 1_760_000_000_000 + sec * 1000,
  });
  for (const m of messages) writer.addSei({ uuid: m.uuid, data: m.data, mediaSec: Number(m.decodeTicks) / m.timescale, streamType: 0x1b });
  await writer.close();
  const hits = index.smart.inRange('sei1', 0, 2_000_000_000_000, { class: 'Human' }, 100).hits;
  t.is(hits.length, messages.length);
  t.is(hits[0]!.ms, 1_760_000_000_000);
  t.is(hits[0]!.record.kind, 'sei');
  t.deepEqual(hits[0]!.record.topics, ['sei:086f3693b7b34f2c965321492feee5b8']);
});

test('cut or garbled SEI never throws out of a fragment scan', (t) => {
  // An SEI NAL whose message claims more bytes than there are.
  t.deepEqual(seiUserData('h264', Buffer.from([0x06, 0x05, 0x40, 1, 2, 3])), []);
  // Not an SEI NAL at all.
  t.deepEqual(seiUserData('h264', Buffer.from([0x65, 0x88, 0x80])), []);
  // H.265 prefix SEI (type 39) with one user data message.
  const uuid = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
  const nal = Buffer.concat([Buffer.from([39 << 1, 1, 0x05, 18]), uuid, Buffer.from('hi'), Buffer.from([0x80])]);
  t.deepEqual(
    seiUserData('h265', nal).map((m) => [m.uuid, m.data.toString()]),
    [[uuid.toString('hex'), 'hi']],
  );
});

test('retention deletes a smart file left open by a crash, never one a writer still appends to', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'smart-ret-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const index = await RecorderIndex.open(dataDir);
  t.teardown(() => index.close());
  const base = 1_760_000_000_000;
  // A crash leftover: the entry still says open, no writer has the file.
  const rel = join('smart', 'c1', '2025-10-09', `${base}.smart`);
  await mkdir(join(dataDir, 'smart', 'c1', '2025-10-09'), { recursive: true });
  await writeFile(join(dataDir, rel), encodeFileHeader(base));
  await index.smart.putFile({ camera: 'c1', startMs: base, endMs: base + 500, file: rel, bytes: 16, records: 0, open: true });
  t.is((await deleteSmartBefore(index, dataDir, 'c1', base + 10_000)).files, 1);
  await t.throwsAsync(readFile(join(dataDir, rel)));
  // A live writer's file: kept while it is open, deleted once closed.
  const writer = new SmartWriter('c1', {
    index,
    dataDir,
    clock: { nowMs: () => base },
    log: createLogger('silent'),
    segmentMs: 60_000,
    wallMsAt: (sec) => base + sec * 1000,
  });
  const mux = new TsMuxer([
    { pid: 0x101, streamType: 0x1b },
    { pid: 0x102, streamType: 0x06 },
  ]);
  writer.feed(
    Buffer.concat([
      mux.psi(),
      mux.pes(0x101, Buffer.alloc(10), 0, { dts: 0, streamId: 0xe0, unbounded: true }),
      mux.pes(0x102, doc('Human', new Date(base).toISOString()), 0),
    ]),
  );
  const files = (): number => index.smart.files('c1').length;
  for (let i = 0; i < 100 && files() === 0; i++) await new Promise((r) => setTimeout(r, 100));
  // Without this the next check would pass with no file at all.
  t.is(files(), 1, 'the writer has its file open');
  t.is((await deleteSmartBefore(index, dataDir, 'c1', Number.MAX_SAFE_INTEGER)).files, 0, 'the open file stays');
  await writer.close();
  t.is((await deleteSmartBefore(index, dataDir, 'c1', Number.MAX_SAFE_INTEGER)).files, 1);
});
