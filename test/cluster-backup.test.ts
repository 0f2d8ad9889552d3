/**
 * Backup to another cluster through real processes (docs/cluster.md "Backup to another
 * cluster"): two clusters, each its own nats-server with JetStream and one recorder
 * node. A pool of cluster A names cluster B's NATS and a pool of B; every closed segment
 * A records there reaches B byte for byte, B's node is killed and comes back (what A
 * closed meanwhile arrives), A's node is killed and comes back (it goes on from its
 * cursor: nothing missing), and B answers search and download of the camera it knows
 * only by its video.
 */
import test from 'ava';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { SimCamera } from '../sim/camera.ts';
import { startNatsCluster } from '../sim/nats-cluster.ts';
import { spawnRecorder, tempDir, waitFor } from './helpers/recorder.ts';
import { send, spawnClusterNodes, type ClusterNodeProcess } from './helpers/cluster.ts';
import { decodeErrors, ffprobe } from './helpers/media.ts';

interface Seg {
  startMs: number;
  endMs: number;
  bytes: number;
}

/** A node's own closed segments of a camera (its peer subject: its index only). */
async function ownSegments(nc: NatsConnection, node: string, camera: string): Promise<Seg[]> {
  const m = await nc.request(
    `rec.v1.node.${node}.segments`,
    JSON.stringify({ camera, from: new Date(Date.now() - 3600_000).toISOString(), to: new Date(Date.now() + 60_000).toISOString() }),
    {
      timeout: 5000,
    },
  );
  const body = JSON.parse(m.string()) as { ok: boolean; segments?: Seg[]; error?: { code: string } };
  if (!body.ok) {
    if (body.error?.code !== 'CAMERA_NOT_FOUND') throw new Error(`segments of ${camera} on ${node}: ${m.string()}`);
    return [];
  }
  return body.segments ?? [];
}

/** Segments of `a` up to `untilMs` that `b` lacks or holds with other sizes. */
function missing(a: Seg[], b: Seg[], untilMs: number): Seg[] {
  const held = new Map(b.map((s) => [s.startMs, s.bytes]));
  return a.filter((s) => s.startMs <= untilMs && held.get(s.startMs) !== s.bytes);
}

