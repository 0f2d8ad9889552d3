/**
 * The in-memory signature index behind search by image (pictures/signature-index.ts) on
 * a real LMDB index: it loads what the index holds on the first search, takes what the
 * signer commits after that, filters by time and camera, forgets covered pictures, and
 * reloads once they are many.
 */
import test from 'ava';
import { RecorderIndex } from '../../index/db.ts';
import type { PackRecord, PictureKey } from '../../index/pictures.ts';
import { SignatureIndex } from '../../pictures/signature-index.ts';
import { SIGNATURE_BYTES } from '../../pictures/signature.ts';
import { tempDir } from '../helpers/recorder.ts';

const sig = (v: number): Buffer => Buffer.alloc(SIGNATURE_BYTES, v);

test('loads on the first search, takes later signatures, filters by time and camera, forgets covered pictures', async (t) => {
  const index = await RecorderIndex.open(await tempDir(t));
  t.teardown(() => index.close());
  const pack: PackRecord = { id: 1, pool: 'default', file: 'x', bytes: 0, count: 0, createdMs: 0, closed: true, range: null };
  const keys: PictureKey[] = Array.from({ length: 40 }, (_, i) => [i % 2 ? 'b' : 'a', 1000 + i, 0]);
  await index.pictures.append(
    pack,
    keys.map((key) => ({ key, entry: { pack: 1, offset: 0, length: 1, type: 'alarm' } })),
  );
  // Picture i's signature is all bytes i: the query of bytes 7 finds picture 7 first.
  await index.pictures.putSignatures(keys.slice(0, 30).map((key, i) => ({ key, signature: sig(i) })));
  const mem = new SignatureIndex(index.pictures);
  mem.add([{ key: keys[30]!, signature: sig(30) }]); // before the first search: ignored, the load reads the index
  const best = mem.best(sig(7), 0, Number.MAX_SAFE_INTEGER, 3, () => true);
  t.deepEqual(best[0]!.key, keys[7]);
  t.is(best[0]!.score, 1);
  t.is(mem.size, 30);
  // Later signatures are added as the signer commits them.
  mem.add(keys.slice(30).map((key, i) => ({ key, signature: sig(30 + i) })));
  t.deepEqual(mem.best(sig(35), 0, Number.MAX_SAFE_INTEGER, 1, () => true)[0]!.key, keys[35]);
  // Time and camera filters.
  const inRange = mem.best(sig(7), 1010, 1020, 40, () => true);
  t.deepEqual(
    inRange.map((m) => m.key[1]).sort((a, b) => a - b),
    Array.from({ length: 10 }, (_, i) => 1010 + i),
    'only [1010, 1020)',
  );
  t.true(mem.best(sig(7), 0, Number.MAX_SAFE_INTEGER, 40, (c) => c === 'b').every((m) => m.key[0] === 'b'));
  // Covered pictures are not answered; once a quarter is covered it reloads from the index.
  mem.remove([keys[7]!]);
  t.notDeepEqual(mem.best(sig(7), 0, Number.MAX_SAFE_INTEGER, 1, () => true)[0]!.key, keys[7]);
  mem.remove(keys.slice(0, 12));
  t.is(mem.best(sig(7), 0, Number.MAX_SAFE_INTEGER, 40, () => true).length, 30, 'reloaded: the index holds 30 signatures');
});
