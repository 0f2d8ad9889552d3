/**
 * Persisted sample tables through the real recording path (GStreamer camera, ffmpeg
 * ingest, segment writer, LMDB, HTTP, retention): every segment that closes gets its
 * record; the first download of a range is served from the records (not the moofs)
 * and is byte-identical, ETag included, to the same range built from the moofs; when
 * retention deletes segments their records go with them and no record is left without
 * its segment.
 */
import test from 'ava';
import { SimCamera } from '../sim/camera.ts';
import { selectRange } from '../playback/range-selection.ts';
import type { SegmentRecord } from '../index/records.ts';
import { buildProgressive, progressiveEtag, progressiveStream } from '../playback/progressive-mp4.ts';
import { decodeSampleTables } from '../playback/sample-table-codec.ts';
import { SampleTableCache } from '../playback/sample-table.ts';
import { startNode, waitFor, type TestNode } from './helpers/recorder.ts';

const closed = (n: TestNode): SegmentRecord[] => [...n.node.index.segments.all('cam')].filter((s) => !s.open);

async function collect(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

test('records are written at close, serve the first download byte-identically, and go with the segments retention deletes', async (t) => {
  const sim = await SimCamera.start({ gop: 25 });
  t.teardown(() => sim.stop());
  const n = await startNode(t, { segmentSeconds: 2, retentionTickMs: 500 });
  const store = n.node.tables!;
  const put = await n.request('rec.v1.camera.put', { id: 'cam', streams: { main: sim.url('h264aac') } });
  t.true(put.ok, JSON.stringify(put));

  const segs = await waitFor('4 closed segments', () => (closed(n).length >= 4 ? closed(n) : null), 60_000);
  await store.idle();
  for (const seg of closed(n)) {
    const record = n.node.index.segments.sampleTables(seg.camera, seg.startMs);
    t.truthy(record, `record of ${seg.file}`);
    const tables = decodeSampleTables(record!);
    t.is(tables.fileBytes, seg.bytes);
    t.is(tables.init.length, seg.initSize);
  }
  t.is(store.stats.failed, 0);

  // The first download of [middle of the 1st segment, middle of the 4th): from the records.
  let served = 0;
  const get = store.get.bind(store);
  store.get = (path) => {
    const r = get(path);
    if (r) served++;
    return r;
  };
  const fromMs = segs[0]!.startMs + 700;
  const toMs = segs[3]!.startMs + 900;
  const res = await fetch(`${n.http}/api/cameras/cam/video.mp4?from=${fromMs}&to=${toMs}`);
  t.is(res.status, 200);
  const body = Buffer.from(await res.arrayBuffer());
  t.is(served, 4, 'each of the 4 segments came from its record');

  // The same range built from the moofs alone (a cache without records).
  const sel = selectRange(n.node.index, n.dataDir, 'cam', fromMs, toMs);
  const cache = new SampleTableCache();
  const tables = await Promise.all(sel.slices.map((s) => cache.read(s.path, s.initSize, s.fragments, s.bytes)));
  const skipMs = Math.max(0, fromMs - sel.fromMs);
  const trimEndMs = Math.max(0, sel.toMs - toMs);
  const layout = buildProgressive({ segments: tables, skipMs, trimEndMs });
  t.true(skipMs > 0 && trimEndMs > 0, 'edit lists at both ends');
  t.is(res.headers.get('etag'), progressiveEtag(tables[0]!.init, sel.slices, skipMs, trimEndMs));
  t.true(body.equals(await collect(progressiveStream(layout))), "byte-identical to the moofs' download");

  // Shrink the pool: retention deletes the oldest segments, and their records with them.
  const shrink = await n.request('rec.v1.pool.put', { id: 'default', capacityBytes: 3 * segs[1]!.bytes, overwrite: 'capacity' });
  t.true(shrink.ok, JSON.stringify(shrink));
  await waitFor('the first 4 segments deleted', () => (segs.every((s) => !n.node.index.segments.get(s.camera, s.startMs)) ? true : null), 60_000);
  for (const s of segs) t.is(n.node.index.segments.sampleTables(s.camera, s.startMs), undefined, `record of deleted ${s.file}`);
  // Stop recording so nothing closes meanwhile, then: every record has its segment.
  await n.request('rec.v1.camera.delete', { id: 'cam' });
  await store.idle();
  const keys = n.node.index.segments.sampleTableKeys();
  t.true(keys.length > 0, 'segments recorded since still have records');
  for (const key of keys) t.truthy(n.node.index.segments.get(key.camera, key.startMs), `segment of record ${key.camera}/${key.startMs}`);
});
