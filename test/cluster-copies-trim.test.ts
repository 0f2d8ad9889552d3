/**
 * Surplus copies are trimmed (docs/design/cluster.md "Redundant copies", "Surplus
 * copies"), through real processes: three nats-servers clustered on loopback, recorders
 * a and b, a pool with `copies: 2`, a simulated camera. With two nodes both hold every
 * segment. Node c joins: it pulls the segments it now ranks for, and the former holder
 * deletes those (the failure this pins: the pool kept one copy more than asked until
 * retention removed it). Then c is killed with SIGKILL: its copies are re-made on the
 * survivors; c comes back with them on its disk, and the re-made copies are deleted
 * again. Each time every closed segment ends up on exactly two nodes, its writer among
 * them, counted in each node's own index (its peer subject, nothing merged).
 */
import test from 'ava';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { SimCamera } from '../sim/camera.ts';
import { startNatsCluster } from '../sim/nats-cluster.ts';
import { getJson, tempDir, waitFor } from './helpers/recorder.ts';
import { send, spawnClusterNodes, type ClusterNodeProcess } from './helpers/cluster.ts';

interface OwnSegment {
  startMs: number;
  endMs: number;
  fence?: { node: string };
}

/** A node's own closed segments of the camera in [fromMs, toMs) (its peer subject: its index only). */
async function ownSegments(nc: NatsConnection, node: string, camera: string, fromMs: number, toMs: number): Promise<OwnSegment[]> {
  const m = await nc.request(
    `rec.v1.node.${node}.segments`,
    JSON.stringify({ camera, from: new Date(fromMs).toISOString(), to: new Date(toMs).toISOString() }),
    {
      timeout: 5000,
    },
  );
  const body = JSON.parse(m.string()) as { ok: boolean; segments: OwnSegment[] };
  if (!body.ok) throw new Error(JSON.stringify(body));
  return body.segments;
}

interface Holding {
  /** startMs → the nodes (names) whose index has the segment. */
  holders: Map<number, string[]>;
  /** startMs → the node id that wrote it (its fence stamp). */
  writers: Map<number, string>;
}

/** Which nodes hold each closed segment of k1 that starts in [fromMs, toMs). */
async function holding(nc: NatsConnection, nodes: readonly ClusterNodeProcess[], fromMs: number, toMs: number): Promise<Holding> {
  const holders = new Map<number, string[]>();
  const writers = new Map<number, string>();
  for (const n of nodes) {
    for (const s of await ownSegments(nc, n.id, 'k1', fromMs, toMs)) {
      if (s.startMs < fromMs || s.startMs >= toMs) continue;
      holders.set(s.startMs, [...(holders.get(s.startMs) ?? []), n.id]);
      if (s.fence) writers.set(s.startMs, s.fence.node);
    }
  }
  return { holders, writers };
}

/** Null when every segment in `expected` is held by exactly `copies` nodes, its writer among them; else what is wrong. */
function wrong(h: Holding, expected: readonly number[], copies: number): string | null {
  for (const startMs of expected) {
    const on = h.holders.get(startMs) ?? [];
    const writer = h.writers.get(startMs);
    if (on.length !== copies) return `${startMs}: on ${on.length} nodes (${on.join(', ')})`;
    if (!writer || !on.includes(writer)) return `${startMs}: its writer ${writer ?? '?'} does not hold it`;
  }
  return null;
}

