/**
 * Backup to another cluster when the writer dies (docs/design/cluster.md "Backup to
 * another cluster", Faults), through real processes: cluster A (one nats-server, two
 * recorders, a pool with `copies: 2` backed up to B) and cluster B (one nats-server, one
 * recorder). B's nats-server is stopped, so the writer's newest segments are never
 * announced; they are copied to the other node of A; the writer is killed with SIGKILL
 * and B comes back. Before, nothing was sent until the writer came back (and never, if
 * it did not): now the survivor sends every closed segment the writer recorded from its
 * copies, byte for byte, and moves the writer's cursor past them.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { SimCamera } from '../sim/camera.ts';
import { startNatsCluster } from '../sim/nats-cluster.ts';
import { tempDir, waitFor } from './helpers/recorder.ts';
import { send, spawnClusterNodes, type ClusterNodeProcess } from './helpers/cluster.ts';

interface Seg {
  startMs: number;
  endMs: number;
  bytes: number;
  fence?: { node: string };
}

/** A node's own closed segments of a camera (its peer subject: its index only). */
async function ownSegments(nc: NatsConnection, node: string, camera: string): Promise<Seg[]> {
  const m = await nc.request(
    `rec.v1.node.${node}.segments`,
    JSON.stringify({ camera, from: new Date(Date.now() - 3600_000).toISOString(), to: new Date(Date.now() + 60_000).toISOString() }),
    { timeout: 5000 },
  );
  const body = JSON.parse(m.string()) as { ok: boolean; segments?: Seg[]; error?: { code: string } };
  if (!body.ok) {
    if (body.error?.code !== 'CAMERA_NOT_FOUND') throw new Error(`segments of ${camera} on ${node}: ${m.string()}`);
    return [];
  }
  return body.segments ?? [];
}

/** SHA-256 of the segment file starting at `startMs` under a node's pools (null: none). */
async function segmentHash(dataDir: string, startMs: number): Promise<string | null> {
  const files = (await readdir(join(dataDir, 'pools'), { recursive: true })).filter((f) => /^\d+\.(mp4|ps)$/.test(basename(f)));
  const file = files.find((f) => basename(f).startsWith(`${startMs}.`));
  return file
    ? createHash('sha256')
        .update(await readFile(join(dataDir, 'pools', file)))
        .digest('hex')
    : null;
}

test("a dead writer's segments reach the backup cluster from the copy a survivor holds, byte for byte", async (t) => {
  t.timeout(240_000);
  const dir = await tempDir(t, 'rec-backup-stand-in-');
  const natsA = await startNatsCluster({ dir: join(dir, 'nats-a'), size: 1, name: 'a' });
  t.teardown(() => natsA.stop());
  const natsB = await startNatsCluster({ dir: join(dir, 'nats-b'), size: 1, name: 'b' });
  t.teardown(() => natsB.stop());
  const sim = await SimCamera.start({ width: 160, height: 120, bitrateKbit: 150 });
  t.teardown(() => sim.stop());
  const env = { RECORDER_CLUSTER: 'on', RECORDER_SEGMENT_SECONDS: '2' };
  const nodes = await spawnClusterNodes(t, dir, natsA.urls, ['a1', 'a2'], env);
  const [b] = (await spawnClusterNodes(t, dir, natsB.urls, ['b'], env)) as [ClusterNodeProcess];
  const ncA = await connect({ servers: natsA.urls.split(','), maxReconnectAttempts: -1, reconnectTimeWait: 250 });
  t.teardown(() => ncA.close());
  const ncB = await connect({ servers: natsB.urls.split(','), maxReconnectAttempts: -1, reconnectTimeWait: 250 });
  t.teardown(() => ncB.close());

  await waitFor(
    'pool vault on B',
    async () => (await send('PUT', `${b.http}/api/pools/vault`, { capacityBytes: null, overwrite: 'capacity', receivesBackups: true })).status === 200,
    60_000,
    500,
  );
  const backupCluster = { servers: natsB.urls.split(','), pool: 'vault' };
  await waitFor(
    'pool yard on A: two copies, backed up to B',
    async () =>
      (await send('PUT', `${nodes[0]!.http}/api/pools/yard`, { capacityBytes: null, overwrite: 'capacity', copies: 2, backupCluster })).status === 200,
    60_000,
    500,
  );
  t.is((await send('PUT', `${nodes[0]!.http}/api/cameras/k1`, { pool: 'yard', streams: { main: sim.url('h264') } })).status, 200);

  // The writer is the node whose own index holds segments it fenced; the other holds its copies.
  const writer = await waitFor(
    'a segment of k1 on B (the backup works)',
    async () => {
      if ((await ownSegments(ncB, b.id, 'k1')).length === 0) return null;
      for (const n of nodes) if ((await ownSegments(ncA, n.id, 'k1')).some((s) => s.fence?.node === n.id)) return n;
      return null;
    },
    90_000,
    500,
  );
  const survivor = nodes.find((n) => n !== writer)!;

  // The target unreachable: what the writer closes from now on it cannot announce.
  await natsB.servers[0]!.stop();
  const cutAt = Date.now();
  await waitFor(
    'the writer closes 3 segments while B is down',
    async () => (await ownSegments(ncA, writer.id, 'k1')).filter((s) => s.startMs > cutAt).length >= 3,
    60_000,
    500,
  );
  // The camera stops, so no segment closes between the check below and the kill.
  await sim.stop();
  const stoppedAt = Date.now();
  const recorded = await waitFor(
    'its last segment closed and every one it closed copied to the survivor',
    async () => {
      const mine = (await ownSegments(ncA, writer.id, 'k1')).filter((s) => s.fence?.node === writer.id);
      if (mine.length === 0 || mine[mine.length - 1]!.endMs < stoppedAt - 2500) return null;
      const copies = new Map((await ownSegments(ncA, survivor.id, 'k1')).map((s) => [s.startMs, s.bytes]));
      return mine.every((s) => copies.get(s.startMs) === s.bytes) ? mine : null;
    },
    60_000,
    500,
  );
  const unsent = recorded.filter((s) => s.startMs > cutAt);
  t.true(unsent.length >= 3, 'segments the writer never announced');

  writer.proc.child.kill('SIGKILL');
  await writer.proc.exited;
  await natsB.servers[0]!.start();

  await waitFor(
    'B has every closed segment the dead writer recorded',
    async () => {
      const onB = new Map((await ownSegments(ncB, b.id, 'k1')).map((s) => [s.startMs, s.bytes]));
      return recorded.every((s) => onB.get(s.startMs) === s.bytes);
    },
    120_000,
    500,
  );
  for (const s of recorded) {
    const want = await segmentHash(writer.dataDir, s.startMs);
    t.truthy(want, `the writer's file of ${s.startMs}`);
    t.is(await segmentHash(b.dataDir, s.startMs), want, `B's ${s.startMs} is the writer's, byte for byte`);
  }

  // The writer's cursor moved past what was sent, so the writer, back, resumes after it.
  const kv = await ncA.jetstream().views.kv('rec-backup');
  const cursor = await kv.get(`yard.k1.${writer.id.replace(/[^A-Za-z0-9_-]/g, (c) => `=${c.charCodeAt(0).toString(16)}`)}`);
  t.is(Number(cursor?.string()), recorded[recorded.length - 1]!.startMs, "the dead writer's cursor is at its newest segment");
  t.log(`${recorded.length} segments of the dead writer on B, ${unsent.length} of them never announced by it`);
});
