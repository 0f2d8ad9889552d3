/**
 * cluster/backup-sender.ts with a real nats-server (JetStream) and a real LMDB index: a
 * back-filled segment that closes behind the backup cursor (its start is in the past)
 * is still announced to the target cluster, once, and the list that kept it is
 * cleared; the cursor does not move back. Before, the walk from the cursor never saw it
 * and back-filled video was never backed up.
 */
import test from 'ava';
import { join } from 'node:path';
import { connect, JSONCodec, type NatsConnection } from 'nats';
import { BackupSender } from '../../cluster/backup-sender.ts';
import type { CopyAnnouncement } from '../../cluster/copies.ts';
import { RecorderIndex } from '../../index/db.ts';
import type { FenceStamp, SegmentRecord } from '../../index/records.ts';
import { silentLogger } from '../../lib/log.ts';
import { startNatsCluster } from '../../sim/nats-cluster.ts';
import { segmentRecord } from '../helpers/segment-record.ts';
import { tempDir, waitFor } from '../helpers/recorder.ts';

const T0 = Date.UTC(2026, 11, 4, 10);
const NODE = 'node-1';

function segment(startMs: number, fence: FenceStamp, flags: SegmentRecord['flags'] = {}): SegmentRecord {
  return segmentRecord({
    camera: 'k',
    startMs,
    endMs: startMs + 4000,
    pool: 'p',
    types: [{ type: flags.backfill ? 'backfill' : 'timing', fromMs: startMs }],
    flags,
    fence,
  });
}

test('a back-filled segment behind the backup cursor is announced to the target once; the cursor stays', async (t) => {
  const dir = await tempDir(t);
  const nats = await startNatsCluster({ dir: join(dir, 'nats'), size: 1 });
  t.teardown(() => nats.stop());
  const nc: NatsConnection = await connect({ servers: nats.urls });
  t.teardown(() => nc.close());
  // The target cluster's copy stream (its CopyService makes it; here by hand), on the same server under another prefix.
  const jsm = await nc.jetstreamManager();
  await jsm.streams.add({ name: 'dst-copies', subjects: ['dst.copies.>'] });
  const announced = async (): Promise<number[]> => {
    const info = await jsm.streams.info('dst-copies');
    const out: number[] = [];
    for (let seq = 1; seq <= info.state.last_seq; seq++) {
      const m = await jsm.streams.getMessage('dst-copies', { seq });
      out.push(JSONCodec<CopyAnnouncement>().decode(m.data).startMs);
    }
    return out;
  };

  const index = await RecorderIndex.open(join(dir, 'data'));
  t.teardown(() => index.close());
  await index.pools.put('p', {
    id: 'p',
    capacityBytes: null,
    overwrite: 'capacity',
    maxLockShare: 0.5,
    backupCluster: { servers: [nats.urls], prefix: 'dst' },
  });
  const live = [0, 4000, 8000, 12_000].map((d) => segment(T0 + 60_000 + d, { node: NODE, rev: 7 }));
  for (const s of live) await index.segments.put(s);

  const ac = new AbortController();
  t.teardown(() => ac.abort());
  const sender = new BackupSender({
    nodeId: NODE,
    prefix: 'src',
    replicas: 1,
    index,
    log: silentLogger,
    signal: ac.signal,
    httpUrl: () => 'http://127.0.0.1:1',
    clusterToken: () => 'token',
    roundMs: 100,
  });
  t.teardown(() => sender.close());
  sender.start(nc);
  await waitFor('the live segments announced', async () => (await announced()).length === live.length, 20_000, 100);
  t.deepEqual(
    await announced(),
    live.map((s) => s.startMs),
  );

  // A hole before them back-filled now: two segments behind the cursor.
  const filled = [T0, T0 + 4000].map((s) => segment(s, { node: NODE, rev: 0 }, { backfill: true }));
  for (const s of filled) {
    await index.segments.put(s);
    sender.kick(s);
  }
  await waitFor('the back-filled segments announced', async () => (await announced()).length === live.length + filled.length, 20_000, 100);
  t.deepEqual((await announced()).slice(live.length), [T0, T0 + 4000]);
  const kv = await nc.jetstream().views.kv('src-backup', { bindOnly: true });
  await waitFor('the late list cleared', async () => (await kv.get('p.k.node-1.late'))?.operation !== 'PUT', 10_000, 100);
  t.is((await kv.get('p.k.node-1'))?.string(), String(live[live.length - 1]!.startMs), 'the cursor did not move back');

  // Nothing is announced twice in later rounds; a live segment after the cursor still goes.
  const next = segment(T0 + 76_000, { node: NODE, rev: 7 });
  await index.segments.put(next);
  sender.kick(next);
  await waitFor('the next live segment announced', async () => (await announced()).includes(next.startMs), 20_000, 100);
  t.is((await announced()).length, live.length + filled.length + 1);
});
