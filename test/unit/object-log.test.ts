/**
 * cluster/object-log.ts on a real nats-server (JetStream) and real LMDB indexes: two
 * nodes writing through one log end with the same catalog, whichever wrote what; a
 * bucket name created by both at once is made once; a change another node made that
 * drops a version unlinks its file here, one this node made does not (its operation
 * does); a delete naming the version it judged does nothing once another replaced it;
 * the last change applied again (a crash before the position was kept) changes
 * nothing and unlinks nothing; a node with an empty index applies the whole log to the
 * same catalog; a stream made anew is noticed (object-log-reset) and applied from its start.
 */
import test, { type ExecutionContext } from 'ava';
import { join } from 'node:path';
import { connect } from 'nats';
import { RecorderIndex } from '../../index/db.ts';
import type { ObjectRecord } from '../../index/buckets.ts';
import { ObjectLog } from '../../cluster/object-log.ts';
import { startNatsCluster } from '../../sim/nats-cluster.ts';
import { silentLogger } from '../../lib/log.ts';
import type { AlarmInput } from '../../lib/alarms.ts';
import { tempDir, waitFor } from '../helpers/recorder.ts';

function version(fileId: string, size: number, nowMs: number, node: string): ObjectRecord {
  return { fileId, size, etag: 'd41d8cd98f00b204e9800998ecf8427e', lastModifiedMs: nowMs, headers: {}, meta: {}, node };
}

/**
 * A one-server JetStream on a temp dir and `node(id)` to start a node on it: its index
 * (`before` fills it first), a connection and its object log, with the files it unlinks
 * and the alarms it raises recorded. Stopped in order at the end: the logs (no apply in
 * flight), then connections and indexes.
 */
async function logCluster(t: ExecutionContext, prefix: string) {
  t.timeout(120_000);
  const dir = await tempDir(t, prefix);
  const nats = await startNatsCluster({ dir: join(dir, 'nats'), size: 1 });
  t.teardown(() => nats.stop());
  const stop = new AbortController();
  const logs: ObjectLog[] = [];
  const closing: (() => Promise<void>)[] = [];
  t.teardown(async () => {
    stop.abort();
    for (const l of logs) await l.stop();
    for (const c of closing.reverse()) await c();
  });
  const node = async (id: string, before?: (index: RecorderIndex) => Promise<void>) => {
    const index = await RecorderIndex.open(join(dir, id));
    closing.push(() => index.close());
    await before?.(index);
    const nc = await connect({ servers: nats.urls });
    closing.push(() => nc.close());
    const unlinked: string[] = [];
    const alarms: AlarmInput[] = [];
    const files = {
      remove: (_b: string, fileId: string): Promise<void> => Promise.resolve(void unlinked.push(fileId)),
      removeUploadFiles: (): Promise<void> => Promise.resolve(),
      removeBucketDir: (): Promise<void> => Promise.resolve(),
    };
    const log = new ObjectLog({
      nodeId: id,
      prefix: 'rec',
      replicas: 1,
      catalog: index.buckets,
      log: silentLogger,
      signal: stop.signal,
      files: () => files,
      raiseAlarm: (a) => alarms.push(a),
    });
    log.start(nc);
    logs.push(log);
    return { id, index, nc, log, unlinked, files, alarms };
  };
  return {
    dir,
    signal: stop.signal,
    node,
    /** Another log started by the test: stopped with the others. */
    track: (log: ObjectLog): void => void logs.push(log),
    closeLater: (close: () => Promise<void>): void => void closing.push(close),
  };
}

