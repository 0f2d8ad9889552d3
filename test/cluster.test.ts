/**
 * The cluster through real processes (docs/design/cluster.md): three nats-servers
 * clustered on loopback (sim/nats-cluster.ts), three recorder processes given all three
 * URLs, one simulated camera serving four camera ids. A recorder killed with SIGKILL
 * loses its cameras to the survivors (the time is measured and logged; the goal is 6 s,
 * the assertion leaves room for a loaded machine); a recorder frozen with SIGSTOP loses
 * its cameras too and, resumed, writes none of them again; an audit of every node's
 * index finds no camera written by two nodes over the same instant, and every segment
 * written in the cluster stamped with its node and fence token.
 */
import test from 'ava';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { availableParallelism } from 'node:os';
import { connect, type KV, type NatsConnection } from 'nats';
import { SimCamera } from '../sim/camera.ts';
import { startNatsCluster } from '../sim/nats-cluster.ts';
import { RecorderIndex } from '../index/db.ts';
import type { SegmentRecord } from '../index/records.ts';
import { getJson, tempDir, waitFor } from './helpers/recorder.ts';
import { send, spawnClusterNodes, type ClusterNodeProcess } from './helpers/cluster.ts';
import { decodeErrors, ffprobe } from './helpers/media.ts';

const CAMERAS = ['c1', 'c2', 'c3', 'c4'];
/** Failover goal of the issue; asserted with room for a loaded 2-core machine (figures: bench/cluster.ts). */
const GOAL_MS = 6000;
const ASSERT_MS = 20_000;

type Node = ClusterNodeProcess;

async function status(http: string, camera: string): Promise<string> {
  const { body } = await getJson<{ camera: { status: string } }>(`${http}/api/cameras/${camera}`);
  return body.camera.status;
}

async function owner(kv: KV, camera: string): Promise<{ node: string; revision: number } | null> {
  const e = await kv.get(camera);
  if (!e || e.operation !== 'PUT') return null;
  return { node: e.json<{ node: string }>().node, revision: e.revision };
}

async function ownersOf(kv: KV): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const c of CAMERAS) {
    const o = await owner(kv, c);
    if (o) out.set(c, o.node);
  }
  return out;
}

/** Every segment of every camera in a node's index (opened after the node stopped or died). */
async function segmentsOf(dataDir: string): Promise<SegmentRecord[]> {
  const index = await RecorderIndex.open(dataDir);
  try {
    return CAMERAS.flatMap((c) => index.segments.inRange(c, 0, Number.MAX_SAFE_INTEGER));
  } finally {
    await index.close();
  }
}

