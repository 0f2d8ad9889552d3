/**
 * Copies of picture packs (pictures/copy-pack.ts, docs/design/pictures.md "Copies in a
 * cluster") over two real indexes and data dirs in one process, no network: a range of
 * node A's pack appended on node B is indexed byte for byte with its locks; a key B
 * holds already is never overwritten; B serves the same range in A's offsets; a crash
 * between the fdatasync and the commit, and a torn tail, are reconciled at B's next start
 * and the copy continues where its index ends.
 */
import test from 'ava';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { RecorderIndex } from '../../index/db.ts';
import { createLogger } from '../../lib/log.ts';
import { systemClock } from '../../lib/time.ts';
import { decodePackRange, encodePackRange } from '../../pictures/copy-pack.ts';
import { scanRecordBuffer } from '../../pictures/pack-format.ts';
import { PictureStorage } from '../../pictures/picture-storage.ts';
import { copyHolders } from '../../cluster/copy-plan.ts';
import { announcementSubject, picturePackKey } from '../../cluster/picture-copies.ts';
import type { PictureKey } from '../../index/pictures.ts';
import { tempDir } from '../helpers/recorder.ts';

const log = createLogger('silent');
const AT = 1_772_000_000_000;

async function node(dir: string): Promise<{ index: RecorderIndex; storage: PictureStorage }> {
  const index = await RecorderIndex.open(dir);
  const storage = new PictureStorage({ index, dataDir: dir, clock: systemClock, log, packMaxBytes: 64 * 1024 * 1024, packMaxAgeMs: 3_600_000 });
  await storage.recover();
  return { index, storage };
}

const jpeg = (i: number): Promise<Buffer> =>
  sharp({ create: { width: 32, height: 24, channels: 3, background: { r: i * 20, g: 100, b: 200 - i * 10 } } })
    .jpeg()
    .toBuffer();

test('a range of a pack copied: indexed byte for byte with its locks, a taken key left alone, served again in the origin offsets', async (t) => {
  const dirA = await tempDir(t);
  const dirB = await tempDir(t);
  const a = await node(dirA);
  const b = await node(dirB);
  t.teardown(async () => {
    await a.storage.stop();
    await b.storage.stop();
    await a.index.close();
    await b.index.close();
  });
  const keys: PictureKey[] = [];
  const bytes = new Map<string, Buffer>();
  for (let i = 0; i < 5; i++) {
    const pic = await jpeg(i);
    const stored = await a.storage.put({ camera: 'gate', pool: 'default', atMs: AT + i, type: 'alarm', meta: { plate: `P${i}` }, bytes: pic });
    keys.push(stored.key);
    bytes.set(stored.key.join('.'), pic);
  }
  await a.index.pictures.lock([keys[1]!], null);
  // B stored a picture of another camera at the instant and seq of A's fourth.
  const own = await b.storage.put({ camera: 'door', pool: 'default', atMs: AT + 3, type: 'alarm', bytes: await jpeg(9) });
  t.deepEqual(own.key, ['door', AT + 3, 0]);

  const pack = a.storage.currentPack('default')!;
  const served = await a.storage.copies.range('A', 'A', pack.id, 0);
  t.truthy(served);
  const got = decodePackRange(encodePackRange(served!));
  t.is(got.end, pack.bytes);
  t.deepEqual(got.locks, [['gate', AT + 1, 0, null]]);
  // A lock asked of B while the copy was in flight (B answered "not found"): it lands with the copy.
  t.true(await b.storage.copies.noteLock(keys[4]!, { unlock: false, untilMs: null }, Date.now()), 'noted: not here yet');
  const r = await b.storage.appendCopy('A', pack.id, got);
  t.is(r.pictures, 4);
  t.is(r.skipped, 1, 'the taken key is left to its own picture');
  t.is(r.progress, pack.bytes);
  t.deepEqual(r.cameras, ['gate']);
  for (const key of keys) {
    if (key[1] === AT + 3) continue;
    t.deepEqual(await b.storage.read(key), bytes.get(key.join('.')), `${key.join('.')} byte for byte`);
    t.is(b.index.pictures.get(key)!.meta?.plate, `P${key[1] - AT}`);
  }
  t.deepEqual(b.index.pictures.get(['door', AT + 3, 0])!.pack, own.entry.pack, "B's own picture untouched");
  t.deepEqual(b.index.pictures.lockOf(keys[1]!), { untilMs: null }, 'the lock came with the copy');
  t.deepEqual(b.index.pictures.lockOf(keys[4]!), { untilMs: null }, 'the lock noted while in flight applied to the copy');
  t.is(b.index.pictures.lockOf(keys[0]!), undefined);
  t.false(await b.storage.copies.noteLock(keys[0]!, { unlock: false, untilMs: null }, Date.now()), 'a picture here is locked as any, not noted');
  t.is(b.storage.copies.progress('A', pack.id), pack.bytes);

  // B serves A's pack in A's offsets: the same bytes A serves.
  const again = await b.storage.copies.range('B', 'A', pack.id, 0);
  t.is(again!.from, served!.from);
  t.true(again!.bytes.equals(served!.bytes), 'a copy serves the origin bytes at the origin offsets');
  t.is(await b.storage.copies.range('B', 'A', pack.id + 1, 0), null, 'a pack not held');
  // A range that does not continue the copy is refused.
  await t.throwsAsync(() => b.storage.appendCopy('A', pack.id, { ...got, from: got.from + 1 }), { code: 'VALIDATION_FAILED' } as never);
});

