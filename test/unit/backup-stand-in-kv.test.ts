/**
 * cluster/backup-sender.ts standing in for a dead writer, with a real nats-server
 * (JetStream) and real LMDB indexes: the survivor announces the copies it holds of the
 * writer's segments after the writer's cursor, under the writer's message ids and with
 * itself as origin; a segment the writer announced that no live node holds goes on the
 * writer's late list; the cursor moves past both. The writer, back, resumes from that
 * cursor and sends the lost segment from its own disk. Before, a dead writer's segments
 * waited for it. And a writer that was judged dead but lived, whose cursor a stand-in
 * moved meanwhile, does not write it back (its writes were plain puts) and sends what
 * the stand-in listed for it.
 */
import test from 'ava';
import { join } from 'node:path';
import { connect, JSONCodec, type NatsConnection } from 'nats';
import { BackupSender } from '../../cluster/backup-sender.ts';
import type { CopyAnnouncement } from '../../cluster/copies.ts';
import { RecorderIndex } from '../../index/db.ts';
import type { PoolPolicy, SegmentRecord } from '../../index/records.ts';
import { silentLogger } from '../../lib/log.ts';
import { startNatsCluster } from '../../sim/nats-cluster.ts';
import { segmentRecord } from '../helpers/segment-record.ts';
import { tempDir, waitFor } from '../helpers/recorder.ts';

const T0 = Date.UTC(2026, 11, 4, 10);
const json = JSONCodec<CopyAnnouncement>();

function segment(startMs: number): SegmentRecord {
  return segmentRecord({ camera: 'k', startMs, endMs: startMs + 4000, pool: 'p', fence: { node: 'W', rev: 3 } });
}

test("a survivor sends a dead writer's segments from its copies; the writer, back, resumes after them and sends what only it had", async (t) => {
  const dir = await tempDir(t);
  const nats = await startNatsCluster({ dir: join(dir, 'nats'), size: 1 });
  t.teardown(() => nats.stop());
  const nc: NatsConnection = await connect({ servers: nats.urls });
  t.teardown(() => nc.close());
  const jsm = await nc.jetstreamManager();
  // The target's copy stream and the source's (each made by its CopyService; here by hand), on one server under two prefixes.
  await jsm.streams.add({ name: 'dst-copies', subjects: ['dst.copies.>'] });
  await jsm.streams.add({ name: 'src-copies', subjects: ['src.copies.>'] });
  const announced = async (): Promise<{ startMs: number; origin: string; id: string }[]> => {
    const info = await jsm.streams.info('dst-copies');
    const out: { startMs: number; origin: string; id: string }[] = [];
    for (let seq = 1; seq <= info.state.last_seq; seq++) {
      const m = await jsm.streams.getMessage('dst-copies', { seq });
      const a = json.decode(m.data);
      out.push({ startMs: a.startMs, origin: a.origin?.node ?? '', id: m.header.get('Nats-Msg-Id') });
    }
    return out;
  };
  const kv = await nc.jetstream().views.kv('src-backup', { history: 1 });
  // The writer had sent up to T0 before it died.
  await kv.put('p.k.W', String(T0));
  // Its ledger: what it announced for copies (the last one never reached a holder).
  const starts = [T0, T0 + 4000, T0 + 8000, T0 + 12_000];
  const js = nc.jetstream();
  for (const s of starts) {
    const a: CopyAnnouncement = { camera: 'k', startMs: s, bytes: 1000, pool: 'p', source: 'W', holders: ['W', 'S'] };
    await js.publish('src.copies.k', json.encode(a));
  }

  const pool: PoolPolicy = {
    id: 'p',
    capacityBytes: null,
    overwrite: 'capacity',
    maxLockShare: 0.5,
    copies: 2,
    backupCluster: { servers: [nats.urls], prefix: 'dst' },
  };
  const open = async (name: string, segs: SegmentRecord[]): Promise<RecorderIndex> => {
    const index = await RecorderIndex.open(join(dir, name));
    t.teardown(() => index.close());
    await index.pools.put('p', pool);
    for (const s of segs) await index.segments.put(s);
    return index;
  };
  const ac = new AbortController();
  t.teardown(() => ac.abort());
  const deps = { prefix: 'src', replicas: 1, log: silentLogger, signal: ac.signal, clusterToken: () => 'token', roundMs: 100 };

  // The survivor holds copies of the first three; the writer is judged dead.
  let live = ['S'];
  const survivor = new BackupSender({
    ...deps,
    nodeId: 'S',
    index: await open('s', starts.slice(0, 3).map(segment)),
    httpUrl: () => 'http://s:1',
    standIn: { liveNodes: () => live, holders: () => ['S', 'W'], peerHttp: () => null, peerSegments: () => Promise.resolve([]) },
  });
  t.teardown(() => survivor.close());
  survivor.start(nc);
  survivor.writerDied('W');

  await waitFor('the copies after the cursor sent', async () => (await announced()).length === 2, 20_000, 100);
  t.deepEqual(await announced(), [
    { startMs: T0 + 4000, origin: 'S', id: `backup.W.k.${T0 + 4000}` },
    { startMs: T0 + 8000, origin: 'S', id: `backup.W.k.${T0 + 8000}` },
  ]);
  await waitFor('the cursor past the lost one', async () => (await kv.get('p.k.W'))?.string() === String(T0 + 12_000), 10_000, 100);
  t.deepEqual(JSON.parse((await kv.get('p.k.W.late'))!.string()), [T0 + 12_000], 'only the writer has it: on its late list');

  // The writer beats again and sends from its cursor: the lost one from its disk, and the new one.
  live = ['S', 'W'];
  const writer = new BackupSender({
    ...deps,
    nodeId: 'W',
    index: await open('w', [...starts, T0 + 16_000].map(segment)),
    httpUrl: () => 'http://w:1',
  });
  t.teardown(() => writer.close());
  writer.start(nc);
  await waitFor('the writer resumed', async () => (await announced()).length === 4, 20_000, 100);
  t.deepEqual(
    (await announced()).slice(2),
    [
      { startMs: T0 + 12_000, origin: 'W', id: `backup.W.k.${T0 + 12_000}` },
      { startMs: T0 + 16_000, origin: 'W', id: `backup.W.k.${T0 + 16_000}` },
    ],
    "each segment once, under the writer's id",
  );
  await waitFor('the late list cleared', async () => (await kv.get('p.k.W.late'))?.operation !== 'PUT', 10_000, 100);
  await waitFor('the cursor at its newest', async () => (await kv.get('p.k.W'))?.string() === String(T0 + 16_000), 10_000, 100);
});

