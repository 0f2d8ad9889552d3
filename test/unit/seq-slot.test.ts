/**
 * Seqs of cluster nodes (pictures/seq-slot.ts): a holder indexes other nodes' pictures
 * beside its own under `[atMs, seq]`, and two nodes that both gave seq 0 to pictures of
 * one instant made every such copy clash (at 1000 pictures a second, nearly all).
 */
import test from 'ava';
import { RecorderIndex } from '../../index/db.ts';
import { createLogger } from '../../lib/log.ts';
import { systemClock } from '../../lib/time.ts';
import { PictureStorage } from '../../pictures/picture-storage.ts';
import { firstSeq, SEQ_SLOTS, seqSlotOf, seqStep } from '../../pictures/seq-slot.ts';
import sharp from 'sharp';
import { tempDir } from '../helpers/recorder.ts';

test('outside a cluster seqs run 0, 1, 2…', (t) => {
  t.is(firstSeq(-1, null), 0);
  t.is(firstSeq(4, null), 5);
  t.is(seqStep(null), 1);
});

test('two slots never give the same seq at one instant, whatever either indexed before', (t) => {
  const a = seqSlotOf('nvr1-3fa2c1');
  const b = seqSlotOf('nvr2-77b0d2');
  t.not(a, b);
  t.true(a >= 0 && a < SEQ_SLOTS);
  const given = new Set<number>();
  let last = -1;
  // The two nodes write in turns, each after seeing the other's seqs (a copy indexed).
  for (let i = 0; i < 50; i++) {
    const slot = i % 2 === 0 ? a : b;
    const seq = firstSeq(last, slot);
    t.is(seq % SEQ_SLOTS, slot);
    t.true(seq > last, 'above every seq indexed at the instant');
    t.false(given.has(seq));
    given.add(seq);
    last = Math.max(last, seq);
  }
  // Without seeing each other (copies not there yet): disjoint anyway.
  t.not(firstSeq(-1, a), firstSeq(-1, b));
});

test('a node with a slot stores its pictures of one instant at its slot’s seqs', async (t) => {
  const dir = await tempDir(t);
  const index = await RecorderIndex.open(dir);
  const storage = new PictureStorage({ index, dataDir: dir, clock: systemClock, log: createLogger('silent'), packMaxBytes: 1 << 20, packMaxAgeMs: 3_600_000 });
  t.teardown(async () => {
    await storage.stop();
    await index.close();
  });
  storage.useSeqSlot(7);
  const pic = await sharp({ create: { width: 16, height: 16, channels: 3, background: { r: 1, g: 2, b: 3 } } })
    .jpeg()
    .toBuffer();
  const at = 1_772_000_000_000;
  const [x, y] = await Promise.all([0, 1].map(() => storage.put({ camera: 'gate', pool: 'default', atMs: at, type: 'alarm', bytes: pic })));
  t.deepEqual([x!.key[2], y!.key[2]], [7, 7 + SEQ_SLOTS]);
  const z = await storage.put({ camera: 'gate', pool: 'default', atMs: at, type: 'alarm', bytes: pic });
  t.is(z.key[2], 7 + 2 * SEQ_SLOTS);
});
