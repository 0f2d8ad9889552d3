/**
 * The pack writer's group commit under many concurrent writers (pictures/pack-writer.ts):
 * a write queued while a drain was ending (after its last look at the queue, before it
 * let go) waited for ever; 32 writers in a loop hung within a second.
 */
import test from 'ava';
import sharp from 'sharp';
import { RecorderIndex } from '../../index/db.ts';
import { createLogger } from '../../lib/log.ts';
import { systemClock } from '../../lib/time.ts';
import { PictureStorage } from '../../pictures/picture-storage.ts';
import { tempDir } from '../helpers/recorder.ts';

test('32 writers in a loop: every write is answered, in batches, and indexed', async (t) => {
  t.timeout(60_000);
  const dir = await tempDir(t);
  const index = await RecorderIndex.open(dir);
  t.teardown(() => index.close());
  const storage = new PictureStorage({
    index,
    dataDir: dir,
    clock: systemClock,
    log: createLogger('silent'),
    packMaxBytes: 1024 * 1024,
    packMaxAgeMs: 3_600_000,
  });
  const pic = await sharp({ create: { width: 64, height: 48, channels: 3, background: { r: 200, g: 30, b: 90 } } })
    .jpeg()
    .toBuffer();
  let answered = 0;
  await Promise.all(
    Array.from({ length: 32 }, async (_, w) => {
      for (let i = 0; i < 60; i++) {
        await storage.put({ camera: 'c', pool: 'default', atMs: 1_772_000_000_000 + (i % 7), type: 'alarm', meta: { w: String(w) }, bytes: pic });
        answered++;
      }
    }),
  );
  await storage.stop();
  t.is(answered, 32 * 60);
  t.is(index.pictures.count(), 32 * 60);
  t.true(storage.batches() < 32 * 60, `${storage.batches()} batches`);
});
