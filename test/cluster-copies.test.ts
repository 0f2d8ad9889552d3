/**
 * Redundant copies through real processes (docs/design/cluster.md "Redundant copies"):
 * three nats-servers clustered on loopback, three recorders, a pool with `copies: 2`.
 * Every closed segment of the camera reaches exactly one other node, byte for byte;
 * the node that recorded it is killed with SIGKILL: its video is still found and
 * downloaded through the survivors (read from the copy), and the copy it held is
 * re-made on the survivor that lacked it, so two nodes hold every segment again.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import sharp from 'sharp';
import WebSocket from 'ws';
import { SimCamera } from '../sim/camera.ts';
import { startNatsCluster } from '../sim/nats-cluster.ts';
import { RecorderIndex } from '../index/db.ts';
import { getJson, tempDir, waitFor } from './helpers/recorder.ts';
import { send, spawnClusterNodes } from './helpers/cluster.ts';
import { decodeErrors, ffprobe } from './helpers/media.ts';
import { readZip } from './helpers/zip-reader.ts';

interface Range {
  fromMs: number;
  toMs: number;
}

/** A node's own spans of the camera (its peer subject: its index only, nothing merged). */
async function ownSpans(nc: NatsConnection, node: string, camera: string, r: Range): Promise<Range[]> {
  const m = await nc.request(
    `rec.v1.node.${node}.search`,
    JSON.stringify({ camera, from: new Date(r.fromMs).toISOString(), to: new Date(r.toMs).toISOString() }),
    {
      timeout: 5000,
    },
  );
  const body = JSON.parse(m.string()) as { ok: boolean; spans: { from: string; to: string }[] };
  if (!body.ok) throw new Error(JSON.stringify(body));
  return body.spans.map((s) => ({ fromMs: Date.parse(s.from), toMs: Date.parse(s.to) }));
}

/** Whether `spans` cover [from, to) with no hole longer than `slackMs`. */
function covers(spans: Range[], r: Range, slackMs = 300): boolean {
  let at = r.fromMs;
  for (const s of [...spans].sort((x, y) => x.fromMs - y.fromMs)) {
    if (s.fromMs > at + slackMs) return false;
    at = Math.max(at, s.toMs);
    if (at >= r.toMs - slackMs) return true;
  }
  return at >= r.toMs - slackMs;
}

interface SessionCapture {
  init: Buffer;
  fragments: Buffer[];
  inits: number;
  partial: string[];
}

/** Plays [fromMs, toMs) through a playback session to its end: the first init, every fragment, how many streams. */
function playSession(url: string, r: Range): Promise<SessionCapture> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const out: SessionCapture = { init: Buffer.alloc(0), fragments: [], inits: 0, partial: [] };
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`playback session did not end: ${out.inits} streams, ${out.fragments.length} fragments`));
    }, 60_000);
    ws.on('open', () => ws.send(JSON.stringify({ cmd: 'play', from: new Date(r.fromMs).toISOString(), to: new Date(r.toMs).toISOString() })));
    ws.on('message', (data, isBinary) => {
      const buf = data as Buffer;
      if (isBinary) {
        // Each stream starts with its init (ftyp + moov); a player keeps the first.
        if (buf.toString('latin1', 4, 8) === 'ftyp') {
          if (out.init.length === 0) out.init = Buffer.from(buf);
        } else out.fragments.push(Buffer.from(buf));
        return;
      }
      const msg = JSON.parse(buf.toString()) as { type: string; unreachable?: string[]; error?: unknown };
      if (msg.type === 'init') out.inits++;
      if (msg.type === 'partial') out.partial.push(...(msg.unreachable ?? []));
      if (msg.type === 'error') {
        clearTimeout(timer);
        ws.terminate();
        reject(new Error(`playback session error: ${JSON.stringify(msg.error)}`));
      }
      if (msg.type === 'end') {
        clearTimeout(timer);
        ws.close();
        resolve(out);
      }
    });
    ws.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