test('backup to another cluster: every closed segment reaches it byte for byte, across a restart of either side; it answers for the camera', async (t) => {
  t.timeout(240_000);
  const dir = await tempDir(t, 'rec-backup-cluster-');
  const natsA = await startNatsCluster({ dir: join(dir, 'nats-a'), size: 1, name: 'a' });
  t.teardown(() => natsA.stop());
  const natsB = await startNatsCluster({ dir: join(dir, 'nats-b'), size: 1, name: 'b' });
  t.teardown(() => natsB.stop());
  const sim = await SimCamera.start({ width: 160, height: 120, bitrateKbit: 150 });
  t.teardown(() => sim.stop());
  const env = { RECORDER_CLUSTER: 'on', RECORDER_SEGMENT_SECONDS: '2' };
  let [a] = (await spawnClusterNodes(t, dir, natsA.urls, ['a'], env)) as [ClusterNodeProcess];
  let [b] = (await spawnClusterNodes(t, dir, natsB.urls, ['b'], env)) as [ClusterNodeProcess];
  /** The node started again on its data dir (the same node id), as spawnClusterNodes starts one. */
  const restart = async (n: ClusterNodeProcess, urls: string): Promise<ClusterNodeProcess> => {
    const proc = spawnRecorder(t, { RECORDER_DATA_DIR: n.dataDir, RECORDER_HTTP: '127.0.0.1:0', RECORDER_NATS_URL: urls, RECORDER_SYNC_SECONDS: '0', ...env });
    return { ...n, proc, http: await proc.http };
  };
  const ncA = await connect({ servers: natsA.urls.split(','), maxReconnectAttempts: -1, reconnectTimeWait: 250 });
  t.teardown(() => ncA.close());
  const ncB = await connect({ servers: natsB.urls.split(','), maxReconnectAttempts: -1, reconnectTimeWait: 250 });
  t.teardown(() => ncB.close());

  // The target's pool first (an announcement for a pool B lacks waits and retries).
  await waitFor(
    'pool vault on B',
    async () => (await send('PUT', `${b.http}/api/pools/vault`, { capacityBytes: null, overwrite: 'capacity', receivesBackups: true })).status === 200,
    60_000,
    500,
  );
  const bad = await send<{ error: { code: string; message: string } }>('PUT', `${a.http}/api/pools/yard`, {
    capacityBytes: null,
    overwrite: 'capacity',
    backupCluster: { servers: ['http://127.0.0.1:4222'] },
  });
  t.is(bad.status, 400, 'a backup target that is not a NATS URL is refused');
  t.is(bad.body.error.code, 'VALIDATION_FAILED');
  const userinfo = await send('PUT', `${a.http}/api/pools/yard`, {
    capacityBytes: null,
    overwrite: 'capacity',
    backupCluster: { servers: ['nats://u:secret@127.0.0.1:4222'] },
  });
  t.is(userinfo.status, 400, 'credentials in a server URL are refused (they would be shown)');
  const backupCluster = { servers: natsB.urls.split(','), pool: 'vault', user: 'backup', pass: 'not-needed-here' };
  // B's nats-server has no users: a user and password are sent and ignored there; the view never shows the password.
  await waitFor(
    'pool yard on A with its backup cluster',
    async () => (await send('PUT', `${a.http}/api/pools/yard`, { capacityBytes: null, overwrite: 'capacity', backupCluster })).status === 200,
    60_000,
    500,
  );
  const shown = await send<{ pool: { backupCluster: { pass: string; servers: string[] } } }>('GET', `${a.http}/api/pools/yard`);
  t.is(shown.body.pool.backupCluster.pass, '***', 'the target password is not shown');
  t.deepEqual(shown.body.pool.backupCluster.servers, backupCluster.servers);
  const resent = await send('PUT', `${a.http}/api/pools/yard`, {
    capacityBytes: null,
    overwrite: 'capacity',
    backupCluster: { ...backupCluster, pass: '***' },
  });
  t.is(resent.status, 200, 'the pool sent back as shown keeps its password');

  t.is((await send('PUT', `${a.http}/api/cameras/k1`, { pool: 'yard', streams: { main: sim.url('h264') } })).status, 200);
  const first = await waitFor(
    'three segments of k1 backed up on B',
    async () => {
      const onB = await ownSegments(ncB, b.id, 'k1');
      return onB.length >= 3 ? onB : null;
    },
    90_000,
    500,
  );
  const onA = await ownSegments(ncA, a.id, 'k1');
  t.deepEqual(missing(onA, first, first[first.length - 1]!.startMs), [], 'what B has is what A wrote, byte for byte');

  // The target's node killed: what A closes meanwhile waits in B's stream.
  b.proc.child.kill('SIGKILL');
  await b.proc.exited;
  const downAt = Date.now();
  await waitFor(
    'A closes 3 segments while B is down',
    async () => (await ownSegments(ncA, a.id, 'k1')).filter((s) => s.startMs > downAt).length >= 3,
    60_000,
    500,
  );
  b = await restart(b, natsB.urls);
  const untilB = Date.now() - 6000;
  await waitFor(
    'B has every segment A closed while it was down',
    async () => missing(await ownSegments(ncA, a.id, 'k1'), await ownSegments(ncB, b.id, 'k1'), untilB).length === 0,
    90_000,
    500,
  );

  // The source's node killed and restarted on its data dir: it goes on from its cursor.
  a.proc.child.kill('SIGKILL');
  await a.proc.exited;
  a = await restart(a, natsA.urls);
  const restartedAt = Date.now();
  await waitFor(
    'A records again after its restart',
    async () => (await ownSegments(ncA, a.id, 'k1')).filter((s) => s.startMs > restartedAt).length >= 3,
    90_000,
    500,
  );
  const untilA = Date.now() - 6000;
  await waitFor(
    'B has every closed segment of A, before and after its restart',
    async () => missing(await ownSegments(ncA, a.id, 'k1'), await ownSegments(ncB, b.id, 'k1'), untilA).length === 0,
    90_000,
    500,
  );
  const all = await ownSegments(ncA, a.id, 'k1');
  t.log(`${all.length} segments of k1 on A; every one up to ${untilA - all[0]!.startMs} ms after the first is on B`);

  // B answers for a camera it knows only by its video: search, and a download that decodes.
  const from = first[0]!.startMs + 500;
  const to = first[first.length - 1]!.endMs;
  const found = await send<{ spans: { from: string; to: string }[] }>(
    'GET',
    `${b.http}/api/recordings?camera=k1&from=${new Date(from).toISOString()}&to=${new Date(untilA).toISOString()}`,
  );
  t.is(found.status, 200);
  t.true(found.body.spans.length >= 1, 'search on B finds the backed-up video');
  const res = await fetch(`${b.http}/api/cameras/k1/video.mp4?from=${from}&to=${to}`);
  t.is(res.status, 200);
  const file = join(dir, 'from-b.mp4');
  await writeFile(file, Buffer.from(await res.arrayBuffer()));
  t.true((await ffprobe(file)).durationSec > 2, 'the download from B holds the video');
  t.is(await decodeErrors(file), '', 'and decodes');

  // The grant opens one segment only: a wrong one is refused by A.
  const peer = await fetch(`${a.http}/api/cluster/segments/k1/${first[0]!.startMs}`, { headers: { 'x-recorder-backup-grant': 'f'.repeat(64) } });
  t.is(peer.status, 401, 'a wrong backup grant is refused');
  const nodes = await send<{ backups?: { pool: string; announced: number; lastError: string | null }[] }>('GET', `${a.http}/api/cluster/nodes`);
  t.is(nodes.body.backups?.[0]?.pool, 'yard', 'the node shows its backup work');
});
