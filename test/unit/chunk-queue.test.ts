/**
 * ingest/chunk-queue.ts: the chunks our own ingests made and the writer has not taken;
 * past the high mark the camera is paused (once), below the low mark resumed, and the
 * consumer's iteration ends after the last chunk once the owner says no more will come.
 */
import test from 'ava';
import { ChunkQueue } from '../../ingest/chunk-queue.ts';
import type { Fmp4Chunk } from '../../media/mp4/fmp4-splitter.ts';
import { parseInit } from '../../media/mp4/init-info.ts';
import { buildInit } from '../../media/mp4/fmp4-mux.ts';
import { videoConfig } from '../../media/rtp/rtp-config.ts';
import { videoTrackFromParams } from '../../media/codec/codec-config.ts';

const init = buildInit([videoTrackFromParams(videoConfig('H264', 90000, { 'sprop-parameter-sets': 'Z0IAHpWoKA9puAgICBA=,aM48gA==' }).params, 1, 90000)]);
const chunk = (bytes: number): Fmp4Chunk => ({ kind: 'init', bytes: Buffer.alloc(bytes), info: parseInit(init) });

test('pauses once past the high mark, resumes below the low mark, ends after the last chunk', async (t) => {
  const calls: string[] = [];
  let canPause = false;
  const q = new ChunkQueue({
    highBytes: 100,
    lowBytes: 30,
    pause: () => {
      calls.push(canPause ? 'pause' : 'pause refused');
      return canPause;
    },
    resume: () => calls.push('resume'),
  });
  q.push([chunk(60), chunk(60)]);
  t.deepEqual(calls, ['pause refused'], 'asked, and asked again at the next chunk');
  canPause = true;
  q.push([chunk(20)]);
  q.push([chunk(20)]);
  t.deepEqual(calls, ['pause refused', 'pause'], 'paused once');
  t.true(q.paused);
  const sizes: number[] = [];
  const consumer = (async () => {
    for await (const c of q.chunks()) {
      sizes.push(c.bytes.length);
      if (sizes.length === 2) t.deepEqual(calls, ['pause refused', 'pause'], '40 bytes left: still paused');
      if (sizes.length === 3) t.deepEqual(calls, ['pause refused', 'pause', 'resume'], '20 left: resumed');
    }
  })();
  await new Promise((r) => setImmediate(r));
  q.push([chunk(5)]);
  q.end();
  await consumer;
  t.deepEqual(sizes, [60, 60, 20, 20, 5]);
  t.false(q.paused);
});
