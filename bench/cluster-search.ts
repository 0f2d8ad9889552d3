/**
 * bench/cluster-search: search over one camera-day through a node that does not hold the
 * camera, against the same search through its holder (bench/README.md
 * "bench/cluster-search"; issue 15 "search latency for one camera-day through a node
 * that does not hold it").
 *
 *   node --import tsx bench/cluster-search.ts --searches 200
 *
 * Three nats-servers clustered on loopback, two recorders (the compiled build). The
 * holder's index is filled before it starts with a day of one-minute segments of one
 * camera (1440, each with 30 two-second GOPs, an alarm run of a minute every hour, a
 * small file on disk so start-up reconcile keeps them), the camera put while the holder
 * is alone (so it owns it and is in the holders catalog; its RTSP URL answers nothing,
 * nothing more is recorded), then the second node starts. `GET /api/recordings` over
 * the day, alternately through the holder (baseline: its own index) and through the
 * other node (which asks the holder over NATS and merges). A search that is partial or
 * does not cover the day fails the run (no figures).
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { startNatsCluster } from '../sim/nats-cluster.ts';
import { RecorderIndex } from '../index/db.ts';
import { encodeGops } from '../index/gop-table.ts';
import type { SegmentRecord, TypeRun } from '../index/records.ts';
import { segmentRelPath } from '../storage/layout.ts';
import { BenchFailure, percentile, putJson, requireWork, sleep, startRecorder } from './harness.ts';

const { values } = parseArgs({ options: { searches: { type: 'string' } } });
const SEARCHES = Number(values.searches ?? 200);
const CAMERA = 'day';
const SEGMENT_MS = 60_000;
const GOP_MS = 2000;

const dir = await mkdtemp(join(tmpdir(), 'bench-cluster-search-'));
const stops: (() => Promise<unknown>)[] = [];

async function until<T>(what: string, probe: () => Promise<T | null | false>, timeoutMs: number, everyMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe().catch(() => null);
    if (v) return v;
    if (Date.now() > deadline) throw new BenchFailure('cluster-search', [`timed out: ${what}`]);
    await sleep(everyMs);
  }
}

/** A day of one-minute segments ending an hour ago, into the holder's index and its disk. */
async function fillDay(dataDir: string, dayEndMs: number): Promise<{ fromMs: number; toMs: number }> {
  const fromMs = dayEndMs - 24 * 3600_000;
  const index = await RecorderIndex.open(dataDir);
  const body = Buffer.alloc(1024, 0x42);
  const gops = encodeGops(Array.from({ length: SEGMENT_MS / GOP_MS }, (_, i) => ({ offset: 100 + i * 30, size: 30, timeMs: i * GOP_MS })));
  try {
    for (let startMs = fromMs; startMs < dayEndMs; startMs += SEGMENT_MS) {
      const file = segmentRelPath('default', CAMERA, startMs, 'mp4');
      await mkdir(dirname(join(dataDir, file)), { recursive: true });
      await writeFile(join(dataDir, file), body);
      // An alarm run of a minute every hour: the day's type runs are not one run.
      const types: TypeRun[] = (startMs - fromMs) % 3600_000 === 0 ? [{ type: 'alarm', fromMs: startMs }] : [{ type: 'timing', fromMs: startMs }];
      const seg: SegmentRecord = {
        camera: CAMERA,
        startMs,
        endMs: startMs + SEGMENT_MS,
        file,
        format: 'mp4',
        pool: 'default',
        stream: 'main',
        bytes: body.length,
        initSize: 100,
        mimeType: 'video/mp4; codecs="avc1.42c01e"',
        codecKey: 'bench',
        types,
        gops,
        open: false,
        flags: {},
      };
      await index.segments.put(seg);
    }
  } finally {
    await index.close();
  }
  return { fromMs, toMs: dayEndMs };
}

try {
  const nats = await startNatsCluster({ dir: join(dir, 'nats') });
  stops.push(() => nats.stop());
  const env = { RECORDER_NATS_URL: nats.urls, RECORDER_SEGMENT_SECONDS: '60' };
  const holderDir = join(dir, 'holder');
  const day = await fillDay(holderDir, Date.now() - 3600_000);
  const holder = await startRecorder(holderDir, env);
  stops.push(() => holder.stop());
  // Alone, the holder takes the camera (its URL answers nothing: only the filled day is video).
  await until(
    'the camera accepted',
    async () => {
      await putJson(`${holder.http}/api/cameras/${CAMERA}`, { streams: { main: 'rtsp://127.0.0.1:9/none' } });
      return true;
    },
    60_000,
    500,
  );
  const holderId = readFileSync(join(holderDir, 'cluster', 'node-id'), 'utf8').trim();
  await until(
    'the holder owns the camera',
    async () => {
      const v = (await (await fetch(`${holder.http}/api/cluster/nodes`)).json()) as { nodes: { node: string; cameras: string[] }[] };
      return v.nodes.find((n) => n.node === holderId)?.cameras.includes(CAMERA) ?? false;
    },
    60_000,
  );
  const other = await startRecorder(join(dir, 'other'), env);
  stops.push(() => other.stop());

  const q = new URLSearchParams({ camera: CAMERA, from: new Date(day.fromMs).toISOString(), to: new Date(day.toMs).toISOString() }).toString();
  interface Answer {
    spans: { from: string; to: string; types?: unknown[] }[];
    partial?: boolean;
  }
  const covered = (r: Answer): number => r.spans.reduce((n, s) => n + Date.parse(s.to) - Date.parse(s.from), 0);
  // The other node knows the holder (its heartbeat and the holders catalog) before timing starts.
  await until(
    'a whole day through the other node',
    async () => {
      const r = (await (await fetch(`${other.http}/api/recordings?${q}`)).json()) as Answer;
      return !r.partial && covered(r) >= day.toMs - day.fromMs - SEGMENT_MS;
    },
    60_000,
    500,
  );
  const viaHolder: number[] = [];
  const viaOther: number[] = [];
  const problems: string[] = [];
  let bytes = 0;
  for (let i = 0; i < SEARCHES; i++) {
    for (const [name, http, out] of [
      ['holder', holder.http, viaHolder],
      ['other', other.http, viaOther],
    ] as const) {
      const t = performance.now();
      const res = await fetch(`${http}/api/recordings?${q}`);
      const text = await res.text();
      out.push(performance.now() - t);
      bytes = text.length;
      const r = JSON.parse(text) as Answer;
      if (!res.ok || r.partial || covered(r) < day.toMs - day.fromMs - SEGMENT_MS)
        problems.push(
          `search ${i + 1} through the ${name}: ${res.status}, ${r.spans?.length ?? 0} spans covering ${covered(r)} ms${r.partial ? ', partial' : ''}`,
        );
    }
  }
  requireWork('cluster-search', problems.slice(0, 3));
  const f = (xs: number[]): { p50: number; p99: number } => ({ p50: Math.round(percentile(xs, 50) * 10) / 10, p99: Math.round(percentile(xs, 99) * 10) / 10 });
  console.log(
    JSON.stringify(
      {
        bench: 'cluster-search',
        segments: (day.toMs - day.fromMs) / SEGMENT_MS,
        searches: SEARCHES,
        answerBytes: bytes,
        viaHolderMs: f(viaHolder),
        viaNonHolderMs: f(viaOther),
        ratioP50: Math.round((percentile(viaOther, 50) / percentile(viaHolder, 50)) * 100) / 100,
      },
      null,
      2,
    ),
  );
} finally {
  for (const s of stops.reverse()) await s().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
}
