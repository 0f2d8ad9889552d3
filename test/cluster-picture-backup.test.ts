/**
 * Pictures backed up to another cluster through real processes (docs/design/pictures.md
 * "Backup to another cluster"): two clusters, each its own nats-server with JetStream and
 * one recorder node. A pool of cluster A names cluster B's NATS and a pool of B that
 * receives backups; pictures written over HTTP to A are read on B by id byte for byte.
 * B's nats-server is stopped while A takes more pictures and started again (A announces
 * again what B's stream did not take), B's recorder is killed and restarted (it pulls what
 * waited in its stream), then A's recorder is killed and restarted (it goes on from its
 * cursor): nothing is missing on B, whose search and ZIP list every picture.
 * A pull without the pack's grant is refused.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import sharp from 'sharp';
import { startNatsCluster } from '../sim/nats-cluster.ts';
import { getJson, spawnRecorder, tempDir, waitFor } from './helpers/recorder.ts';
import { send, spawnClusterNodes, type ClusterNodeProcess } from './helpers/cluster.ts';
import { readZip } from './helpers/zip-reader.ts';

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

test('picture backup to another cluster: every picture reaches it byte for byte, across a stop of its NATS, a restart of its recorder and of the writer', async (t) => {
  t.timeout(240_000);
  const dir = await tempDir(t, 'rec-picbackup-');
  const natsA = await startNatsCluster({ dir: join(dir, 'nats-a'), size: 1, name: 'a' });
  t.teardown(() => natsA.stop());
  const natsB = await startNatsCluster({ dir: join(dir, 'nats-b'), size: 1, name: 'b' });
  t.teardown(() => natsB.stop());
  const env = { RECORDER_CLUSTER: 'on' };
  let [a] = (await spawnClusterNodes(t, dir, natsA.urls, ['a'], env)) as [ClusterNodeProcess];
  let [b] = (await spawnClusterNodes(t, dir, natsB.urls, ['b'], env)) as [ClusterNodeProcess];
  let logB = '';
  b.proc.child.stdout?.on('data', (chunk: Buffer) => (logB += chunk.toString()));

  await waitFor(
    'pool vault on B',
    async () => (await send('PUT', `${b.http}/api/pools/vault`, { capacityBytes: null, overwrite: 'capacity', receivesBackups: true })).status === 200,
    60_000,
    500,
  );
  await waitFor(
    'pool yard on A with its backup cluster',
    async () =>
      (
        await send('PUT', `${a.http}/api/pools/yard`, {
          capacityBytes: null,
          overwrite: 'capacity',
          backupCluster: { servers: natsB.urls.split(','), pool: 'vault' },
        })
      ).status === 200,
    60_000,
    500,
  );
  // A camera of the pool (nothing listens at its URL: pictures need only its config).
  await waitFor(
    'camera gate on A',
    async () => (await send('PUT', `${a.http}/api/cameras/gate`, { pool: 'yard', streams: { main: 'rtsp://127.0.0.1:9/none' } })).status === 200,
    30_000,
    200,
  );

  // A pool of B that does not receive backups refuses what A announces for it: nothing is pulled.
  await waitFor(
    'pool plain on B, pool lot on A backing up to it',
    async () =>
      (await send('PUT', `${b.http}/api/pools/plain`, { capacityBytes: null, overwrite: 'capacity' })).status === 200 &&
      (
        await send('PUT', `${a.http}/api/pools/lot`, {
          capacityBytes: null,
          overwrite: 'capacity',
          backupCluster: { servers: natsB.urls.split(','), pool: 'plain' },
        })
      ).status === 200 &&
      (await send('PUT', `${a.http}/api/cameras/door`, { pool: 'lot', streams: { main: 'rtsp://127.0.0.1:9/none' } })).status === 200,
    30_000,
    200,
  );

  const base = Date.now() - 60_000;
  const originals = new Map<string, Buffer>();
  let n = 0;
  const write = async (to: ClusterNodeProcess, count: number): Promise<void> => {
    for (let i = 0; i < count; i++, n++) {
      const pic = await sharp({ create: { width: 160, height: 120, channels: 3, background: { r: (13 * n) % 256, g: 200 - n, b: 90 } } })
        .jpeg()
        .toBuffer();
      const res = await fetch(`${to.http}/api/pictures?camera=gate&type=alarm&at=${base + n * 100}&meta.n=${n}`, {
        method: 'POST',
        headers: { 'content-type': 'image/jpeg' },
        body: pic,
      });
      t.is(res.status, 200);
      originals.set(((await res.json()) as { id: string }).id, pic);
    }
  };
  /** The ids of `originals` that B does not answer byte for byte. */
  const missingOnB = async (): Promise<string[]> => {
    const out: string[] = [];
    for (const [id, pic] of originals) {
      const res = await fetch(`${b.http}/api/pictures/${id}`);
      if (res.status !== 200 || sha(new Uint8Array(await res.arrayBuffer())) !== sha(pic)) out.push(id);
    }
    return out;
  };

  const refused = await fetch(`${a.http}/api/pictures?camera=door&type=alarm&at=${base}`, {
    method: 'POST',
    headers: { 'content-type': 'image/jpeg' },
    body: await sharp({ create: { width: 64, height: 48, channels: 3, background: { r: 1, g: 2, b: 3 } } })
      .jpeg()
      .toBuffer(),
  });
  t.is(refused.status, 200);
  const refusedId = ((await refused.json()) as { id: string }).id;
  await waitFor(
    'B refuses the backup for pool plain',
    () => Promise.resolve(logB.includes('a backup announcement refused: pool plain does not receive backups')),
    60_000,
    250,
  );
  t.is((await fetch(`${b.http}/api/pictures/${refusedId}`)).status, 404, 'nothing of a refused backup is stored');

  await write(a, 6);
  await waitFor('the first pictures on B', async () => (await missingOnB()).length === 0, 60_000, 500);

  // B's NATS stopped: A's announcements fail meanwhile, and are made again once it is back.
  const server = natsB.servers[0]!;
  await server.stop();
  await write(a, 6);
  await waitFor(
    'A sees that B does not take announcements',
    async () => {
      const s = await getJson<{ pictureBackups?: { pool: string; lastError: string | null }[] }>(`${a.http}/api/cluster/nodes`);
      return (s.body.pictureBackups?.find((p) => p.pool === 'yard')?.lastError ?? null) !== null;
    },
    60_000,
    500,
  );
  await server.start();
  await waitFor('the pictures written while B’s NATS was down on B', async () => (await missingOnB()).length === 0, 90_000, 500);

  /** The node killed and started again on its data dir (the same node id), as spawnClusterNodes starts one. */
  const restart = async (node: ClusterNodeProcess, urls: string): Promise<ClusterNodeProcess> => {
    node.proc.child.kill('SIGKILL');
    await node.proc.exited;
    const proc = spawnRecorder(t, {
      RECORDER_DATA_DIR: node.dataDir,
      RECORDER_HTTP: '127.0.0.1:0',
      RECORDER_NATS_URL: urls,
      RECORDER_SYNC_SECONDS: '0',
      ...env,
    });
    return { ...node, proc, http: await proc.http };
  };

  // B's recorder killed: what A writes meanwhile waits in B's stream; B back pulls it (its consumer is durable).
  b = await (async () => {
    b.proc.child.kill('SIGKILL');
    await b.proc.exited;
    await write(a, 4);
    return restart(b, natsB.urls);
  })();
  await waitFor('the pictures written while B’s recorder was down on B', async () => (await missingOnB()).length === 0, 90_000, 500);

  // A's recorder killed and started again on its data dir: it goes on from its cursor.
  a = await restart(a, natsA.urls);
  await waitFor(
    'A takes pictures again',
    async () => {
      const res = await fetch(`${a.http}/api/pictures?camera=gate&from=${new Date(base - 1000).toISOString()}&to=${new Date(base + 60_000).toISOString()}`);
      return res.status === 200;
    },
    60_000,
    500,
  );
  await write(a, 4);
  await waitFor('every picture on B after the writer’s restart', async () => (await missingOnB()).length === 0, 90_000, 500);

  // On B the backup answers as a copy does: search and the ZIP list every picture.
  const ids = [...originals.keys()].sort();
  const q = `camera=gate&from=${new Date(base - 1000).toISOString()}&to=${new Date(base + 60_000).toISOString()}`;
  const listed = await getJson<{ pictures: { id: string }[] }>(`${b.http}/api/pictures?${q}&limit=1000`);
  t.is(listed.status, 200, JSON.stringify(listed.body));
  t.deepEqual(listed.body.pictures.map((p) => p.id).sort(), ids, 'search on B lists every picture once');
  const zipRes = await fetch(`${b.http}/api/pictures/download.zip?${q}`);
  t.is(zipRes.status, 200);
  const zipped = await readZip(await tempDir(t), Buffer.from(await zipRes.arrayBuffer()));
  t.deepEqual(zipped.map((e) => e.sha).sort(), [...originals.values()].map((p) => sha(p)).sort(), 'the ZIP on B holds every picture byte for byte');
  const nodes = await getJson<{ pictureBackups?: { pool: string; announced: number }[] }>(`${a.http}/api/cluster/nodes`);
  t.true((nodes.body.pictureBackups?.find((p) => p.pool === 'yard')?.announced ?? 0) > 0, 'the writer shows its picture backup work');

  // The pack's grant opens only that pack: no grant, or a wrong one, is refused by A.
  t.is((await fetch(`${a.http}/api/cluster/picture-packs/${a.id}/1`)).status, 401);
  t.is((await fetch(`${a.http}/api/cluster/picture-packs/${a.id}/1`, { headers: { 'x-recorder-backup-grant': 'f'.repeat(64) } })).status, 401);
});