test('two nodes writing through the log end with one catalog; a replay changes nothing', async (t) => {
  const c = await logCluster(t, 'rec-objlog-');
  const nodes = await Promise.all(['n1', 'n2'].map((id) => c.node(id)));
  const [n1, n2] = nodes as [(typeof nodes)[0], (typeof nodes)[0]];
  const bucket = { name: 'evidence', pool: 'default', createdMs: 1, acl: 'private' as const, owner: 'root' };

  // One name created through both at once: made once.
  const made = await waitFor(
    'the log to take writes',
    async () => {
      try {
        return await Promise.all([n1.log.createBucket(bucket), n2.log.createBucket({ ...bucket, createdMs: 2 })]);
      } catch {
        return null;
      }
    },
    30_000,
    500,
  );
  t.is(made.filter(Boolean).length, 1);

  // Two configurations made at once through the two nodes, each from the bucket as it
  // read it: both hold, on both nodes (each change is only the fields it changed).
  await n1.log.caughtUp();
  await n2.log.caughtUp();
  const base = n1.index.buckets.bucket('evidence')!;
  const rule = { id: 'old', prefix: 'tmp/', enabled: true, expirationDays: 7 };
  await Promise.all([n1.log.putBucket({ ...base, lifecycle: [rule] }), n2.log.putBucket({ ...base, versioning: 'Enabled' })]);
  await waitFor('both nodes at the same position', () => n1.log.position === n2.log.position, 10_000, 50);
  for (const n of [n1, n2]) t.like(n.index.buckets.bucket('evidence'), { versioning: 'Enabled', lifecycle: [rule] }, n.id);
  // A configuration that removes a field (the lifecycle deleted) removes it.
  await n2.log.putBucket({ ...n2.index.buckets.bucket('evidence')!, lifecycle: undefined });
  await n1.log.caughtUp();
  t.is(n1.index.buckets.bucket('evidence')?.lifecycle, undefined);
  t.is(n1.index.buckets.bucket('evidence')?.versioning, 'Enabled');

  // Versions through both, a marker, a version removed by id, an unversioned overwrite.
  const w1 = await n1.log.putObject('evidence', 'k', version('0000000000010000000000a1', 5, 10, 'n1'));
  t.true(typeof w1 === 'object' && w1.versionId === '0000000000010000000000a1');
  await n2.log.putObject('evidence', 'k', version('0000000000020000000000b2', 7, 20, 'n2'));
  const marker = await n1.log.deleteObject('evidence', 'k', undefined, 30);
  t.true(marker.deleteMarker);
  await n2.log.deleteObject('evidence', 'k', '0000000000010000000000a1', 40);
  await n1.log.putObject('evidence', 'plain', version('0000000000050000000000c3', 3, 50, 'n1'));

  // Reads after a write through the other node: however many wait at once (they share
  // the reads of the stream's end), each sees it once caught up, also while other reads
  // of the end, begun before the write, are still in flight.
  let spinning = true;
  const spinner = (async () => {
    while (spinning) await n2.log.caughtUp();
  })();
  for (let i = 0; i < 5; i++) {
    const fileId = `00000000000600000000000${i}`;
    await n1.log.putObject('evidence', `burst-${i}`, version(fileId, 1, 60 + i, 'n1'));
    const seen = await Promise.all(
      Array.from({ length: 20 }, async () => {
        await n2.log.caughtUp();
        return n2.index.buckets.object('evidence', `burst-${i}`)?.fileId;
      }),
    );
    t.deepEqual(new Set(seen), new Set([fileId]));
  }
  spinning = false;
  await spinner;

  await waitFor('both nodes at the same position', () => n1.log.position === n2.log.position && n1.log.position > 0, 10_000, 50);
  const catalog = (n: typeof n1): unknown => n.index.buckets.listVersions('evidence', '', 1000).versions.map((v) => [v.key, v.record]);
  t.deepEqual(catalog(n1), catalog(n2));
  t.deepEqual(
    n1.index.buckets.listVersions('evidence', '', 1000).versions.map((v) => [v.key, v.record.fileId, v.record.deleteMarker === true]),
    [
      ...[0, 1, 2, 3, 4].map((i) => [`burst-${i}`, `00000000000600000000000${i}`, false]),
      ['k', n1.index.buckets.object('evidence', 'k')!.fileId, true],
      ['k', '0000000000020000000000b2', false],
      ['plain', '0000000000050000000000c3', false],
    ],
  );
  // The version n2 removed by id was n1's: n1 unlinks it (n2's operation unlinks its own copy).
  t.deepEqual(n1.unlinked, ['0000000000010000000000a1']);
  t.deepEqual(n2.unlinked, []);

  // A delete that names the version it judged (a lifecycle expiry) does nothing once a
  // PUT through another node replaced that version; naming the current one, it applies.
  await n1.log.putObject('evidence', 'expiring', version('0000000000080000000000e1', 1, 80, 'n1'));
  await n2.log.putObject('evidence', 'expiring', version('0000000000080000000000e2', 1, 81, 'n2'));
  const stale = await n1.log.deleteObject('evidence', 'expiring', undefined, 82, { ifCurrent: '0000000000080000000000e1' });
  t.deepEqual(stale, { unlink: [] });
  await n2.log.caughtUp();
  t.is(n2.index.buckets.object('evidence', 'expiring')?.fileId, '0000000000080000000000e2');
  const judged = await n1.log.deleteObject('evidence', 'expiring', undefined, 83, { ifCurrent: '0000000000080000000000e2' });
  t.true(judged.deleteMarker);
  t.is(n1.index.buckets.listVersions('evidence', 'expiring', 10).versions.length, 3, 'two versions and the marker');

  // Messages that are not changes (garbage, a change missing its record) are skipped,
  // and the log goes on with the next change.
  n1.nc.publish('rec.v1.objects.evidence', 'not json');
  n1.nc.publish('rec.v1.objects.evidence', JSON.stringify({ origin: 'n9', id: 'x1', change: { op: 'putObject', bucket: 'evidence', key: 'broken' } }));
  await n1.log.putObject('evidence', 'after', version('0000000000070000000000d4', 2, 70, 'n1'));
  await waitFor('n2 past the bad messages', () => n2.index.buckets.object('evidence', 'after') !== undefined, 30_000, 100);
  t.is(n2.index.buckets.object('evidence', 'broken'), undefined);

  // The last change applied again (a crash between applying it and keeping the position): nothing changes, nothing is unlinked.
  const before = catalog(n2);
  await n2.index.buckets.setLogSeq(n2.log.position - 1);
  const replayed: string[] = [];
  const again = new ObjectLog({
    nodeId: 'n2',
    prefix: 'rec',
    replicas: 1,
    catalog: n2.index.buckets,
    log: silentLogger,
    signal: c.signal,
    files: () => ({ ...n2.files, remove: (_b: string, fileId: string): Promise<void> => Promise.resolve(void replayed.push(fileId)) }),
  });
  again.start(n2.nc);
  c.track(again);
  await waitFor('the change applied again', () => again.position === n1.log.position, 10_000, 50);
  t.deepEqual(catalog(n2), before);
  t.deepEqual(replayed, []);

  // A node with an empty index (new, or its index rebuilt) applies the whole log to the same catalog.
  const n3index = await RecorderIndex.open(join(c.dir, 'n3'));
  c.closeLater(() => n3index.close());
  const n3 = new ObjectLog({ nodeId: 'n3', prefix: 'rec', replicas: 1, catalog: n3index.buckets, log: silentLogger, signal: c.signal, files: () => null });
  n3.start(n1.nc);
  c.track(n3);
  await waitFor('the new node to apply the log', () => n3.position === n1.log.position, 10_000, 50);
  t.deepEqual(
    n3index.buckets.listVersions('evidence', '', 1000).versions.map((v) => [v.key, v.record]),
    before,
  );
});