test('a copy crashed between its fdatasync and its commit, with a torn record after: reconciled at the next start, then continued', async (t) => {
  const dirA = await tempDir(t);
  const dirB = await tempDir(t);
  const a = await node(dirA);
  t.teardown(async () => {
    await a.storage.stop();
    await a.index.close();
  });
  for (let i = 0; i < 3; i++) await a.storage.put({ camera: 'gate', pool: 'default', atMs: AT + i, type: 'alarm', bytes: await jpeg(i) });
  const pack = a.storage.currentPack('default')!;
  const first = (await a.storage.copies.range('A', 'A', pack.id, 0))!;
  for (let i = 3; i < 6; i++) await a.storage.put({ camera: 'gate', pool: 'default', atMs: AT + i, type: 'alarm', bytes: await jpeg(i) });
  const second = (await a.storage.copies.range('A', 'A', pack.id, first.end))!;
  t.is(second.from, first.end);

  let b = await node(dirB);
  await b.storage.appendCopy('A', pack.id, first);
  const piece = b.index.pictures.allPacks().find((p) => p.copyOf)!;
  // The crash: the second range's records written (and synced) past the piece's durable end, the last one cut, no commit.
  const whole = scanRecordBuffer(second.bytes, second.from);
  t.is(whole.records.length, 3);
  const fh = await open(join(dirB, piece.file), 'r+');
  await fh.write(second.bytes.subarray(0, second.bytes.length - 10), 0, second.bytes.length - 10, piece.bytes);
  await fh.close();
  await b.storage.stop();
  await b.index.close();

  b = await node(dirB);
  t.teardown(async () => {
    await b.storage.stop();
    await b.index.close();
  });
  const after = b.index.pictures.pack(piece.id)!;
  t.true(after.closed, 'reconcile closed the piece');
  t.is(b.index.pictures.count(), 5, 'the whole records of the tail indexed, the torn one cut');
  const reach = b.storage.copies.progress('A', pack.id)!;
  t.is(reach, whole.records[1]!.end, 'the copy reaches the end of its last whole record');
  // The copy continues from there into a new piece.
  const rest = (await a.storage.copies.range('A', 'A', pack.id, reach))!;
  const r = await b.storage.appendCopy('A', pack.id, rest);
  t.is(r.progress, a.storage.currentPack('default')!.bytes, 'the copy reaches the durable end of the origin');
  t.is(b.index.pictures.count(), 6);
  t.is(b.storage.copies.pieces('A', pack.id).length, 2, 'a second piece after the closed one');
  for (let i = 0; i < 6; i++) t.true((await b.storage.read(['gate', AT + i, 0])).equals(await a.storage.read(['gate', AT + i, 0])));
  const served = (await b.storage.copies.range('B', 'A', pack.id, reach))!;
  t.true(served.bytes.equals(rest.bytes), 'the second piece serves the origin bytes from where the first ends');
});

test('a pack range answer: round trip, and anything else refused', (t) => {
  const r = { pool: 'p', createdMs: 5, from: 40, end: 90, bytes: Buffer.from('abc'), locks: [['c', 1, 2, null] as [string, number, number, null]] };
  const back = decodePackRange(encodePackRange(r));
  t.deepEqual({ ...back, bytes: back.bytes.toString() }, { ...r, bytes: 'abc' });
  t.throws(() => decodePackRange(Buffer.from([0, 0])), { code: 'VALIDATION_FAILED' } as never);
  t.throws(() => decodePackRange(Buffer.concat([Buffer.from([0, 0, 0, 2]), Buffer.from('{}')])), { code: 'VALIDATION_FAILED' } as never);
  const badLock = Buffer.from(JSON.stringify({ pool: 'p', createdMs: 1, from: 1, end: 1, locks: [['c', 'x', 1, null]] }));
  const len = Buffer.alloc(4);
  len.writeUInt32BE(badLock.length);
  t.throws(() => decodePackRange(Buffer.concat([len, badLock])), { code: 'VALIDATION_FAILED' } as never);
});