test('copies: every closed segment of a copies-2 pool reaches one other node byte for byte; the recorder killed, its video is read from the copy and the copy re-made', async (t) => {
  t.timeout(170_000);
  const dir = await tempDir(t, 'rec-copies-');
  const cluster = await startNatsCluster({ dir: join(dir, 'nats') });
  t.teardown(() => cluster.stop());
  const sim = await SimCamera.start({ width: 160, height: 120, bitrateKbit: 150 });
  t.teardown(() => sim.stop());
  const nodes = await spawnClusterNodes(t, dir, cluster.urls, ['a', 'b', 'c'], {
    RECORDER_SEGMENT_SECONDS: '2',
    RECORDER_CLUSTER_PLAYBACK_WINDOW_MS: '4000',
    // A batch ZIP's listing from another node comes a picture per NATS reply: the pages are exercised.
    RECORDER_CLUSTER_ZIP_PAGE_ENTRIES: '1',
  });
  const nc = await connect({ servers: cluster.urls.split(','), maxReconnectAttempts: -1, reconnectTimeWait: 250 });
  t.teardown(() => nc.close());

  const pool = await waitFor(
    'the pool accepted (the cluster config is up)',
    async () => {
      const r = await send<{ pool: { copies?: number } }>('PUT', `${nodes[0]!.http}/api/pools/dup`, { capacityBytes: null, overwrite: 'capacity', copies: 2 });
      return r.status === 200 ? r : null;
    },
    60_000,
    500,
  );
  t.is(pool.body.pool.copies, 2);
  const bad = await send<{ error: { code: string } }>('PUT', `${nodes[0]!.http}/api/pools/dup`, { capacityBytes: null, overwrite: 'capacity', copies: 4 });
  t.is(bad.status, 400, 'copies beyond 3 is refused');
  t.is(bad.body.error.code, 'VALIDATION_FAILED');
  // Put through another node at once: it waits for its mirror to have the pool (503 only while it is not bound yet).
  const put = await waitFor(
    'the camera accepted by another node',
    async () => {
      const r = await send('PUT', `${nodes[1]!.http}/api/cameras/k1`, { pool: 'dup', streams: { main: sim.url('h264') } });
      return r.status === 503 ? null : r;
    },
    30_000,
    200,
  );
  t.is(put.status, 200, JSON.stringify(put.body));
  const kv = await nc.jetstream().views.kv('rec-owners', { bindOnly: true });
  const writerId = await waitFor(
    'k1 owned',
    async () => {
      const e = await kv.get('k1');
      return e && e.operation === 'PUT' ? e.json<{ node: string }>().node : null;
    },
    30_000,
    200,
  );
  const writer = nodes.find((n) => n.id === writerId)!;
  const others = nodes.filter((n) => n !== writer);

  // Ten seconds of closed segments on the writer, each copied to exactly one other node.
  const since = Date.now() - 60_000;
  const recorded = await waitFor(
    'ten seconds of k1 on its writer',
    async () => {
      const s = await ownSpans(nc, writer.id, 'k1', { fromMs: since, toMs: Date.now() + 60_000 });
      return s.length > 0 && s[0]!.toMs - s[0]!.fromMs > 10_000 ? s[0]! : null;
    },
    60_000,
    250,
  );
  // The last segment may still be open: what closed before it is what must be copied.
  const closed: Range = { fromMs: recorded.fromMs, toMs: recorded.toMs - 2500 };
  await waitFor(
    'the closed segments copied to the other nodes',
    async () => {
      const theirs = (await Promise.all(others.map((n) => ownSpans(nc, n.id, 'k1', closed)))).flat();
      return covers(theirs, closed);
    },
    30_000,
    250,
  );
  // Exactly one other node holds each segment (copies 2): the two nodes' spans do not overlap.
  const [first, second] = await Promise.all(others.map((n) => ownSpans(nc, n.id, 'k1', closed)));
  const overlap = first!.reduce((sum, x) => sum + second!.reduce((s2, y) => s2 + Math.max(0, Math.min(x.toMs, y.toMs) - Math.max(x.fromMs, y.fromMs)), 0), 0);
  t.true(overlap < 300, `${overlap} ms held by both other nodes`);
  const nodesView = await getJson<{ copies: { copied: number; failed: number } }>(`${others[0]!.http}/api/cluster/nodes`);
  t.is(nodesView.status, 200);
  t.is(typeof nodesView.body.copies.copied, 'number', 'a node shows its copy work');

  // Peers authenticate: a pull without the cluster token is refused.
  const noToken = await fetch(`${writer.http}/api/cluster/segments/k1/${closed.fromMs}`);
  t.is(noToken.status, 401);

  // ---- the writer killed: its video is read from the copies, and the copies re-made ----
  writer.proc.child.kill('SIGKILL');
  await writer.proc.exited;
  const survivor = others[0]!;
  const q = `from=${new Date(closed.fromMs + 500).toISOString()}&to=${new Date(closed.toMs - 500).toISOString()}`;
  const search = await waitFor(
    'the dead writer’s video found through a survivor',
    async () => {
      const { body } = await getJson<{ spans: { from: string; to: string }[] }>(`${survivor.http}/api/recordings?camera=k1&${q}`);
      const s = body.spans.map((x) => ({ fromMs: Date.parse(x.from), toMs: Date.parse(x.to) }));
      return covers(s, { fromMs: closed.fromMs + 500, toMs: closed.toMs - 500 }) ? s : null;
    },
    30_000,
    500,
  );
  t.true(search.length >= 1);
  for (const n of others) {
    const res = await fetch(`${n.http}/api/cameras/k1/video.mp4?${q}&format=fmp4`);
    t.is(res.status, 200, `${n.name}: download of the dead writer’s range`);
    const file = join(dir, `${n.name}.mp4`);
    await writeFile(file, Buffer.from(await res.arrayBuffer()));
    t.is(await decodeErrors(file), '', `${n.name}: the download decodes`);
  }
  // Re-made: with the writer gone, copies 2 means both survivors hold every segment.
  await waitFor(
    'both survivors hold the dead writer’s segments',
    async () => {
      for (const n of others) if (!covers(await ownSpans(nc, n.id, 'k1', closed), closed)) return false;
      return true;
    },
    60_000,
    500,
  );

  // ---- a range split between two live nodes (a camera moved by a drain), downloaded as one file ----
  const [s1, s2] = others as [(typeof others)[0], (typeof others)[0]];
  t.is((await send('PUT', `${s1.http}/api/cameras/k2`, { streams: { main: sim.url('h264') } })).status, 200);
  const k2Owner = async (): Promise<string | null> => {
    const e = await kv.get('k2');
    return e && e.operation === 'PUT' ? e.json<{ node: string }>().node : null;
  };
  const k2First = await waitFor('k2 owned', k2Owner, 30_000, 200);
  const from = k2First === s1.id ? s1 : s2;
  const to = from === s1 ? s2 : s1;
  const before = await waitFor(
    `6 s of k2 on ${from.name}`,
    async () => {
      const s = await ownSpans(nc, from.id, 'k2', { fromMs: Date.now() - 60_000, toMs: Date.now() + 60_000 });
      return s.length > 0 && s[0]!.toMs - s[0]!.fromMs > 6000 ? s[0]! : null;
    },
    60_000,
    250,
  );
  t.is((await send('POST', `${from.http}/api/cluster/drain`, { node: from.id })).status, 200);
  t.teardown(() => send('POST', `${from.http}/api/cluster/drain`, { node: from.id, drain: false }).catch(() => undefined));
  const after = await waitFor(
    `k2 moved to ${to.name}, 6 s closed there`,
    async () => {
      const s = await ownSpans(nc, to.id, 'k2', { fromMs: before.fromMs, toMs: Date.now() + 60_000 });
      return s.length > 0 && s[0]!.toMs - s[0]!.fromMs > 8000 ? s[0]! : null;
    },
    60_000,
    250,
  );
  const mine = (await ownSpans(nc, from.id, 'k2', { fromMs: before.fromMs, toMs: after.toMs })).reduce((n, s) => n + s.toMs - s.fromMs, 0);
  // From inside the from node's video to inside the to's closed segments.
  const range = { fromMs: before.fromMs + 1000, toMs: after.toMs - 3000 };
  const split = await fetch(`${from.http}/api/cameras/k2/video.mp4?from=${range.fromMs}&to=${range.toMs}&format=fmp4`);
  t.is(split.status, 200);
  t.is(split.headers.get('x-recorder-node'), null, 'served by the node asked, not proxied');
  const stitched = join(dir, 'stitched.mp4');
  await writeFile(stitched, Buffer.from(await split.arrayBuffer()));
  // The download is whole GOPs (X-Recording-From/To) with the hole of the move skipped.
  const served = { fromMs: Date.parse(split.headers.get('x-recording-from')!), toMs: Date.parse(split.headers.get('x-recording-to')!) };
  const covered = (await ownSpans(nc, from.id, 'k2', served)).reduce((n, s) => n + Math.min(served.toMs, s.toMs) - Math.max(served.fromMs, s.fromMs), 0);
  const probe = await ffprobe(stitched);
  t.log(`k2 split: ${from.name} had ${mine} ms, the download has ${probe.durationSec} s for ${covered} ms of video in ${JSON.stringify(served)}`);
  t.true(probe.durationSec * 1000 > mine - 1000 + 3000, `the download holds more than ${from.name}'s own part: ${probe.durationSec} s`);
  t.true(Math.abs(probe.durationSec * 1000 - covered) < 500, `${probe.durationSec} s against ${covered} ms of video served`);
  t.is(await decodeErrors(stitched), '', 'the stitched download decodes as one file');
  // HLS of the range through the node that has only its own part: the playlist and every
  // segment file it names come through it (proxied to the node that has them).
  const hls = `${to.http}/api/cameras/k2/video.m3u8?from=${range.fromMs}&to=${range.toMs}`;
  const playlist = await fetch(hls);
  t.is(playlist.status, 200);
  const uris = [...new Set((await playlist.text()).split('\n').filter((l) => l.startsWith('segments/')))];
  t.true(uris.length >= 4, `${uris.length} segment files in the playlist`);
  for (const uri of uris) t.is((await fetch(`${to.http}/api/cameras/k2/${uri}`, { headers: { range: 'bytes=0-99' } })).status, 206, uri);
  const viaHls = await ffprobe(hls);
  t.true(Math.abs(viaHls.durationSec - probe.durationSec) < 0.5, `HLS ${viaHls.durationSec} s, download ${probe.durationSec} s`);
  t.is(await decodeErrors(hls), '', 'the HLS playlist through another node decodes');
  // A playback session (WebSocket) through the node that has only its own part: it pulls
  // the other part window by window (RECORDER_CLUSTER_PLAYBACK_WINDOW_MS 4 s here) and
  // plays the range as one stream on one timeline.
  const session = await playSession(`${to.http.replace(/^http/, 'ws')}/api/cameras/k2/playback`, range);
  const played = join(dir, 'session.mp4');
  await writeFile(played, Buffer.concat([session.init, ...session.fragments]));
  const viaSession = await ffprobe(played);
  t.log(`k2 split, playback session through ${to.name}: ${session.inits} streams, ${session.fragments.length} fragments, ${viaSession.durationSec} s`);
  t.true(session.inits >= 3, `the range was played in windows (${session.inits} streams)`);
  t.deepEqual(session.partial, [], 'every holder answered');
  t.true(Math.abs(viaSession.durationSec - probe.durationSec) < 0.5, `session ${viaSession.durationSec} s, download ${probe.durationSec} s`);
  t.is(await decodeErrors(played), '', 'the session through another node decodes as one stream');

  // ---- pictures through any node: by URL (original, preview, lock) and in search ----
  const picture = await sharp({ create: { width: 320, height: 240, channels: 3, background: { r: 200, g: 40, b: 90 } } })
    .jpeg()
    .toBuffer();
  const stored = async (node: typeof from, atMs: number): Promise<string> => {
    const res = await fetch(`${node.http}/api/pictures?camera=k2&type=alarm&at=${atMs}`, {
      method: 'POST',
      headers: { 'content-type': 'image/jpeg' },
      body: picture,
    });
    t.is(res.status, 200);
    return ((await res.json()) as { id: string }).id;
  };
  const picAt = Date.now() - 5000;
  const onTo = await stored(to, picAt);
  const onFrom = await stored(from, picAt + 1000);
  const viaFrom = await fetch(`${from.http}/api/pictures/${onTo}`);
  t.is(viaFrom.status, 200, 'a picture stored on another node, by its URL');
  t.is(viaFrom.headers.get('x-recorder-node'), to.id);
  t.true(Buffer.from(await viaFrom.arrayBuffer()).equals(picture), 'the same bytes');
  const preview = await fetch(`${from.http}/api/pictures/${onTo}?width=80`);
  t.is(preview.status, 200);
  t.is((await sharp(Buffer.from(await preview.arrayBuffer())).metadata()).width, 80, 'its preview too');
  const lockRes = await send<{ picture: { lockedUntil: string | null } }>('POST', `${from.http}/api/pictures/${onTo}/lock`, {});
  t.is(lockRes.status, 200, JSON.stringify(lockRes.body));
  t.is(lockRes.body.picture.lockedUntil, null, 'locked on the node that stores it');
  t.is((await fetch(`${from.http}/api/pictures/k2.${picAt}.99`)).status, 404, 'a picture no node stores');
  for (const n of [from, to]) {
    const found = await getJson<{ pictures: { id: string }[]; next: string | null }>(
      `${n.http}/api/pictures?camera=k2&from=${picAt - 1000}&to=${picAt + 5000}`,
    );
    t.deepEqual(
      found.body.pictures.map((p) => p.id),
      [onTo, onFrom],
      `search through ${n.name} merges both nodes' pictures in time order`,
    );
    const paged = await getJson<{ pictures: { id: string }[]; next: string | null }>(
      `${n.http}/api/pictures?camera=k2&from=${picAt - 1000}&to=${picAt + 5000}&limit=1`,
    );
    t.deepEqual(
      paged.body.pictures.map((p) => p.id),
      [onTo],
    );
    t.is(paged.body.next, onTo);
    const page2 = await getJson<{ pictures: { id: string }[]; next: string | null }>(
      `${n.http}/api/pictures?camera=k2&from=${picAt - 1000}&to=${picAt + 5000}&limit=1&after=${paged.body.next}`,
    );
    t.deepEqual(
      page2.body.pictures.map((p) => p.id),
      [onFrom],
      `page 2 through ${n.name}`,
    );
  }

  // ---- search by image and batch locks through any node: every node storing pictures of the camera answers ----
  const scene = await sharp(
    Buffer.from(
      Array.from({ length: 320 * 240 * 3 }, (_, i) => ((i % 960 < 480 ? i % 960 : 960 - (i % 960)) + (Math.floor(i / 960) % 60 < 30 ? 80 : 0)) % 256),
    ),
    { raw: { width: 320, height: 240, channels: 3 } },
  )
    .jpeg()
    .toBuffer();
  const sceneRes = await fetch(`${to.http}/api/pictures?camera=k2&type=anpr&at=${picAt + 10_000}`, {
    method: 'POST',
    headers: { 'content-type': 'image/jpeg' },
    body: scene,
  });
  const onToScene = ((await sceneRes.json()) as { id: string }).id;
  await waitFor('the scene signed on its node', async () => {
    const r = await fetch(`${to.http}/api/pictures/similar?camera=k2&limit=5`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: scene });
    return ((await r.json()) as { matches: { id: string }[] }).matches.some((m) => m.id === onToScene) || null;
  });
  const nearCopy = await sharp(scene).resize(200).jpeg({ quality: 50 }).toBuffer();
  const similarRes = await fetch(`${from.http}/api/pictures/similar?camera=k2&limit=5`, {
    method: 'POST',
    headers: { 'content-type': 'image/jpeg' },
    body: nearCopy,
  });
  t.is(similarRes.status, 200);
  const similar = (await similarRes.json()) as { matches: { id: string; score: number }[]; partial?: boolean };
  t.is(similar.matches[0]?.id, onToScene, `search by image through ${from.name} finds the picture ${to.name} stores first: ${JSON.stringify(similar.matches)}`);
  t.true(
    similar.matches.some((m) => m.id === onFrom),
    'and its own pictures, merged by score',
  );
  t.falsy(similar.partial);
  const lockRange = { camera: ['k2'], from: new Date(picAt - 1000).toISOString(), to: new Date(picAt + 20_000).toISOString() };
  const unlocked = await send<{ pictures: number }>('DELETE', `${from.http}/api/pictures/locks?camera=k2&from=${lockRange.from}&to=${lockRange.to}`);
  t.is(unlocked.status, 200, JSON.stringify(unlocked.body));
  t.is(unlocked.body.pictures, 1, 'the lock by URL, on the other node, is taken off through this one');
  const batch = await send<{ pictures: number; partial?: boolean }>('POST', `${from.http}/api/pictures/locks`, lockRange);
  t.is(batch.status, 200, JSON.stringify(batch.body));
  t.is(batch.body.pictures, 3, 'a batch lock through one node locks the pictures of both');
  for (const n of [from, to]) {
    const locked = await getJson<{ pictures: { id: string }[]; partial?: boolean }>(
      `${n.http}/api/pictures?camera=k2&from=${lockRange.from}&to=${lockRange.to}&locked=true`,
    );
    t.deepEqual(locked.body.pictures.map((p) => p.id).sort(), [onTo, onFrom, onToScene].sort(), `all three locked, as searched through ${n.name}`);
  }

  // The batch ZIP through one node holds both nodes' pictures, in time order, exact and repeatable.
  const zipUrl = (n: typeof from, extra = ''): string => `${n.http}/api/pictures/download.zip?camera=k2&from=${lockRange.from}&to=${lockRange.to}${extra}`;
  const zipRes = await fetch(zipUrl(from));
  t.is(zipRes.status, 200, await zipRes.clone().text());
  const zipBytes = Buffer.from(await zipRes.arrayBuffer());
  t.is(Number(zipRes.headers.get('content-length')), zipBytes.length, 'an exact Content-Length');
  const zipped = await readZip(await tempDir(t), zipBytes);
  t.deepEqual(
    zipped.map((e) => e.name),
    [onTo, onFrom, onToScene].map((id) => `${id}.jpg`),
    `the ZIP through ${from.name} holds the pictures of both nodes, in time order`,
  );
  t.is(zipped[2]!.sha, createHash('sha256').update(scene).digest('hex'), "another node's picture, byte for byte");
  const viaTo = await fetch(zipUrl(to));
  t.is(viaTo.headers.get('etag'), zipRes.headers.get('etag'), 'the same pictures give the same ETag through any node');
  t.true(Buffer.from(await viaTo.arrayBuffer()).equals(zipBytes), 'and the same bytes');
  t.is((await fetch(`${to.http}/api/cluster/pictures/${onToScene}`)).status, 401, "a picture's peer route needs the cluster token");
  const previews = await readZip(await tempDir(t), Buffer.from(await (await fetch(zipUrl(from, '&width=64'))).arrayBuffer()));
  t.deepEqual(
    previews.map((e) => e.width),
    [64, 64, 64],
    "previews of another node's pictures rendered there",
  );

  // rec.v1.picture.lock by id reaches any node (a queue group): each locks it where it is stored.
  for (let i = 0; i < 6; i++) {
    const until = new Date(Date.now() + 3_600_000 + i * 1000).toISOString();
    const m = await nc.request('rec.v1.picture.lock', JSON.stringify({ id: onFrom, until }), { timeout: 5000 });
    const body = JSON.parse(m.string()) as { ok: boolean; picture?: { id: string; lockedUntil: string | null } };
    t.true(body.ok, m.string());
    t.is(body.picture?.lockedUntil, until, `lock ${i} by id over NATS, answered by any node`);
  }

  // ---- live view through a node that does not record the camera: relayed from its owner ----
  const k2Now = await waitFor('k2 recorded by a live node', k2Owner, 10_000, 200);
  const viewerNode = nodes.find((n) => n.id !== k2Now && n !== writer)!;
  const live = new WebSocket(`${viewerNode.http.replace(/^http/, 'ws')}/api/cameras/k2/live`, ['recorder.v1']);
  t.teardown(() => live.terminate());
  const texts: { type: string; mimeType?: string }[] = [];
  let binaries = 0;
  live.on('message', (data, isBinary) => {
    if (isBinary) binaries++;
    else texts.push(JSON.parse((data as Buffer).toString()) as { type: string });
  });
  await waitFor(
    `live k2 through ${viewerNode.name}: an init and fragments`,
    () => Promise.resolve(texts.some((m) => m.type === 'init') && binaries >= 3),
    30_000,
    100,
  );
  t.regex(texts.find((m) => m.type === 'init')!.mimeType ?? '', /^video\/mp4/);
  live.close();

  // ---- a node joins: it takes its share of the copies of video recorded before it came ----
  // (k1, in the copies-2 pool: what its live writer recorded since the failover; the dead
  // writer's segments were re-made among the survivors and are not announced again.)
  const joinedAt = Date.now();
  const k1Before = { fromMs: recorded.fromMs, toMs: joinedAt };
  const [d] = await spawnClusterNodes(t, dir, cluster.urls, ['d'], { RECORDER_SEGMENT_SECONDS: '2' });
  const onD = await waitFor(
    'd holds copies of k1 recorded before it came',
    async () => {
      const spans = await ownSpans(nc, d!.id, 'k1', k1Before).catch(() => []);
      const ms = spans.reduce((n, s) => n + Math.max(0, Math.min(s.toMs, joinedAt) - s.fromMs), 0);
      return ms >= 4000 ? ms : null;
    },
    60_000,
    500,
  );
  t.log(`d joined and holds ${onD} ms of k1 recorded before it came`);

  // Byte for byte: every copy equals what the writer wrote.
  for (const n of others) n.proc.child.kill('SIGTERM');
  await Promise.all(others.map((n) => n.proc.exited));
  const idx = await RecorderIndex.open(writer.dataDir);
  const written = idx.segments.inRange('k1', closed.fromMs, closed.toMs).filter((s) => !s.open && s.endMs <= closed.toMs);
  await idx.close();
  t.true(written.length >= 3, `${written.length} closed segments`);
  for (const n of others) {
    const theirs = await RecorderIndex.open(n.dataDir);
    try {
      for (const seg of written) {
        const copy = theirs.segments.get('k1', seg.startMs);
        t.truthy(copy, `${n.name} holds ${seg.file}`);
        if (!copy) continue;
        t.is(copy.bytes, seg.bytes);
        t.deepEqual(copy.fence, seg.fence, 'the copy keeps the writer’s fence stamp');
        t.true((await readFile(join(n.dataDir, seg.file))).equals(await readFile(join(writer.dataDir, seg.file))), `${n.name}: ${seg.file} byte for byte`);
      }
    } finally {
      await theirs.close();
    }
  }
});