test('a stream made anew is noticed: the alarm is raised and every node applies the new stream from its start', async (t) => {
  const c = await logCluster(t, 'rec-objlog-reset-');
  const nodes = await Promise.all(['n1', 'n2'].map((id) => c.node(id)));
  const [n1, n2] = nodes as [(typeof nodes)[0], (typeof nodes)[0]];
  await waitFor(
    'the log to take writes',
    async () => n1.log.createBucket({ name: 'evidence', pool: 'default', createdMs: 1, acl: 'private', owner: 'root' }).catch(() => null),
    30_000,
    500,
  );
  for (let i = 0; i < 3; i++) await n1.log.putObject('evidence', `old-${i}`, version(`00000000000100000000000${i}`, 1, 10 + i, 'n1'));
  await waitFor('n2 at the end', () => n2.log.position === n1.log.position, 10_000, 50);
  t.is(n1.log.position, 4);

  // The stream removed (by hand, or its store lost) and made again by the next write.
  const jsm = await n1.nc.jetstreamManager();
  await jsm.streams.delete('rec-objects');
  const put = await waitFor(
    'a write to the new stream',
    async () => n2.log.putObject('evidence', 'new', version('000000000002000000000001', 1, 20, 'n2')).catch(() => null),
    60_000,
    500,
  );
  t.true(typeof put === 'object');
  // (A write retried while the stream was being made again may be in it more than once.)
  const end = (await jsm.streams.info('rec-objects')).state.last_seq;
  const dump: string[] = [];
  for (let q = 1; q <= end; q++) dump.push(new TextDecoder().decode((await jsm.streams.getMessage('rec-objects', { seq: q })).data));
  t.true(end >= 1 && end < 4, `the new stream ends at ${end}: ${dump.join('\n')}`);
  await waitFor('both nodes at the new stream’s end', () => n1.log.position === end && n2.log.position === end, 60_000, 100);
  for (const n of [n1, n2]) {
    t.is(n.index.buckets.listVersions('evidence', '', 100).versions.length, 4, `${n.id}: the old objects and the new one`);
    t.is(n.alarms.filter((a) => a.kind === 'object-log-reset').length, 1, `${n.id}: one alarm`);
  }
});

