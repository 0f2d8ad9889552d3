/**
 * Why the index grew to 5.3 MB against 0.4 MB of video (issue 13 item 1): playback
 * from inside a segment yielded its first segment from inside an lmdb-js range
 * iteration, and closing a playback never ended that walk. Each such stream (a paused
 * or slow player, or one that went away) held a read transaction, and while any read
 * transaction is open LMDB reuses no page freed after it: every commit (a segment
 * entry every few seconds per camera) then grew the file by the pages it copied.
 *
 * Here a real recorder records while a playback stream opened mid-segment sits idle;
 * meanwhile 300 commits rewrite a 2 KB record. The file must not grow by their pages,
 * and closing the stream must leave no reader behind.
 */
import test from 'ava';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { openPlayback } from '../api/play.ts';
import { parsePlaybackQuery } from '../playback/playback-source.ts';
import { SimCamera } from '../sim/camera.ts';
import { startNode, waitFor } from './helpers/recorder.ts';

test('an idle playback stream pins no snapshot: the index reuses its pages, and closing it leaves no reader', async (t) => {
  const sim = await SimCamera.start({ gop: 25 });
  t.teardown(() => sim.stop());
  const n = await startNode(t, { segmentSeconds: 2 });
  t.true((await n.request('rec.v1.camera.put', { id: 'c', streams: { main: sim.url('h264') } })).ok);
  const closed = await waitFor(
    '2 closed segments',
    () => {
      const s = [...n.node.index.segments.all('c')].filter((x) => !x.open);
      return s.length >= 2 ? s : null;
    },
    60_000,
  );
  const index = n.node.index;
  const readers = (): number => index.readerSlots();
  const baseline = readers();

  // From inside the first closed segment: the walk starts with the segment before `from`.
  const seg = closed[0]!;
  const q = parsePlaybackQuery({ from: new Date(Math.round((seg.startMs + seg.endMs) / 2)).toISOString() });
  const stream = await openPlayback({ index, dataDir: n.dataDir, caches: n.node.caches }, 'c', q);
  t.truthy(await stream.next(), 'a fragment was served; the player now waits');

  const file = join(n.dataDir, 'index', 'data.mdb');
  const before = statSync(file).size;
  for (let i = 0; i < 300; i++)
    await index.pools.put('churn', { id: 'churn', capacityBytes: null, overwrite: 'capacity', note: 'x'.repeat(2000 + (i % 7)) } as never);
  const grown = statSync(file).size - before;
  // Pinned, each commit would leave its copied pages behind (~300 × 2+ pages).
  t.true(grown < 600 * 1024, `the index grew by ${grown} bytes over 300 commits while a playback stream was idle`);

  await stream.close();
  await waitFor('no reader left by the stream', () => readers() <= baseline, 5000);
  await index.pools.remove('churn');
});