test('copies: after a node joins, and after it comes back from a kill, every closed segment is on exactly `copies` nodes, its writer among them', async (t) => {
  t.timeout(170_000);
  const dir = await tempDir(t, 'rec-trim-');
  const cluster = await startNatsCluster({ dir: join(dir, 'nats') });
  t.teardown(() => cluster.stop());
  const sim = await SimCamera.start({ width: 160, height: 120, bitrateKbit: 150 });
  t.teardown(() => sim.stop());
  const env = { RECORDER_SEGMENT_SECONDS: '2' };
  const [a, b] = (await spawnClusterNodes(t, dir, cluster.urls, ['a', 'b'], env)) as [ClusterNodeProcess, ClusterNodeProcess];
  const nc = await connect({ servers: cluster.urls.split(','), maxReconnectAttempts: -1, reconnectTimeWait: 250 });
  t.teardown(() => nc.close());

  await waitFor(
    'the pool accepted (the cluster config is up)',
    async () => (await send('PUT', `${a.http}/api/pools/dup`, { capacityBytes: null, overwrite: 'capacity', copies: 2 })).status === 200 || null,
    60_000,
    500,
  );
  const put = await waitFor(
    'the camera accepted',
    async () => {
      const r = await send('PUT', `${b.http}/api/cameras/k1`, { pool: 'dup', streams: { main: sim.url('h264') } });
      return r.status === 503 ? null : r;
    },
    30_000,
    200,
  );
  t.is(put.status, 200, JSON.stringify(put.body));

  // Two nodes, copies 2: both hold every closed segment. Eight of them before c joins.
  const since = Date.now() - 60_000;
  const before = await waitFor(
    'eight closed segments of k1 on both a and b',
    async () => {
      const h = await holding(nc, [a, b], since, Date.now());
      const both = [...h.holders].filter(([, on]) => on.length === 2).map(([startMs]) => startMs);
      return both.length >= 8 ? both.sort((x, y) => x - y) : null;
    },
    90_000,
    500,
  );
  const range = { fromMs: before[0]!, toMs: before.at(-1)! + 1 };

  // ---- c joins: it takes its share, and the former holder deletes what c now holds ----
  const [c] = (await spawnClusterNodes(t, dir, cluster.urls, ['c'], env)) as [ClusterNodeProcess];
  const nodes = [a, b, c];
  const afterJoin = await waitFor(
    'every segment recorded before c joined on exactly two nodes, some on c',
    async () => {
      const h = await holding(nc, nodes, range.fromMs, range.toMs);
      const onC = before.filter((s) => h.holders.get(s)?.includes(c.id)).length;
      return wrong(h, before, 2) === null && onC > 0 ? { h, onC } : null;
    },
    90_000,
    500,
  );
  t.log(`c joined: it holds ${afterJoin.onC} of ${before.length} segments; the former holders deleted theirs`);
  const trimmedAfterJoin = await trimmedTotal([a, b]);
  t.true(trimmedAfterJoin >= afterJoin.onC, `the nodes count what they trimmed (${trimmedAfterJoin})`);

  // ---- c killed: its copies re-made on the survivors; c back: the re-made copies go again ----
  c.proc.child.kill('SIGKILL');
  await c.proc.exited;
  await waitFor(
    'the copies c held re-made: a and b hold every segment again',
    async () => wrong(await holding(nc, [a, b], range.fromMs, range.toMs), before, 2) === null || null,
    90_000,
    500,
  );
  const [c2] = (await spawnClusterNodes(t, dir, cluster.urls, ['c'], env)) as [ClusterNodeProcess];
  t.is(c2.id, c.id, 'c came back as the same node');
  const back = await waitFor(
    'c back: every segment on exactly two nodes again, c holding what it held',
    async () => {
      const h = await holding(nc, [a, b, c2], range.fromMs, range.toMs);
      const onC = before.filter((s) => h.holders.get(s)?.includes(c2.id)).length;
      return wrong(h, before, 2) === null && onC === afterJoin.onC ? h : null;
    },
    90_000,
    500,
  );
  t.is(wrong(back, before, 2), null);
  t.true((await trimmedTotal([a, b])) > trimmedAfterJoin, 'the re-made copies were trimmed and counted');
});

/** What the nodes' copy status says they trimmed, summed. */
async function trimmedTotal(nodes: readonly ClusterNodeProcess[]): Promise<number> {
  let sum = 0;
  for (const n of nodes) {
    const r = await getJson<{ copies?: { trimmed?: number } }>(`${n.http}/api/cluster/nodes`);
    sum += r.body.copies?.trimmed ?? 0;
  }
  return sum;
}