test.serial('kill -9 and SIGSTOP: cameras move to the survivors, a node that lost a camera writes none of it, no instant is written twice', async (t) => {
  t.timeout(150_000);
  const dir = await tempDir(t, 'rec-cluster-');
  const cluster = await startNatsCluster({ dir: join(dir, 'nats') });
  t.teardown(() => cluster.stop());
  const sim = await SimCamera.start({ width: 160, height: 120, bitrateKbit: 150 });
  t.teardown(() => sim.stop());

  const nodes: Node[] = await spawnClusterNodes(t, dir, cluster.urls, ['a', 'b', 'c'], { RECORDER_SEGMENT_SECONDS: '4' });
  const byId = new Map(nodes.map((n) => [n.id, n]));

  const nc: NatsConnection = await connect({ servers: cluster.urls.split(','), maxReconnectAttempts: -1, reconnectTimeWait: 250 });
  t.teardown(() => nc.close());
  // Any node takes a camera.put (the service endpoints share a queue group); the shared config reaches all.
  for (const id of CAMERAS) {
    const reply = await waitFor(
      `camera ${id} accepted`,
      async () => {
        const m = await nc.request('rec.v1.camera.put', JSON.stringify({ id, streams: { main: sim.url('h264') } }), { timeout: 10_000 });
        const r = JSON.parse(m.string()) as { ok: boolean; error?: { code: string } };
        if (!r.ok && r.error?.code !== 'CLUSTER_UNAVAILABLE') throw new Error(JSON.stringify(r));
        return r.ok;
      },
      60_000,
      500,
    );
    t.true(reply);
  }
  const kv = await nc.jetstream().views.kv('rec-owners', { bindOnly: true });

  // Every camera owned by a live node and recording there; each node mirrors every camera.
  const placed = await waitFor(
    'every camera recording on its owner',
    async () => {
      const owners = await ownersOf(kv);
      if (owners.size < CAMERAS.length) return null;
      for (const [camera, node] of owners) if ((await status(byId.get(node)!.http, camera)) !== 'recording') return null;
      return owners;
    },
    60_000,
    500,
  );
  for (const n of nodes)
    t.is((await getJson<{ cameras: unknown[] }>(`${n.http}/api/cameras`)).body.cameras.length, CAMERAS.length, `${n.name} mirrors every camera`);
  const counts = nodes.map((n) => [...placed.values()].filter((o) => o === n.id).length);
  t.log(`placement: ${nodes.map((n, i) => `${n.name}=${counts[i]}`).join(' ')}`);
  t.true(Math.max(...counts) - Math.min(...counts) <= 2, 'least-loaded placement spreads the cameras');

  // ---- any node answers: the nodes, a search and a download through a node that does not hold the camera ----
  const victim = nodes[counts.indexOf(Math.max(...counts))]!;
  const lost = [...placed].filter(([, o]) => o === victim.id).map(([c]) => c);
  const stranger = nodes.find((n) => n !== victim)!;
  const view = await getJson<{
    cluster: boolean;
    nodes: { node: string; alive: boolean; cameras: string[]; weight: number; size: { cores: number; diskBytes: number } | null }[];
  }>(`${stranger.http}/api/cluster/nodes`);
  t.true(view.body.cluster);
  // Each node measured its size and said it in its heartbeat; on one machine they weigh the same.
  for (const n of view.body.nodes) {
    t.is(n.size?.cores, availableParallelism(), `${n.node} measured its cores`);
    t.true((n.size?.diskBytes ?? 0) > 0, `${n.node} measured its disk`);
    t.is(n.weight, 1, `${n.node} is as big as the biggest`);
  }
  t.deepEqual(view.body.nodes.map((n) => n.node).sort(), nodes.map((n) => n.id).sort());
  t.true(view.body.nodes.every((n) => n.alive));
  t.deepEqual(view.body.nodes.flatMap((n) => n.cameras).sort(), [...CAMERAS]);
  const t0 = Date.now() - 120_000;
  const held = await waitFor(
    `${lost[0]} searched through ${stranger.name}: 6 s of video from ${victim.name}`,
    async () => {
      const r = await getJson<{ spans: { from: string; to: string }[]; partial: boolean }>(
        `${stranger.http}/api/recordings?${new URLSearchParams({ camera: lost[0]!, from: new Date(t0).toISOString(), to: new Date(Date.now() + 60_000).toISOString() }).toString()}`,
      );
      const s = r.body.spans[0];
      if (s && Date.parse(s.to) - Date.parse(s.from) > 6000 && !r.body.partial) return s;
      throw new Error(`last answer ${JSON.stringify(r.body)}`);
    },
    30_000,
    250,
  );
  // The holder's heartbeat carries the bitrate it measures of the camera (what placement weighs).
  const beats = await nc.jetstream().views.kv('rec-nodes', { bindOnly: true });
  const bps = await waitFor(
    `${victim.name}'s heartbeat reports the bitrate of ${lost[0]}`,
    async () => (await beats.get(victim.id))?.json<{ bitsPerSecond?: Record<string, number> }>().bitsPerSecond?.[lost[0]!] ?? null,
    10_000,
    250,
  );
  t.true(bps > 10_000 && bps < 5_000_000, `${lost[0]} measured at ${bps} bit/s (the simulated camera sends ~150 kbit/s)`);
  const dlFrom = new Date(Date.parse(held.from) + 1000).toISOString();
  const dlTo = new Date(Date.parse(held.from) + 5000).toISOString();
  const dl = await fetch(`${stranger.http}/api/cameras/${lost[0]}/video.mp4?${new URLSearchParams({ from: dlFrom, to: dlTo }).toString()}`);
  t.is(dl.status, 200);
  t.is(dl.headers.get('x-recorder-node'), victim.id, 'the download came from the holder');
  const clip = join(dir, 'proxied.mp4');
  await writeFile(clip, Buffer.from(await dl.arrayBuffer()));
  const probe = await ffprobe(clip);
  t.true(Math.abs(probe.durationSec - 4) < 0.5, `a 4 s clip through a node that does not hold it: ${probe.durationSec} s`);
  t.is(await decodeErrors(clip), '');

  // ---- kill -9 the node with the most cameras ----
  const killedAt = Date.now();
  victim.proc.child.kill('SIGKILL');
  await victim.proc.exited;
  const survivors = nodes.filter((n) => n !== victim);
  const moved = new Map<string, { owned: number; recording: number }>();
  await waitFor(
    'the killed node’s cameras recording on survivors',
    async () => {
      for (const camera of lost) {
        if (moved.get(camera)?.recording) continue;
        const o = await owner(kv, camera);
        if (!o || o.node === victim.id) continue;
        const m = moved.get(camera) ?? { owned: Date.now() - killedAt, recording: 0 };
        moved.set(camera, m);
        if ((await status(byId.get(o.node)!.http, camera)) === 'recording') m.recording = Date.now() - killedAt;
      }
      return lost.every((c) => moved.get(c)?.recording);
    },
    ASSERT_MS + 10_000,
    100,
  );
  const worst = Math.max(...lost.map((c) => moved.get(c)!.recording));
  t.log(
    `kill -9 of ${victim.name} (${lost.join(', ')}): owned elsewhere after ${lost.map((c) => moved.get(c)!.owned).join('/')} ms, recording after ${lost.map((c) => moved.get(c)!.recording).join('/')} ms (goal ${GOAL_MS} ms)`,
  );
  t.true(worst <= ASSERT_MS, `failover took ${worst} ms`);
  // Search through a survivor: the dead node's spans are missing and the answer says so; the new holder's are there.
  const merged = await waitFor(
    `${lost[0]} searched after the kill`,
    async () => {
      const r = await getJson<{ spans: { from: string; to: string }[]; partial: boolean; unreachable: string[] }>(
        `${survivors[0]!.http}/api/recordings?${new URLSearchParams({ camera: lost[0]!, from: new Date(t0).toISOString(), to: new Date(Date.now() + 60_000).toISOString() }).toString()}`,
      );
      return r.body.spans.some((s) => Date.parse(s.from) > killedAt) ? r.body : null;
    },
    20_000,
    250,
  );
  t.true(merged.partial, 'a holder that cannot answer makes the search partial');
  t.deepEqual(merged.unreachable, [victim.id]);

  // ---- SIGSTOP a survivor that records something, then SIGCONT ----
  const now = await ownersOf(kv);
  const frozen = survivors.find((n) => [...now.values()].includes(n.id))!;
  const other = survivors.find((n) => n !== frozen)!;
  const frozenCams = [...now].filter(([, o]) => o === frozen.id).map(([c]) => c);
  frozen.proc.child.kill('SIGSTOP');
  const stoppedAt = Date.now();
  let thawed = false;
  t.teardown(() => {
    if (!thawed) frozen.proc.child.kill('SIGCONT');
  });
  await waitFor(
    'the frozen node’s cameras recording on the other survivor',
    async () => {
      for (const c of frozenCams) {
        const o = await owner(kv, c);
        if (o?.node !== other.id || (await status(other.http, c)) !== 'recording') return false;
      }
      return true;
    },
    ASSERT_MS + 10_000,
    200,
  );
  t.log(`SIGSTOP of ${frozen.name} (${frozenCams.join(', ')}): recording on ${other.name} after ${Date.now() - stoppedAt} ms`);
  // Video keeps arriving at the frozen node's ffmpeg meanwhile; it must not reach its index.
  await new Promise((r) => setTimeout(r, 2000));
  frozen.proc.child.kill('SIGCONT');
  thawed = true;
  await waitFor(
    'the resumed node stops recording what it lost',
    async () => {
      for (const c of frozenCams) if ((await status(frozen.http, c)) === 'recording') return false;
      return true;
    },
    20_000,
    200,
  );
  // Come back, the resumed node gets its share again by new grants (rebalancing), one camera at a time.
  const rebalanced = await waitFor(
    `${frozen.name} given cameras again by rebalancing`,
    async () => {
      const o = await ownersOf(kv);
      const mine = [...o.values()].filter((n) => n === frozen.id).length;
      const theirs = [...o.values()].filter((n) => n === other.id).length;
      return mine >= 1 && Math.abs(mine - theirs) <= 1 ? { mine, theirs, at: Date.now() } : null;
    },
    40_000,
    250,
  );
  t.log(`rebalanced after SIGCONT: ${frozen.name}=${rebalanced.mine} ${other.name}=${rebalanced.theirs} in ${rebalanced.at - stoppedAt} ms from the freeze`);

  // Drain the other survivor through the resumed one: every camera goes to the resumed node.
  const drained = await send<{ node: string; draining: boolean }>('POST', `${frozen.http}/api/cluster/drain`, { node: other.id });
  t.is(drained.status, 200, JSON.stringify(drained.body));
  t.true(drained.body.draining);
  await waitFor(
    `${other.name} drained`,
    async () => {
      const o = await ownersOf(kv);
      if (o.size < CAMERAS.length || [...o.values()].some((n) => n !== frozen.id)) return false;
      for (const c of CAMERAS) if ((await status(frozen.http, c)) !== 'recording') return false;
      return true;
    },
    30_000,
    250,
  );
  const nodesView = await getJson<{ nodes: { node: string; draining: boolean; cameras: string[] }[] }>(`${frozen.http}/api/cluster/nodes`);
  const otherView = nodesView.body.nodes.find((n) => n.node === other.id)!;
  t.true(otherView.draining);
  t.deepEqual(otherView.cameras, []);

  // One timeline through either survivor: the frozen node's spans before the freeze and the other's after.
  for (const via of survivors) {
    const r = await getJson<{ spans: { from: string; to: string }[] }>(
      `${via.http}/api/recordings?${new URLSearchParams({ camera: frozenCams[0]!, from: new Date(t0).toISOString(), to: new Date(Date.now() + 60_000).toISOString() }).toString()}`,
    );
    t.true(
      r.body.spans.some((sp) => Date.parse(sp.from) < stoppedAt) && r.body.spans.some((sp) => Date.parse(sp.to) > stoppedAt + 8000),
      `${frozenCams[0]} through ${via.name}: ${JSON.stringify(r.body.spans)}`,
    );
  }

  // ---- audit: stop the survivors, read every index ----
  for (const n of survivors) n.proc.child.kill('SIGTERM');
  for (const n of survivors) t.is(await n.proc.exited, 0);
  const all: (SegmentRecord & { holder: string })[] = [];
  for (const n of nodes) for (const s of await segmentsOf(n.dataDir)) all.push({ ...s, holder: n.name });
  t.true(all.length > 0);
  const overlaps: string[] = [];
  for (const c of CAMERAS) {
    const segs = all.filter((s) => s.camera === c).sort((x, y) => x.startMs - y.startMs);
    for (let i = 0; i < segs.length; i++) {
      for (let j = i + 1; j < segs.length && segs[j]!.startMs < segs[i]!.endMs; j++) {
        if (segs[j]!.holder !== segs[i]!.holder)
          overlaps.push(`${c}: ${segs[i]!.holder} [${segs[i]!.startMs}, ${segs[i]!.endMs}) and ${segs[j]!.holder} [${segs[j]!.startMs}, ${segs[j]!.endMs})`);
      }
    }
  }
  t.deepEqual(overlaps, [], 'no camera written by two nodes at once');
  for (const s of all) t.is(s.fence?.node, byId.get(s.fence?.node ?? '')?.id, `segment ${s.file} stamped with its node`);
  for (const s of all) t.is(byId.get(s.fence!.node)!.name, s.holder, 'the stamp names the node that wrote it');
  // The frozen node wrote nothing of its lost cameras after it was frozen (beyond the GOP it had in hand)
  // under its old grant: only under a later one, given back by rebalancing or the drain.
  for (const c of frozenCams) {
    const otherRev = Math.min(...all.filter((s) => s.camera === c && s.holder === other.name && s.startMs > stoppedAt).map((s) => s.fence!.rev));
    const late = all.filter((s) => s.camera === c && s.holder === frozen.name && s.endMs > stoppedAt + 2500 && !(s.fence!.rev > otherRev));
    t.deepEqual(
      late.map((s) => `${s.camera} ${s.startMs}-${s.endMs} fence ${s.fence!.rev}`),
      [],
      `${c}: written after the freeze under a grant older than ${other.name}'s (${otherRev})`,
    );
  }
  // Every camera moved to a higher fence: the later grant has the higher token.
  for (const c of lost) {
    const theirs = all.filter((s) => s.camera === c);
    const victimMax = Math.max(...theirs.filter((s) => s.holder === victim.name).map((s) => s.fence!.rev));
    const laterMin = Math.min(...theirs.filter((s) => s.holder !== victim.name && s.startMs > killedAt).map((s) => s.fence!.rev));
    t.true(laterMin > victimMax, `${c}: fence ${laterMin} after ${victimMax}`);
  }
});