test("a node's buckets from before it joined are given to the cluster; one whose name the cluster took first stays its own, with an alarm", async (t) => {
  const c = await logCluster(t, 'rec-objlog-join-');
  const node = c.node;
  const bucket = (name: string) => ({ name, pool: 'default', createdMs: 1, acl: 'private' as const, owner: 'root' });

  // The cluster (n0) has a bucket `shared` before n1 joins.
  const n0 = await node('n0');
  await waitFor('the log to take writes', async () => n0.log.createBucket(bucket('shared')).catch(() => null), 30_000, 500);
  await n0.log.putObject('shared', 'theirs', version('000000000001000000000000', 1, 10, 'n0'));

  // n1 had, on its own: `mine` (versioned: two versions of a key, then a marker) and its own `shared`.
  const n1 = await node('n1', async (index) => {
    const b = index.buckets;
    await b.createBucket({ ...bucket('mine'), versioning: 'Enabled' });
    await b.putObject('mine', 'k', version('000000000002000000000001', 3, 20, 'n1'));
    await b.putObject('mine', 'k', version('000000000002000000000002', 4, 21, 'n1'));
    await b.deleteObject('mine', 'k', undefined, 22, { markerId: '000000000002000000000003' });
    await b.putObject('mine', 'other', version('000000000002000000000004', 5, 23, 'n1'));
    await b.createBucket(bucket('shared'));
    await b.putObject('shared', 'ours', version('000000000002000000000005', 6, 24, 'n1'));
  });
  const shape = (index: RecorderIndex, name: string): unknown =>
    index.buckets.listVersions(name, '', 100).versions.map((v) => [v.key, v.record.fileId, v.record.deleteMarker === true, v.latest]);
  await waitFor('n0 has every version of mine', () => n0.index.buckets.listVersions('mine', '', 100).versions.length === 4, 30_000, 100);
  t.deepEqual(shape(n0.index, 'mine'), shape(n1.index, 'mine'));
  t.like(n0.index.buckets.bucket('mine'), { versioning: 'Enabled' });
  t.is(n0.index.buckets.object('mine', 'k')?.deleteMarker, true);
  t.is(n0.index.buckets.versionOfFile('000000000002000000000002')?.record.node, 'n1', 'the holders pull from n1');

  // `shared` was the cluster's first: n1's stays its own, said once.
  await waitFor('the name found taken', () => n1.alarms.length > 0, 30_000, 100);
  t.deepEqual(
    n1.alarms.map((a) => [a.kind, a.details?.['bucket']]),
    [['bucket-name-taken', 'shared']],
  );
  t.is(n0.index.buckets.object('shared', 'ours'), undefined);
  await waitFor('n1 done giving', () => n1.index.buckets.logJoining() === null, 30_000, 100);

  // A node that joins later has `mine` from the log alone.
  const n2 = await node('n2');
  await waitFor('n2 applied the log', () => n2.log.position === n0.log.position && n2.log.position > 0, 30_000, 100);
  t.deepEqual(shape(n2.index, 'mine'), shape(n1.index, 'mine'));
  t.deepEqual(n2.alarms, []);
});
