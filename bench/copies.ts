/**
 * bench/copies: how fast a node pulls segment copies from another (cluster/copies.ts)
 * against `curl` + `sync -d` of the same bytes over the same loopback HTTP
 * (bench/README.md "bench/copies").
 *
 *   node --import tsx bench/copies.ts --segments 20 --rounds 3
 *
 * Three nats-servers clustered on loopback, two recorder nodes in this process. Node A
 * is given `--segments` closed segments (one 10 s 720p 8 Mbps fragmented MP4, copied
 * under as many instants; reconcile indexes them at start). Each round, alternately:
 * the baseline fetches every segment's bytes from A's peer route with one curl (one
 * connection, a file per segment) and fdatasyncs them (`sync -d`); the recorder side has node B pull every segment
 * (record, bytes into a `.pull` file, fdatasync, rename, directory fsync, index put),
 * one after another as its consumer does. B's copies are removed between rounds.
 * A pull that copied nothing, or a curl that failed, fails the run.
 */
import { copyFile, mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { configSchema } from '../lib/config.ts';
import { createLogger } from '../lib/log.ts';
import { segmentRelPath } from '../storage/layout.ts';
import { RecorderNode } from '../node.ts';
import { CLUSTER_TOKEN_HEADER, type CopyAnnouncement } from '../cluster/copies.ts';
import { startNatsCluster } from '../sim/nats-cluster.ts';
import { BenchFailure, requireWork, run, sleep } from './harness.ts';

const { values } = parseArgs({ options: { segments: { type: 'string' }, rounds: { type: 'string' } } });
const SEGMENTS = Number(values.segments ?? 20);
const ROUNDS = Number(values.rounds ?? 3);
const CAMERA = 'bench1';

const dir = await mkdtemp(join(tmpdir(), 'bench-copies-'));
const stops: (() => Promise<unknown>)[] = [];

async function until<T>(what: string, probe: () => T | null | false | undefined, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v) return v;
    if (Date.now() > deadline) throw new BenchFailure('copies', [`timed out: ${what}`]);
    await sleep(100);
  }
}

try {
  const nats = await startNatsCluster({ dir: join(dir, 'nats') });
  stops.push(() => nats.stop());

  // One 10 s fragmented MP4, placed under SEGMENTS instants of node A's default pool.
  const source = join(dir, 'source.mp4');
  console.error('encoding a 10 s 720p 8 Mbps clip…');
  await run('ffmpeg', [
    '-v',
    'error',
    '-y',
    '-f',
    'lavfi',
    '-i',
    'testsrc2=size=1280x720:rate=25',
    '-t',
    '10',
    '-c:v',
    'libx264',
    '-preset',
    'ultrafast',
    '-b:v',
    '8M',
    '-g',
    '50',
    '-movflags',
    '+frag_keyframe+empty_moov+default_base_moof',
    '-f',
    'mp4',
    source,
  ]);
  const aDir = join(dir, 'a');
  const base = Date.UTC(2026, 0, 1);
  const starts = Array.from({ length: SEGMENTS }, (_, i) => base + i * 10_000);
  for (const startMs of starts) {
    const file = join(aDir, segmentRelPath('default', CAMERA, startMs, 'mp4'));
    await mkdir(dirname(file), { recursive: true });
    await copyFile(source, file);
  }

  const log = createLogger('warn');
  const start = async (dataDir: string): Promise<RecorderNode> => {
    const config = configSchema.parse({
      dataDir,
      http: '127.0.0.1:0',
      natsUrl: nats.urls,
      cluster: 'on',
      minFreeBytes: 0,
      minFreeRatio: 0,
      indexReserveBytes: 0,
      logLevel: 'warn',
    });
    const node = await RecorderNode.start({ config, log });
    stops.push(() => node.stop());
    return node;
  };
  const a = await start(aDir);
  const b = await start(join(dir, 'b'));
  const segs = starts.map((s) => a.index.segments.get(CAMERA, s)).filter((s) => s !== undefined);
  requireWork('copies', segs.length === SEGMENTS ? [] : [`node A indexed ${segs.length} of ${SEGMENTS} segments`]);
  const token = await until('the cluster token on both nodes', () => a.copies?.clusterToken() && b.copies?.clusterToken(), 60_000);
  const aId = a.cluster!.nodeId;
  await until('B knows A’s address', () => b.cluster!.peerHttp(aId), 60_000);
  const totalBytes = segs.reduce((n, s) => n + s.bytes, 0);

  const baseline = async (): Promise<number> => {
    const out = join(dir, 'curl');
    await rm(out, { recursive: true, force: true });
    await mkdir(out, { recursive: true });
    // One curl for every segment (one connection reused, no process per file) and one sync.
    const files = segs.map((s) => join(out, `${s.startMs}.mp4`));
    const args = ['-sf', '-H', `${CLUSTER_TOKEN_HEADER}: ${token}`];
    segs.forEach((s, i) => args.push('-o', files[i]!, `${a.httpUrl}/api/cluster/segments/${CAMERA}/${s.startMs}/file`));
    const t0 = performance.now();
    await run('curl', args);
    await run('sync', ['-d', ...files]);
    const ms = performance.now() - t0;
    let got = 0;
    for (const s of segs) got += (await stat(join(out, `${s.startMs}.mp4`))).size;
    requireWork('copies', got === totalBytes ? [] : [`curl wrote ${got} of ${totalBytes} bytes`]);
    return ms;
  };
  const recorder = async (): Promise<number> => {
    for (const s of segs) {
      await b.index.segments.remove(CAMERA, s.startMs);
      await rm(join(b.config.dataDir, s.file), { force: true });
    }
    const t0 = performance.now();
    let copied = 0;
    for (const s of segs) {
      const ann: CopyAnnouncement = { camera: CAMERA, startMs: s.startMs, bytes: s.bytes, pool: s.pool, source: aId, holders: [aId, b.cluster!.nodeId] };
      if (await b.copies!.pull(ann)) copied += s.bytes;
    }
    const ms = performance.now() - t0;
    requireWork('copies', copied === totalBytes ? [] : [`node B copied ${copied} of ${totalBytes} bytes`]);
    return ms;
  };

  const rows: { round: number; curlMBps: number; recorderMBps: number; ratio: number }[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const curlMs = await baseline();
    const recMs = await recorder();
    const mb = totalBytes / 1e6;
    rows.push({ round, curlMBps: +(mb / (curlMs / 1000)).toFixed(1), recorderMBps: +(mb / (recMs / 1000)).toFixed(1), ratio: +(curlMs / recMs).toFixed(2) });
  }
  const ratios = rows.map((r) => r.ratio).sort((x, y) => x - y);
  console.log(
    JSON.stringify(
      {
        bench: 'copies',
        segments: SEGMENTS,
        bytes: totalBytes,
        rounds: rows,
        medianRatio: ratios[Math.floor(ratios.length / 2)],
        note: 'ratio: recorder throughput over curl+sync -d',
      },
      null,
      2,
    ),
  );
} catch (err) {
  console.error(err instanceof BenchFailure ? `BenchFailure: ${err.message}` : err);
  process.exitCode = 1;
} finally {
  for (const stop of stops.reverse()) await stop().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
}