interface Spans {
  spans: { from: string; to: string }[];
}

async function spans(http: string, camera: string, fromMs: number, toMs: number): Promise<{ fromMs: number; toMs: number }[]> {
  const q = new URLSearchParams({ camera, from: new Date(fromMs).toISOString(), to: new Date(toMs).toISOString() });
  const { status, body } = await getJson<Spans>(`${http}/api/recordings?${q.toString()}`);
  if (status !== 200) throw new Error(`search ${status}`);
  return body.spans.map((s) => ({ fromMs: Date.parse(s.from), toMs: Date.parse(s.to) }));
}

test.serial(
  'shared config: a pool, schedule, lock and label put on one node reach the other; the lock holds against the holder’s retention; quorum lost: recording goes on, config writes 503; the stream leader killed: nothing moves, no hole; users shared',
  async (t) => {
    t.timeout(200_000);
    const dir = await tempDir(t, 'rec-cluster-cfg-');
    const cluster = await startNatsCluster({ dir: join(dir, 'nats') });
    t.teardown(() => cluster.stop());
    const sim = await SimCamera.start({ width: 160, height: 120, bitrateKbit: 150 });
    t.teardown(() => sim.stop());
    const nodes = await spawnClusterNodes(t, dir, cluster.urls, ['a', 'b'], { RECORDER_SEGMENT_SECONDS: '2', RECORDER_RETENTION_TICK_MS: '500' });
    const [a, b] = nodes as [(typeof nodes)[0], (typeof nodes)[0]];
    // A small pool (about 8 segments of this camera), put through a; the camera through b.
    const pool = await waitFor(
      'the pool accepted (the cluster config is up)',
      async () => {
        const r = await send('PUT', `${a.http}/api/pools/small`, { capacityBytes: 400_000, overwrite: 'capacity', maxLockShare: 0.9 });
        return r.status === 200 ? r : null;
      },
      60_000,
      500,
    );
    t.is(pool.status, 200);
    await waitFor('the pool on b', async () => (await getJson(`${b.http}/api/pools/small`)).status === 200, 10_000, 100);
    t.is((await send('PUT', `${b.http}/api/cameras/k1`, { pool: 'small', streams: { main: sim.url('h264') } })).status, 200);
    const kvConnection = await connect({ servers: cluster.urls.split(','), maxReconnectAttempts: -1, reconnectTimeWait: 250 });
    t.teardown(() => kvConnection.close());
    const kv = await kvConnection.jetstream().views.kv('rec-owners', { bindOnly: true });
    const byId = (id: string): (typeof nodes)[number] => nodes.find((n) => n.id === id)!;
    const holderId = await waitFor('k1 owned', async () => (await owner(kv, 'k1'))?.node, 30_000, 200);
    const holder = nodes.find((n) => n.id === holderId)!;
    const other = nodes.find((n) => n !== holder)!;
    await waitFor('k1 recording', async () => (await status(holder.http, 'k1')) === 'recording', 30_000, 200);

    // Schedule and label through the node that does not record k1: the holder mirrors them.
    const plan = { slots: [{ days: [0, 1, 2, 3, 4, 5, 6], start: '00:00', end: '00:00', type: 'timing' }], timeZone: 'UTC', preSeconds: 0, postSeconds: 0 };
    t.is((await send('PUT', `${other.http}/api/cameras/k1/schedule`, plan)).status, 200);
    // The first few seconds of video, locked through the node that does not hold it.
    const first = await waitFor(
      'a first closed segment on the holder',
      async () => {
        const s = await spans(holder.http, 'k1', Date.now() - 60_000, Date.now() + 1000);
        return s.length > 0 && s[0]!.toMs - s[0]!.fromMs > 4000 ? s[0] : null;
      },
      30_000,
      200,
    );
    const lockFrom = first.fromMs;
    const lockTo = first.fromMs + 3000;
    const lock = await send<{ lock: { id: string } }>('POST', `${other.http}/api/locks`, {
      camera: 'k1',
      from: new Date(lockFrom).toISOString(),
      to: new Date(lockTo).toISOString(),
    });
    t.is(lock.status, 200, JSON.stringify(lock.body));
    const label = await send('POST', `${other.http}/api/labels`, {
      camera: 'k1',
      from: new Date(lockFrom).toISOString(),
      to: new Date(lockTo).toISOString(),
      text: 'parcel van',
    });
    t.is(label.status, 200);
    // The holder knows the lock and the label (mirrored, not asked for).
    await waitFor(
      'the lock on the holder',
      async () => (await getJson<{ locks: { id: string }[] }>(`${holder.http}/api/locks?camera=k1`)).body.locks.some((l) => l.id === lock.body.lock.id),
      5000,
      50,
    );
    await waitFor(
      'the label on the holder (mirrored after the lock, in the bucket’s order)',
      async () => (await getJson<{ labels: unknown[] }>(`${holder.http}/api/labels?camera=k1&text=parcel`)).body.labels.length === 1,
      5000,
      50,
    );

    // Retention on the holder overwrites the oldest video but the locked range.
    await waitFor(
      'the holder overwrote unlocked video after the lock',
      async () => {
        const s = await spans(holder.http, 'k1', lockFrom, Date.now() + 1000);
        return s.length >= 2 && s[1]!.fromMs > lockTo + 2000;
      },
      60_000,
      500,
    );
    const kept = await spans(holder.http, 'k1', lockFrom, lockTo);
    t.true(
      kept.length > 0 && kept[0]!.fromMs <= lockFrom && kept[kept.length - 1]!.toMs >= lockTo,
      `the locked range is still on the holder: ${JSON.stringify(kept)}`,
    );

    // The pool grows (through the holder this time): the outage's video stays to be checked.
    t.is((await send('PUT', `${holder.http}/api/pools/small`, { capacityBytes: 50_000_000, overwrite: 'capacity', maxLockShare: 0.9 })).status, 200);
    await waitFor(
      'the grown pool on the other node',
      async () => (await getJson<{ pool: { capacityBytes: number } }>(`${other.http}/api/pools/small`)).body.pool.capacityBytes === 50_000_000,
      10_000,
      100,
    );

    // ---- quorum lost: two of three nats-servers down ----
    const lostAt = Date.now();
    await Promise.all([cluster.servers[1]!.stop(), cluster.servers[2]!.stop()]);
    const refused = await send<{ error: { code: string } }>('PUT', `${other.http}/api/cameras/k2`, { pool: 'small', streams: { main: sim.url('h264') } });
    t.is(refused.status, 503);
    t.is(refused.body.error.code, 'CLUSTER_UNAVAILABLE');
    const refusedLock = await send<{ error: { code: string } }>('POST', `${holder.http}/api/locks`, {
      camera: 'k1',
      from: new Date(Date.now() - 3000).toISOString(),
      to: new Date(Date.now() - 1000).toISOString(),
    });
    t.is(refusedLock.body.error?.code, 'CLUSTER_UNAVAILABLE');
    t.is((await getJson(`${holder.http}/api/cameras/k2`)).status, 404, 'a refused camera is nowhere');
    await new Promise((r) => setTimeout(r, 4000));
    t.is(await status(holder.http, 'k1'), 'recording', 'recording goes on without quorum');
    await Promise.all([cluster.servers[1]!.start(), cluster.servers[2]!.start()]);
    const back = await waitFor(
      'config writes accepted again',
      async () => {
        const r = await send('PUT', `${other.http}/api/cameras/k2`, { pool: 'small', streams: { main: sim.url('h264') } });
        return r.status === 200 ? Date.now() : null;
      },
      60_000,
      500,
    );
    t.log(`quorum lost for ${back - lostAt} ms`);
    t.is((await waitFor('k1 owner readable', () => owner(kv, 'k1'), 30_000, 250)).node, holder.id, 'no camera moved while quorum was lost');
    // One span across the outage: no hole in k1's recording (once the video up to now is indexed).
    const across = await waitFor(
      'k1 indexed past the outage',
      async () => {
        const sp = await spans(holder.http, 'k1', lostAt - 1000, Date.now() + 1000);
        return sp.length > 0 && sp[sp.length - 1]!.toMs >= back ? sp : null;
      },
      20_000,
      250,
    );
    t.is(across.length, 1, `k1 recorded through the outage: ${JSON.stringify(across)}`);
    t.true(across[0]!.fromMs <= lostAt && across[0]!.toMs >= back, JSON.stringify({ lostAt, back, across }));

    // ---- kill -9 the nats-server that leads the heartbeat stream: nothing moves, no hole ----
    await waitFor(
      'k2 recording',
      async () => {
        const o = await owner(kv, 'k2');
        return o !== null && (await status(byId(o.node).http, 'k2')) === 'recording';
      },
      30_000,
      250,
    );
    const owners = new Map([
      ['k1', (await owner(kv, 'k1'))!],
      ['k2', (await owner(kv, 'k2'))!],
    ]);
    const jsm = await kvConnection.jetstreamManager();
    const leaderName = await waitFor('the heartbeat stream’s leader', async () => (await jsm.streams.info('KV_rec-nodes')).cluster?.leader, 20_000, 250);
    const leader = cluster.servers.find((s) => s.name === leaderName)!;
    const killedAt = Date.now();
    leader.kill('SIGKILL');
    // Longer than a leader election (4-9 s) and than K ticks: a lease would have moved cameras by now.
    await new Promise((r) => setTimeout(r, 12_000));
    for (const [c, o] of owners) {
      const now = await waitFor(`${c} owner readable`, () => owner(kv, c), 20_000, 250);
      t.deepEqual(now, o, `${c}: same owner, same grant, after the stream leader died`);
    }
    await leader.start();
    const checkTo = Date.now();
    for (const c of owners.keys()) {
      const h = byId(owners.get(c)!.node);
      const sp = await waitFor(
        `${c} indexed past the leader's death`,
        async () => {
          const x = await spans(h.http, c, killedAt - 1000, Date.now() + 1000);
          return x.length > 0 && x[x.length - 1]!.toMs >= checkTo ? x : null;
        },
        20_000,
        250,
      );
      // Spans join across holes under 0.5 s: one span is no hole over 1 s.
      t.is(sp.length, 1, `${c}: no recording hole while the stream leader was replaced: ${JSON.stringify(sp)}`);
    }
    t.log(`stream leader ${leaderName} killed: no camera moved, no hole`);

    // ---- users are shared too: an admin made on one node logs in on the other (last: from now on HTTP asks for credentials) ----
    t.is((await send('PUT', `${other.http}/api/users/ops`, { role: 'admin', password: 'cluster pass phrase' })).status, 200);
    const basic = { authorization: `Basic ${Buffer.from('ops:cluster pass phrase').toString('base64')}` };
    const seenThere = await waitFor(
      'the user on the holder',
      async () => {
        const r = await fetch(`${holder.http}/api/users`, { headers: basic });
        return r.status === 200 ? ((await r.json()) as { users: { name: string }[] }) : null;
      },
      5000,
      50,
    );
    t.deepEqual(
      seenThere.users.map((u) => u.name),
      ['ops'],
    );
    t.is((await fetch(`${holder.http}/api/users`)).status, 401, 'the holder asks for credentials now that a user exists');
  },
);