test('a writer judged dead that lived (a stall) finds its cursor moved by a stand-in: it keeps the further one and reads its late list again', async (t) => {
  const dir = await tempDir(t);
  const nats = await startNatsCluster({ dir: join(dir, 'nats'), size: 1 });
  t.teardown(() => nats.stop());
  const nc: NatsConnection = await connect({ servers: nats.urls });
  t.teardown(() => nc.close());
  const jsm = await nc.jetstreamManager();
  await jsm.streams.add({ name: 'dst-copies', subjects: ['dst.copies.>'] });
  const announced = async (): Promise<number[]> => {
    const info = await jsm.streams.info('dst-copies');
    const out: number[] = [];
    for (let seq = 1; seq <= info.state.last_seq; seq++) out.push(json.decode((await jsm.streams.getMessage('dst-copies', { seq })).data).startMs);
    return out;
  };
  const index = await RecorderIndex.open(join(dir, 'w'));
  t.teardown(() => index.close());
  await index.pools.put('p', {
    id: 'p',
    capacityBytes: null,
    overwrite: 'capacity',
    maxLockShare: 0.5,
    copies: 2,
    backupCluster: { servers: [nats.urls], prefix: 'dst' },
  });
  for (const s of [T0, T0 + 4000]) await index.segments.put(segment(s));
  const ac = new AbortController();
  t.teardown(() => ac.abort());
  const writer = new BackupSender({
    nodeId: 'W',
    prefix: 'src',
    replicas: 1,
    index,
    log: silentLogger,
    signal: ac.signal,
    httpUrl: () => 'http://w:1',
    clusterToken: () => 'token',
    roundMs: 100,
  });
  t.teardown(() => writer.close());
  writer.start(nc);
  const kv = await nc.jetstream().views.kv('src-backup', { history: 1 });
  await waitFor('its own sent', async () => (await kv.get('p.k.W'))?.string() === String(T0 + 4000), 20_000, 100);

  // Meanwhile a stand-in went further and listed one segment only the writer has.
  await kv.put('p.k.W.late', JSON.stringify([T0 + 8000]));
  await kv.put('p.k.W', String(T0 + 20_000));
  const next = segment(T0 + 8000);
  await index.segments.put(next);
  writer.kick(next);
  await waitFor('the listed one sent and the list cleared', async () => (await kv.get('p.k.W.late'))?.operation !== 'PUT', 20_000, 100);
  t.true((await announced()).includes(T0 + 8000));
  t.is((await kv.get('p.k.W'))?.string(), String(T0 + 20_000), 'the cursor did not move back');

  const later = segment(T0 + 24_000);
  await index.segments.put(later);
  writer.kick(later);
  await waitFor('the writer goes on after the further cursor', async () => (await kv.get('p.k.W'))?.string() === String(T0 + 24_000), 20_000, 100);
  t.true((await announced()).includes(T0 + 24_000));
});
