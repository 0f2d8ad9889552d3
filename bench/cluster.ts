/**
 * bench/cluster: failover time over repeated kills, and search through a node that does
 * not hold the camera (bench/README.md "bench/cluster").
 *
 *   node --import tsx bench/cluster.ts --cameras 12 --kills 10 --searches 200
 *
 * Three nats-servers clustered on loopback (sim/nats-cluster.ts), three recorders (the
 * compiled build) given all three URLs, one simulated camera serving every camera id.
 * Each round kills (SIGKILL) the node with the most cameras and measures, per camera it
 * had, when another node owns it and when it records there; at the same instant a new
 * camera is put (the baseline: placement, ffmpeg start and first GOP with no failure to
 * detect). The killed node is then started again on its data dir and the next round
 * waits until rebalancing has given it cameras. Search: the same query for one camera
 * through its holder (baseline) and through a node that never held it, alternately.
 * A round in which no camera moved, or a search that found no video, fails the run.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { connect, type KV } from 'nats';
import { SimCamera } from '../sim/camera.ts';
import { startNatsCluster } from '../sim/nats-cluster.ts';
import { BenchFailure, CONNECT_STAGGER_MS, percentile, putJson, requireWork, sleep, startRecorder, type RecorderChild } from './harness.ts';

const { values } = parseArgs({ options: { cameras: { type: 'string' }, kills: { type: 'string' }, searches: { type: 'string' } } });
const CAMERAS = Number(values.cameras ?? 12);
const KILLS = Number(values.kills ?? 10);
const SEARCHES = Number(values.searches ?? 200);

interface Node {
  name: string;
  dataDir: string;
  id: string;
  rec: RecorderChild;
}

const dir = await mkdtemp(join(tmpdir(), 'bench-cluster-'));
const stops: (() => Promise<unknown>)[] = [];
const env = (urls: string): Record<string, string> => ({ RECORDER_NATS_URL: urls, RECORDER_SEGMENT_SECONDS: '10' });

async function status(http: string, camera: string): Promise<string> {
  try {
    const r = (await (await fetch(`${http}/api/cameras/${camera}`)).json()) as { camera?: { status: string } };
    return r.camera?.status ?? 'unknown';
  } catch {
    return 'unreachable';
  }
}

async function ownerOf(kv: KV, camera: string): Promise<string | null> {
  try {
    const e = await kv.get(camera);
    return e?.operation === 'PUT' ? e.json<{ node: string }>().node : null;
  } catch {
    return null;
  }
}

async function until<T>(what: string, probe: () => Promise<T | null | false>, timeoutMs: number, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new BenchFailure('cluster', [`timed out: ${what}`]);
    await sleep(everyMs);
  }
}

try {
  const nats = await startNatsCluster({ dir: join(dir, 'nats') });
  stops.push(() => nats.stop());
  const sim = await SimCamera.start({ width: 320, height: 240, bitrateKbit: 300 });
  stops.push(() => sim.stop());
  const nodes: Node[] = [];
  for (const name of ['n1', 'n2', 'n3']) {
    const dataDir = join(dir, name);
    const rec = await startRecorder(dataDir, env(nats.urls));
    nodes.push({ name, dataDir, rec, id: readFileSync(join(dataDir, 'cluster', 'node-id'), 'utf8').trim() });
  }
  stops.push(() => Promise.all(nodes.map((n) => n.rec.stop())));
  const byId = (id: string): Node | undefined => nodes.find((n) => n.id === id);
  const nc = await connect({ servers: nats.urls.split(','), maxReconnectAttempts: -1, reconnectTimeWait: 250 });
  stops.push(() => nc.close());

  const put = async (http: string, id: string): Promise<void> => {
    await until(
      `camera ${id} accepted`,
      async () => {
        try {
          await putJson(`${http}/api/cameras/${id}`, { streams: { main: sim.url('h264') } });
          return true;
        } catch {
          return false;
        }
      },
      60_000,
      500,
    );
  };
  const ids = Array.from({ length: CAMERAS }, (_, i) => `cam${i + 1}`);
  for (const id of ids) {
    await put(nodes[0]!.rec.http, id);
    await sleep(CONNECT_STAGGER_MS);
  }
  const kv = await nc.jetstream().views.kv('rec-owners', { bindOnly: true });
  const allRecording = async (): Promise<Map<string, string> | null> => {
    const owners = new Map<string, string>();
    for (const c of ids) {
      const o = await ownerOf(kv, c);
      const n = o ? byId(o) : undefined;
      if (!n || (await status(n.rec.http, c)) !== 'recording') return null;
      owners.set(c, o!);
    }
    return owners;
  };
  await until('every camera recording', allRecording, 120_000, 500);

  const owned: number[] = [];
  const resumed: number[] = [];
  const holes: number[] = [];
  const handovers: number[] = [];
  /** A node's own spans of a camera (its peer subject: its index only, nothing merged). */
  const ownSpans = async (node: string, camera: string, fromMs: number, toMs: number): Promise<{ fromMs: number; toMs: number }[]> => {
    // A node just restarted answers once it has joined the cluster ("no responders" before).
    const m = await until(
      `${node} answering its peer search`,
      () =>
        nc
          .request(`rec.v1.node.${node}.search`, JSON.stringify({ camera, from: new Date(fromMs).toISOString(), to: new Date(toMs).toISOString() }), {
            timeout: 10_000,
          })
          .catch(() => null),
      60_000,
      250,
    );
    const body = JSON.parse(m.string()) as { ok: boolean; spans?: { from: string; to: string }[] };
    if (!body.ok || !body.spans) throw new BenchFailure('cluster', [`search of ${camera} on ${node} refused: ${m.string().slice(0, 200)}`]);
    return body.spans.map((sp) => ({ fromMs: Date.parse(sp.from), toMs: Date.parse(sp.to) }));
  };
  const recording: number[] = [];
  const baseline: number[] = [];
  for (let k = 0; k < KILLS; k++) {
    const owners = await until('every camera recording before the kill', allRecording, 120_000, 250);
    const counts = nodes.map((n) => [...owners.values()].filter((o) => o === n.id).length);
    const victim = nodes[counts.indexOf(Math.max(...counts))]!;
    const lost = ids.filter((c) => owners.get(c) === victim.id);
    requireWork('cluster', lost.length > 0 ? [] : [`round ${k + 1}: the victim held no camera`]);
    const survivor = nodes.find((n) => n !== victim)!;
    const baseId = `base${k + 1}`;
    const t0 = Date.now();
    victim.rec.child.kill('SIGKILL');
    // Baseline, same instant: a new camera put on a survivor (no failure to detect).
    const baseDone = (async () => {
      await put(survivor.rec.http, baseId);
      await until(
        `${baseId} recording`,
        async () => {
          const o = await ownerOf(kv, baseId);
          const n = o ? byId(o) : undefined;
          return n && n !== victim && (await status(n.rec.http, baseId)) === 'recording';
        },
        60_000,
      );
      baseline.push(Date.now() - t0);
    })();
    const seen = new Map<string, { owned?: number; recording?: number; owner?: string }>();
    await until(
      `round ${k + 1}: ${lost.length} cameras recording elsewhere`,
      async () => {
        for (const c of lost) {
          const m = seen.get(c) ?? {};
          seen.set(c, m);
          if (m.recording !== undefined) continue;
          const o = await ownerOf(kv, c);
          if (!o || o === victim.id) continue;
          m.owned ??= Date.now() - t0;
          m.owner = o;
          if ((await status(byId(o)!.rec.http, c)) === 'recording') m.recording = Date.now() - t0;
        }
        return lost.every((c) => seen.get(c)!.recording !== undefined);
      },
      60_000,
    );
    for (const m of seen.values()) {
      owned.push(m.owned!);
      recording.push(m.recording!);
    }
    await baseDone;
    await fetch(`${survivor.rec.http}/api/cameras/${baseId}`, { method: 'DELETE' });
    console.error(
      `round ${k + 1}: killed ${victim.name} (${lost.length} cameras): owned elsewhere ${Math.max(...[...seen.values()].map((m) => m.owned!))} ms, recording ${Math.max(...[...seen.values()].map((m) => m.recording!))} ms; baseline ${baseline[baseline.length - 1]} ms`,
    );
    await victim.rec.exited;
    victim.rec = await startRecorder(victim.dataDir, env(nats.urls));
    // The hole each camera's video shows: from the end of what the victim recorded (its
    // index after the restart, reconcile having indexed what reached its files) to the
    // first frame its new owner recorded; and that first frame's time after the kill.
    for (const [c, m] of seen) {
      const before = await ownSpans(victim.id, c, t0 - 120_000, t0 + 5_000);
      // The new owner indexes its open segment at its first sync (RECORDER_SYNC_SECONDS of media).
      const after = await until(
        `${c}: video after the kill in ${m.owner}'s index`,
        async () => {
          const spans = await ownSpans(m.owner!, c, t0 - 5_000, Date.now() + 60_000);
          return spans.some((sp) => sp.toMs > t0) && spans;
        },
        60_000,
        250,
      );
      const lastEnd = Math.max(...before.filter((sp) => sp.fromMs < t0).map((sp) => sp.toMs));
      const first = Math.min(...after.filter((sp) => sp.toMs > t0).map((sp) => sp.fromMs));
      requireWork(
        'cluster',
        Number.isFinite(lastEnd) && Number.isFinite(first)
          ? []
          : [`round ${k + 1}: ${c} has no video before the kill on ${victim.name}: ${JSON.stringify({ t0, before })}`],
      );
      resumed.push(first - t0);
      holes.push(first - lastEnd);
    }
    console.error(
      `round ${k + 1}: video resumed ${Math.max(...resumed.slice(-lost.length))} ms after the kill; hole ${Math.max(...holes.slice(-lost.length))} ms at most`,
    );
    // Rebalancing gives the restarted node its share before the next round.
    const movedBack = await until(
      `${victim.name} given cameras again`,
      async () => {
        for (const c of ids) if ((await ownerOf(kv, c)) === victim.id) return c;
        return false;
      },
      90_000,
      500,
    );
    // The handover hole of that move (a planned move, not a failure): from the end of
    // the giver's video of the camera to the start of the taker's.
    const giver = seen.get(movedBack)?.owner ?? owners.get(movedBack)!;
    const taken = await until(
      `${movedBack}: video on ${victim.name} after it was handed over`,
      async () => {
        const spans = (await ownSpans(victim.id, movedBack, t0, Date.now() + 60_000)).filter((sp) => sp.fromMs > t0);
        return spans.length > 0 && Math.min(...spans.map((sp) => sp.fromMs));
      },
      60_000,
      250,
    );
    const given = Math.max(...(await ownSpans(giver, movedBack, taken - 120_000, taken + 60_000)).filter((sp) => sp.fromMs < taken).map((sp) => sp.toMs));
    requireWork('cluster', Number.isFinite(given) ? [] : [`round ${k + 1}: ${movedBack} has no video on ${giver} before it moved`]);
    handovers.push(taken - given);
    console.error(`round ${k + 1}: ${movedBack} handed over from ${byId(giver)?.name ?? giver} to ${victim.name}: hole ${taken - given} ms`);
  }

  // Search: one camera through its holder and through a node that never held it.
  const owners = await until('every camera recording', allRecording, 120_000, 250);
  // A camera one node never held (its search must ask the others), else any camera and a node that does not hold it now.
  const holdersKv = await nc.jetstream().views.kv('rec-holders', { bindOnly: true });
  let pick: { camera: string; held: Set<string> } | null = null;
  for (const c of ids) {
    const held = new Set<string>();
    for (const n of nodes) if ((await holdersKv.get(`${c}.${n.id}`))?.operation === 'PUT') held.add(n.id);
    if (held.size < nodes.length) {
      pick = { camera: c, held };
      break;
    }
    pick ??= { camera: c, held };
  }
  const { camera, held } = pick!;
  const holder = byId(owners.get(camera)!)!;
  const stranger = nodes.find((n) => !held.has(n.id)) ?? nodes.find((n) => n !== holder)!;
  const q = new URLSearchParams({
    camera,
    from: new Date(Date.now() - 24 * 3600_000).toISOString(),
    to: new Date(Date.now() + 60_000).toISOString(),
  }).toString();
  const viaHolder: number[] = [];
  const viaOther: number[] = [];
  const problems: string[] = [];
  for (let i = 0; i < SEARCHES; i++) {
    for (const [via, out] of [
      [holder, viaHolder],
      [stranger, viaOther],
    ] as const) {
      const t = performance.now();
      const r = (await (await fetch(`${via.rec.http}/api/recordings?${q}`)).json()) as { spans: unknown[]; partial?: boolean };
      out.push(performance.now() - t);
      if (r.spans.length === 0 || r.partial) problems.push(`search through ${via.name} found ${r.spans.length} spans${r.partial ? ', partial' : ''}`);
    }
  }
  requireWork('cluster', problems.slice(0, 3));
  const p = (xs: number[]): { p50: number; p99: number } => ({ p50: Math.round(percentile(xs, 50)), p99: Math.round(percentile(xs, 99)) });
  const f = (xs: number[]): { p50: number; p99: number } => {
    const r = p(xs.map((x) => x * 10));
    return { p50: r.p50 / 10, p99: r.p99 / 10 };
  };
  console.log(
    JSON.stringify(
      {
        bench: 'cluster',
        cameras: CAMERAS,
        kills: KILLS,
        camerasMoved: recording.length,
        failoverOwnedMs: p(owned),
        failoverRecordingMs: p(recording),
        failoverVideoResumesMs: p(resumed),
        recordingHoleMs: p(holes),
        handoverHoleMs: p(handovers),
        baselineNewCameraRecordingMs: p(baseline),
        search: {
          camera,
          holdersOfCamera: held.size,
          searches: SEARCHES,
          viaHolderMs: f(viaHolder),
          viaNonHolderMs: f(viaOther),
          nonHolderIsHolder: held.has(stranger.id),
        },
      },
      null,
      2,
    ),
  );
} finally {
  for (const s of stops.reverse()) await s().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
}
