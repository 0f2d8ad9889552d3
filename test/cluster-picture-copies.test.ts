/**
 * Redundant copies of pictures through real processes (docs/design/pictures.md "Copies in
 * a cluster"): three nats-servers clustered on loopback, three recorders, a pool with
 * `copies: 2`. Pictures written over HTTP to one node (as an alarm server does) reach
 * exactly one other node byte for byte; a lock taken through a third node holds on both
 * holders; search and the batch ZIP through the node that holds none list each picture
 * once. The writer is killed with SIGKILL: every picture is still read (original and
 * preview), searched and zipped through each survivor, and the copy is re-made on the
 * survivor that lacked it.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import sharp from 'sharp';
import { startNatsCluster } from '../sim/nats-cluster.ts';
import { getJson, spawnRecorder, tempDir, waitFor } from './helpers/recorder.ts';
import { send, spawnClusterNodes, type ClusterNodeProcess } from './helpers/cluster.ts';
import { readZip } from './helpers/zip-reader.ts';

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** Whether `node` stores picture `id` in its own index (its peer subject: nothing asked further). */
async function has(nc: NatsConnection, node: ClusterNodeProcess, id: string): Promise<boolean> {
  const m = await nc.request(`rec.v1.node.${node.id}.picture`, JSON.stringify({ id }), { timeout: 5000 });
  const body = JSON.parse(m.string()) as { ok: boolean; has?: boolean };
  return body.ok && body.has === true;
}

/** The ids a node's own search lists (its peer subject), with `locked=true` when asked. */
async function ownIds(nc: NatsConnection, node: ClusterNodeProcess, query: Record<string, string>): Promise<string[]> {
  const m = await nc.request(`rec.v1.node.${node.id}.pictures.search`, JSON.stringify({ limit: '1000', ...query }), { timeout: 5000 });
  const body = JSON.parse(m.string()) as { ok: boolean; pictures?: { id: string }[] };
  if (!body.ok) throw new Error(m.string());
  return body.pictures!.map((p) => p.id).sort();
}

