/**
 * A partition through real processes (docs/design/cluster.md "Partition overlap"):
 * three nats-servers on loopback, node A connected to them only through TCP forwarders
 * (test/helpers/tcp-cut.ts; the servers do not advertise each other to clients), nodes B
 * and C connected directly. A records the camera; its links are cut: A goes on recording
 * under its old grant, B or C is granted the camera and records it too. The links come
 * back: A stops, and pulls the new owner's video of the time both recorded. Then every
 * node shows one timeline of that time where the higher fence wins: a download through
 * any node is the new owner's video there (byte for byte what the new owner serves), and
 * a download across the whole partition is one file as long as its range, not both
 * recordings one after the other.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { SimCamera } from '../sim/camera.ts';
import { startNatsCluster } from '../sim/nats-cluster.ts';
import type { FenceStamp } from '../index/records.ts';
import { getJson, tempDir, waitFor } from './helpers/recorder.ts';
import { spawnClusterNodes, type ClusterNodeProcess } from './helpers/cluster.ts';
import { decodeErrors, ffprobe } from './helpers/media.ts';
import { TcpCut } from './helpers/tcp-cut.ts';

const CAMERA = 'p1';

interface PeerSegment {
  startMs: number;
  endMs: number;
  fence?: FenceStamp;
}

test.serial('a partition: both sides record, the heal leaves one timeline where the higher fence wins, through every node', async (t) => {
  t.timeout(240_000);
  const dir = await tempDir(t, 'rec-partition-');
  const cluster = await startNatsCluster({ dir: join(dir, 'nats'), noAdvertise: true });
  t.teardown(() => cluster.stop());
  const cuts = await Promise.all(cluster.servers.map((s) => TcpCut.start(t, s.port)));
  const sim = await SimCamera.start({ width: 160, height: 120, bitrateKbit: 150 });
  t.teardown(() => sim.stop());
  const env = { RECORDER_SEGMENT_SECONDS: '2' };

  const nc: NatsConnection = await connect({ servers: cluster.urls.split(','), maxReconnectAttempts: -1, reconnectTimeWait: 250 });
  t.teardown(() => nc.close());
  const ownerOf = async (): Promise<{ node: string; rev: number } | null> => {
    const bucket = await nc.jetstream().views.kv('rec-owners', { bindOnly: true });
    const e = await bucket.get(CAMERA);
    return e && e.operation === 'PUT' ? { node: e.json<{ node: string }>().node, rev: e.revision } : null;
  };
  /** A node's own closed segments of the camera, with their fences (its peer subject). */
  const segmentsOn = async (node: string, fromMs: number, toMs: number): Promise<PeerSegment[]> => {
    const m = await nc.request(
      `rec.v1.node.${node}.segments`,
      JSON.stringify({ camera: CAMERA, from: new Date(fromMs).toISOString(), to: new Date(toMs).toISOString() }),
      {
        timeout: 5000,
      },
    );
    const r = JSON.parse(m.string()) as { ok: boolean; segments?: PeerSegment[] };
    if (!r.ok) throw new Error(m.string());
    return r.segments!;
  };

  // A alone first: the camera is placed on it.
  const [a] = await spawnClusterNodes(t, dir, cuts.map((c) => `nats://127.0.0.1:${c.port}`).join(','), ['a'], env);
  await waitFor(
    'the camera accepted',
    async () => {
      const m = await nc.request('rec.v1.camera.put', JSON.stringify({ id: CAMERA, streams: { main: sim.url('h264') } }), { timeout: 10_000 });
      const r = JSON.parse(m.string()) as { ok: boolean; error?: { code: string } };
      if (!r.ok && r.error?.code !== 'CLUSTER_UNAVAILABLE') throw new Error(m.string());
      return r.ok;
    },
    60_000,
    500,
  );
  const first = await waitFor('A owns the camera', async () => ((await ownerOf())?.node === a!.id ? await ownerOf() : null), 60_000, 250);
  const [b, c] = await spawnClusterNodes(t, dir, cluster.urls, ['b', 'c'], env);
  const byId = new Map([a!, b!, c!].map((n) => [n.id, n]));
  // A has closed video, and B and C know A (they must judge it dead, not unknown).
  const startMs = await waitFor(
    'A records',
    async () => {
      const s = await segmentsOn(a!.id, Date.now() - 120_000, Date.now() + 60_000);
      return s.length >= 2 ? s[0]!.startMs : null;
    },
    60_000,
    250,
  );
  await waitFor(
    'B and C see A alive',
    async () => {
      const v = await getJson<{ nodes: { node: string; alive: boolean }[] }>(`${c!.http}/api/cluster/nodes`);
      return v.body.nodes.filter((n) => n.alive).length === 3;
    },
    60_000,
    250,
  );

  // ---- the partition ----
  const cutAt = Date.now();
  await Promise.all(cuts.map((x) => x.cut()));
  const second = await waitFor(
    'the camera granted to B or C',
    async () => {
      const o = await ownerOf();
      return o && o.node !== a!.id ? o : null;
    },
    60_000,
    250,
  );
  t.true(second.rev > first.rev, 'a new grant: a higher fence');
  const other = byId.get(second.node)!;
  t.log(`partition at ${new Date(cutAt).toISOString()}: camera granted to ${other.name} after ${Date.now() - cutAt} ms`);
  // Both record: the new owner has 6 s of closed video of its own, and A went on.
  const theirs = await waitFor(
    `${other.name} records 6 s`,
    async () => {
      const s = (await segmentsOn(other.id, cutAt, Date.now() + 60_000)).filter((x) => x.fence?.node === other.id);
      return s.length > 0 && s[s.length - 1]!.endMs - s[0]!.startMs >= 6000 ? s : null;
    },
    60_000,
    250,
  );
  const aRecording = await getJson<{ camera: { status: string } }>(`${a!.http}/api/cameras/${CAMERA}`);
  t.is(aRecording.body.camera.status, 'recording', 'A goes on recording under its old grant');

  // ---- the heal ----
  const healAt = Date.now();
  await Promise.all(cuts.map((x) => x.restore()));
  // A stops, and pulls the new owner's video of the time both recorded. The heal starts
  // once A's last segment is closed: with anything pulled, A's own end is final.
  // What A showed last, in the message if it never gets there (a flaky heal is a bug to understand).
  let lastSeen = 'nothing yet';
  const aEnd = await waitFor(
    `A stops recording and holds ${other.name}'s video up to the end of its own`,
    async () => {
      const s = await getJson<{ camera: { status: string } }>(`${a!.http}/api/cameras/${CAMERA}`);
      const o = await ownerOf().catch(() => null);
      lastSeen = `A's camera ${s.body.camera.status}; owner ${o ? `${byId.get(o.node)?.name ?? o.node} rev ${o.rev}` : 'unknown'}`;
      if (s.body.camera.status === 'recording') return null;
      const all = await segmentsOn(a!.id, cutAt, Date.now() + 60_000);
      const own = all.filter((x) => x.fence?.node === a!.id);
      const pulled = all.filter((x) => x.fence?.node === other.id);
      lastSeen += `; on A: ${own.length} own segments to ${own.at(-1)?.endMs ?? '-'}, ${pulled.length} pulled to ${pulled.at(-1)?.endMs ?? '-'}`;
      // An own segment that started at the very instant of one of theirs gave way to it (the
      // higher fence wins; one key per instant): A's timeline is its own and theirs together.
      if (pulled.length === 0) return null;
      const ownEnd = own.at(-1)?.endMs ?? -Infinity;
      const pulledEnd = pulled[pulled.length - 1]!.endMs;
      return pulledEnd >= ownEnd - 40 ? Math.max(ownEnd, pulledEnd) : null;
    },
    90_000,
    500,
  ).catch((err: unknown) => {
    throw new Error(`${(err as Error).message} (last seen: ${lastSeen})`);
  });
  t.true(aEnd > healAt - 2000, `A holds the video of the whole partition (to ${aEnd - healAt} ms from the heal)`);

  // ---- one timeline ----
  const download = async (n: ClusterNodeProcess, fromMs: number, toMs: number): Promise<{ node: string | null; body: Buffer }> => {
    const res = await fetch(
      `${n.http}/api/cameras/${CAMERA}/video.mp4?${new URLSearchParams({ from: new Date(fromMs).toISOString(), to: new Date(toMs).toISOString() }).toString()}`,
    );
    t.is(res.status, 200, `${n.name}: ${fromMs}..${toMs}`);
    return { node: res.headers.get('x-recorder-node'), body: Buffer.from(await res.arrayBuffer()) };
  };
  const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
  // Inside what the new owner recorded during the partition: its video, through every node.
  const inFrom = theirs[0]!.startMs + 1000;
  const inTo = theirs[0]!.startMs + 5000;
  const reference = await download(other, inFrom, inTo);
  t.is(reference.node, null, 'the new owner serves what it has itself (a proxied answer names its node)');
  for (const n of [a!, b!, c!]) {
    const got = await download(n, inFrom, inTo);
    t.is(sha(got.body), sha(reference.body), `${n.name} (served by ${got.node ?? n.name}): the higher fence's video, byte for byte`);
  }
  // Across the whole partition: one file, as long as its range (not both recordings in turn).
  const fromMs = Math.max(startMs, cutAt - 4000);
  const toMs = aEnd - 500;
  const whole = await download(c!, fromMs, toMs);
  const file = join(dir, 'whole.mp4');
  await writeFile(file, whole.body);
  const probe = await ffprobe(file);
  const want = (toMs - fromMs) / 1000;
  t.log(
    `${new Date(fromMs).toISOString()}..${new Date(toMs).toISOString()} (${want} s) through ${c!.name}, served by ${whole.node ?? c!.name}: ${probe.durationSec} s`,
  );
  t.true(probe.durationSec <= want + 1 && probe.durationSec >= want - 3, `one timeline: ${probe.durationSec} s for a ${want} s range`);
  t.is(await decodeErrors(file), '');
});