test('scanRecordBuffer keeps only whole records: a cut or corrupt one ends the range', async (t) => {
  const dir = await tempDir(t);
  const a = await node(dir);
  t.teardown(async () => {
    await a.storage.stop();
    await a.index.close();
  });
  for (let i = 0; i < 3; i++) await a.storage.put({ camera: 'gate', pool: 'default', atMs: AT + i, type: 'alarm', bytes: await jpeg(i) });
  const r = (await a.storage.copies.range('A', 'A', a.storage.currentPack('default')!.id, 0))!;
  const all = scanRecordBuffer(r.bytes, r.from);
  t.is(all.records.length, 3);
  t.is(all.end, r.end);
  t.is(scanRecordBuffer(r.bytes.subarray(0, r.bytes.length - 1), r.from).records.length, 2, 'a cut record is not kept');
  const corrupt = Buffer.from(r.bytes);
  corrupt[all.records[1]!.offset - r.from + 5]! ^= 0xff;
  const c = scanRecordBuffer(corrupt, r.from);
  t.is(c.records.length, 1, 'a record whose CRC fails ends the range');
  t.is(c.end, all.records[0]!.end);
});

test('a pack’s holders: its writer first, then the ranking; a death moves only the packs the dead node held', (t) => {
  const live = ['n1', 'n2', 'n3', 'n4'];
  let moved = 0;
  for (let pack = 1; pack <= 200; pack++) {
    const key = picturePackKey('n1', pack);
    const holders = copyHolders(key, 'n1', live, 2);
    t.is(holders[0], 'n1');
    t.is(holders.length, 2);
    const after = copyHolders(
      key,
      'n1',
      live.filter((n) => n !== 'n4'),
      2,
    );
    if (holders.includes('n4')) moved++;
    else t.deepEqual(after, holders, 'a pack n4 did not hold keeps its holders');
  }
  t.true(moved > 30 && moved < 110, `${moved} of 200 packs had n4 as their copy`);
});

test('cover takes a closed copy by the pool’s rules and keeps its locked picture', async (t) => {
  const dirA = await tempDir(t);
  const dirB = await tempDir(t);
  const a = await node(dirA);
  const b = await node(dirB);
  t.teardown(async () => {
    await a.storage.stop();
    await b.storage.stop();
    await a.index.close();
    await b.index.close();
  });
  for (let i = 0; i < 4; i++) await a.storage.put({ camera: 'gate', pool: 'default', atMs: AT + i, type: 'alarm', bytes: await jpeg(i) });
  await a.index.pictures.lock([['gate', AT + 2, 0]], null);
  const pack = a.storage.currentPack('default')!;
  await b.storage.appendCopy('A', pack.id, (await a.storage.copies.range('A', 'A', pack.id, 0))!);
  // Open: never covered while appends may come.
  const policy = { id: 'default', capacityBytes: null, overwrite: 'capacity' as const, maxLockShare: 1, pictureCapacityBytes: 1 };
  await b.storage.cover([policy], AT + 10_000);
  t.is(b.index.pictures.count(), 4, 'an open copy is not covered');
  t.is(await b.storage.copies.close('A', pack.id), 1);
  await b.storage.cover([policy], AT + 10_000);
  t.is(b.storage.copies.pieces('A', pack.id).length, 0, 'the copy pack covered');
  t.deepEqual(
    b.index.pictures.search({ cameras: null, fromMs: AT, toMs: AT + 10, limit: 10 }).map((h) => h.key[1] - AT),
    [2],
    'only the locked picture is kept',
  );
  t.true((await b.storage.read(['gate', AT + 2, 0])).equals(await a.storage.read(['gate', AT + 2, 0])));
  // Announced again (the writer restarted): the covered copy counts as copied, so it is not pulled again.
  t.is(b.storage.copies.progress('A', pack.id), pack.bytes, 'covered through the end of the pack');
  // A pack that grew since is copied from there on, into a new piece.
  await a.storage.put({ camera: 'gate', pool: 'default', atMs: AT + 9, type: 'alarm', bytes: await jpeg(9) });
  const more = (await a.storage.copies.range('A', 'A', pack.id, pack.bytes))!;
  const r = await b.storage.appendCopy('A', pack.id, more);
  t.is(r.pictures, 1);
  t.is(r.progress, a.storage.currentPack('default')!.bytes);
});

test('announcements: one subject per pool, pack and source, a single token whatever the node ids hold', (t) => {
  const a = { pool: 'dup', origin: 'host.example.org-1a2b3c', pack: 7, source: 'host.example.org-1a2b3c' };
  const s = announcementSubject('rec', a);
  t.regex(s, /^rec\.piccopies\.dup\.[0-9a-f]{32}$/);
  t.is(announcementSubject('rec', { ...a }), s, 'the same pack and source: the same subject (the stream keeps the last)');
  t.not(announcementSubject('rec', { ...a, source: 'other-000001' }), s, 'another source: its own');
  t.not(announcementSubject('rec', { ...a, pack: 8 }), s, 'another pack: its own');
});