test('picture copies: a copies-2 pool holds each picture on two nodes byte for byte; locks reach both; the writer killed, every picture is served through a survivor and re-made', async (t) => {
  t.timeout(170_000);
  const dir = await tempDir(t, 'rec-piccopies-');
  const cluster = await startNatsCluster({ dir: join(dir, 'nats') });
  t.teardown(() => cluster.stop());
  const nodes = await spawnClusterNodes(t, dir, cluster.urls, ['a', 'b', 'c']);
  const nc = await connect({ servers: cluster.urls.split(','), maxReconnectAttempts: -1, reconnectTimeWait: 250 });
  t.teardown(() => nc.close());

  await waitFor(
    'the pool accepted (the cluster config is up)',
    async () => (await send('PUT', `${nodes[0]!.http}/api/pools/dup`, { capacityBytes: null, overwrite: 'capacity', copies: 2 })).status === 200,
    60_000,
    500,
  );
  // A camera of the pool (nothing listens at its URL: pictures need only its config).
  await waitFor(
    'the camera accepted',
    async () => (await send('PUT', `${nodes[1]!.http}/api/cameras/gate`, { pool: 'dup', streams: { main: 'rtsp://127.0.0.1:9/none' } })).status === 200,
    30_000,
    200,
  );
  await waitFor(
    'a second camera accepted',
    async () => (await send('PUT', `${nodes[1]!.http}/api/cameras/door`, { pool: 'dup', streams: { main: 'rtsp://127.0.0.1:9/none' } })).status === 200,
    30_000,
    200,
  );
  const writer = nodes[0]!;
  const others = nodes.slice(1);
  await waitFor(
    'every node has the camera',
    async () => {
      for (const n of nodes) if ((await getJson(`${n.http}/api/cameras/gate`)).status !== 200) return false;
      return true;
    },
    30_000,
    200,
  );

  // The holders of a copy are ranked among the live nodes each node sees: until every
  // node sees all three, two nodes may each rank themselves the holder (the surplus copy
  // goes later, once membership holds still). The count below is of a settled cluster.
  await waitFor(
    'every node sees the three alive',
    async () => {
      for (const n of nodes) {
        const view = await getJson<{ nodes: { alive: boolean }[] }>(`${n.http}/api/cluster/nodes`);
        if (view.status !== 200 || view.body.nodes.length !== 3 || !view.body.nodes.every((x) => x.alive)) return false;
      }
      return true;
    },
    30_000,
    200,
  );

  // ---- pictures written to one node, as an alarm server does ----
  const base = Date.now() - 60_000;
  const originals = new Map<string, Buffer>();
  const doors: string[] = [];
  for (let i = 0; i < 12; i++) {
    const pic = await sharp({ create: { width: 160, height: 120, channels: 3, background: { r: 20 * i, g: 200 - 10 * i, b: 90 } } })
      .jpeg()
      .toBuffer();
    const res = await fetch(`${writer.http}/api/pictures?camera=gate&type=alarm&at=${base + i * 100}&meta.plate=P${i}`, {
      method: 'POST',
      headers: { 'content-type': 'image/jpeg' },
      body: pic,
    });
    t.is(res.status, 200);
    originals.set(((await res.json()) as { id: string }).id, pic);
    // Another camera's picture of the same instant, stored by another node: its copy and the writer's must not clash.
    const door = await fetch(`${nodes[1]!.http}/api/pictures?camera=door&type=alarm&at=${base + i * 100}`, {
      method: 'POST',
      headers: { 'content-type': 'image/jpeg' },
      body: pic,
    });
    t.is(door.status, 200);
    doors.push(((await door.json()) as { id: string }).id);
  }
  const ids = [...originals.keys()].sort();
  const [first] = ids as [string];
  // Locked on the writer at once, maybe before its copy exists: the copy comes with the lock.
  const early = await send<{ picture: { lockedUntil: string | null } }>('POST', `${writer.http}/api/pictures/${first}/lock`, {});
  t.is(early.status, 200, JSON.stringify(early.body));

  const holderOf = async (id: string): Promise<ClusterNodeProcess[]> => {
    const found: ClusterNodeProcess[] = [];
    for (const n of others) if (await has(nc, n, id)) found.push(n);
    return found;
  };
  await waitFor(
    'every picture copied to another node',
    async () => {
      for (const id of ids) if ((await holderOf(id)).length === 0) return false;
      return true;
    },
    30_000,
    250,
  );
  // copies 2: exactly one other node holds them (one pack, one ranking).
  const [copyHolder, ...rest] = await holderOf(first);
  t.is(rest.length, 0, 'one copy besides the writer');
  const bystander = others.find((n) => n !== copyHolder)!;
  for (const id of ids) {
    t.deepEqual(
      (await holderOf(id)).map((n) => n.name),
      [copyHolder!.name],
      `${id} on one other node`,
    );
    const res = await fetch(`${copyHolder!.http}/api/pictures/${id}`);
    t.is(res.status, 200);
    t.is(res.headers.get('x-recorder-node'), null, 'read from the copy itself');
    t.is(sha(new Uint8Array(await res.arrayBuffer())), sha(originals.get(id)!), `${id} byte for byte on ${copyHolder!.name}`);
  }
  const status = await getJson<{ pictureCopies: { pictures: number; skipped: number } }>(`${copyHolder!.http}/api/cluster/nodes`);
  t.true(status.body.pictureCopies.pictures >= ids.length, `the holder shows its copy work: ${JSON.stringify(status.body.pictureCopies)}`);
  await waitFor(
    'the other camera’s pictures copied too',
    async () => {
      for (const id of doors) if ((await Promise.all([nodes[0]!, nodes[2]!].map((n) => has(nc, n, id)))).every((h) => !h)) return false;
      return true;
    },
    30_000,
    250,
  );
  for (const n of nodes) {
    const s = await getJson<{ pictureCopies: { skipped: number } }>(`${n.http}/api/cluster/nodes`);
    t.is(s.body.pictureCopies.skipped, 0, `${n.name}: no copy clashed with a picture of the same instant`);
  }
  // Peers authenticate: a range without the cluster token is refused.
  t.is((await fetch(`${writer.http}/api/cluster/picture-packs/${writer.id}/1`)).status, 401);

  // ---- locks: acknowledged through the node that holds none, held on both holders ----
  const second = ids[1]!;
  const lock = await send<{ picture: { lockedUntil: string | null }; partial?: boolean }>('POST', `${bystander.http}/api/pictures/${second}/lock`, {});
  t.is(lock.status, 200, JSON.stringify(lock.body));
  t.falsy(lock.body.partial);
  const range = { camera: 'gate', from: new Date(base - 1000).toISOString(), to: new Date(base + 60_000).toISOString() };
  await waitFor('the early lock came with the copy', async () => (await ownIds(nc, copyHolder!, { ...range, locked: 'true' })).includes(first), 30_000, 250);
  for (const n of [writer, copyHolder!]) t.deepEqual(await ownIds(nc, n, { ...range, locked: 'true' }), [first, second].sort(), `both locks held on ${n.name}`);

  // ---- search and ZIP through the node that holds none: both holders answer, each picture once ----
  const q = `camera=gate&from=${range.from}&to=${range.to}`;
  const listed = await getJson<{ pictures: { id: string }[]; next: string | null }>(`${bystander.http}/api/pictures?${q}&limit=1000`);
  t.is(listed.status, 200);
  t.deepEqual(
    listed.body.pictures.map((p) => p.id),
    ids,
    'each picture once, in time order',
  );
  const zipRes = await fetch(`${bystander.http}/api/pictures/download.zip?${q}`);
  t.is(zipRes.status, 200);
  const zipped = await readZip(await tempDir(t), Buffer.from(await zipRes.arrayBuffer()));
  t.is(zipped.length, ids.length, 'each picture once in the ZIP');

  // ---- the writer killed: every picture through each survivor, and the copy re-made ----
  writer.proc.child.kill('SIGKILL');
  await writer.proc.exited;
  for (const n of others) {
    for (const id of ids) {
      const res = await waitFor(
        `${id} through ${n.name}`,
        async () => {
          const r = await fetch(`${n.http}/api/pictures/${id}`);
          return r.status === 200 ? r : null;
        },
        30_000,
        250,
      );
      t.is(sha(new Uint8Array(await res.arrayBuffer())), sha(originals.get(id)!), `${id} byte for byte through ${n.name}`);
    }
    const preview = await fetch(`${n.http}/api/pictures/${first}?width=40`);
    t.is(preview.status, 200);
    t.is((await sharp(Buffer.from(await preview.arrayBuffer())).metadata()).width, 40, `a preview through ${n.name}`);
  }
  // Re-made: once the writer is judged dead, the survivor that held none pulls the pack from the copy.
  await waitFor(
    'the copy re-made on the other survivor',
    async () => {
      for (const id of ids) if (!(await has(nc, bystander, id))) return false;
      return true;
    },
    60_000,
    500,
  );
  for (const id of ids) {
    const res = await fetch(`${bystander.http}/api/pictures/${id}`);
    t.is(res.headers.get('x-recorder-node'), null);
    t.is(sha(new Uint8Array(await res.arrayBuffer())), sha(originals.get(id)!), `${id} re-made byte for byte`);
  }
  t.deepEqual(await ownIds(nc, bystander, { ...range, locked: 'true' }), [first, second].sort(), 'the re-made copy keeps the locks');
  for (const n of others) {
    const after = await getJson<{ pictures: { id: string }[]; partial?: boolean }>(`${n.http}/api/pictures?${q}&limit=1000`);
    t.deepEqual(
      after.body.pictures.map((p) => p.id),
      ids,
      `search through ${n.name}: each picture once`,
    );
    // A ZIP leaves out a dead node only once this node judges it dead (its own count).
    await waitFor(`${n.name} judges the writer dead`, async () => {
      const v = await getJson<{ nodes: { node: string; alive: boolean }[] }>(`${n.http}/api/cluster/nodes`);
      return v.body.nodes.some((x) => x.node === writer.id && !x.alive) || null;
    });
    const z = await fetch(`${n.http}/api/pictures/download.zip?${q}`);
    t.is(z.status, 200, `ZIP through ${n.name}`);
    t.is(z.headers.get('x-recorder-nodes-down'), writer.id, 'the dead writer is named: its pictures come from their copies');
    const entries = await readZip(await tempDir(t), Buffer.from(await z.arrayBuffer()));
    t.is(entries.length, ids.length);
    for (const e of entries) t.is(e.sha, sha(originals.get(e.name.replace(/\.jpg$/, ''))!), `${e.name} in the ZIP through ${n.name}`);
  }

  // ---- the writer back on its data dir: its packs closed by reconcile, new pictures copied, each listed once ----
  const back = spawnRecorder(t, {
    RECORDER_DATA_DIR: writer.dataDir,
    RECORDER_HTTP: '127.0.0.1:0',
    RECORDER_NATS_URL: cluster.urls,
    RECORDER_SYNC_SECONDS: '0',
  });
  const backHttp = await back.http;
  const again = { ...writer, http: backHttp };
  const later: string[] = [];
  for (let i = 0; i < 3; i++) {
    const pic = await sharp({ create: { width: 160, height: 120, channels: 3, background: { r: 250, g: 30 * i, b: 10 } } })
      .jpeg()
      .toBuffer();
    const res = await waitFor(
      'a picture written to the writer back',
      async () => {
        const r = await fetch(`${backHttp}/api/pictures?camera=gate&type=alarm&at=${base + 5000 + i * 100}`, {
          method: 'POST',
          headers: { 'content-type': 'image/jpeg' },
          body: pic,
        });
        return r.status === 200 ? r : null;
      },
      30_000,
      250,
    );
    const id = ((await res.json()) as { id: string }).id;
    originals.set(id, pic);
    later.push(id);
  }
  await waitFor(
    'the pictures written after the return copied to another node',
    async () => {
      for (const id of later) if ((await holderOf(id)).length === 0) return false;
      return true;
    },
    30_000,
    250,
  );
  for (const id of later) {
    const [holder] = await holderOf(id);
    const res = await fetch(`${holder!.http}/api/pictures/${id}`);
    t.is(sha(new Uint8Array(await res.arrayBuffer())), sha(originals.get(id)!), `${id} byte for byte on ${holder!.name}`);
  }
  const all = [...originals.keys()].sort();
  for (const n of [again, ...others]) {
    const listedAll = await waitFor(
      `every node answers the search through ${n.name}`,
      async () => {
        const r = await getJson<{ pictures: { id: string }[]; partial?: boolean }>(`${n.http}/api/pictures?${q}&limit=1000`);
        return r.status === 200 && !r.body.partial ? r.body : null;
      },
      30_000,
      500,
    );
    t.deepEqual(
      listedAll.pictures.map((p) => p.id),
      all,
      `search through ${n.name}: every picture once, with three nodes answering`,
    );
  }
});
