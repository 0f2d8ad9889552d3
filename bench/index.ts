/**
 * bench/index: the LMDB index at a month of recordings. Fills one index with 30 days of
 * 60 s segments (2 s GOPs, 30 per segment) for N cameras, with a few gaps, then times
 * search (index only) over the whole month and over one hour, the GOP lookup a
 * download does, and reports index bytes per GOP.
 *
 *   node --import tsx bench/index.ts --cameras 1,100
 */
import { mkdtemp, rm, readdir, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { RecorderIndex } from '../index/db.ts';
import { decodeGops, encodeGops } from '../index/gop-table.ts';
import { search } from '../index/search.ts';
import type { SegmentRecord } from '../index/records.ts';
import { requireWork } from './harness.ts';

const { values } = parseArgs({ options: { cameras: { type: 'string', default: '1,100' }, days: { type: 'string', default: '30' } } });
const DAY = 86_400_000;
const days = Number(values.days);

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

async function dirBytes(dir: string): Promise<number> {
  let n = 0;
  for (const f of await readdir(dir)) n += (await stat(join(dir, f))).size;
  return n;
}

for (const cameras of values.cameras.split(',').map(Number)) {
  const dir = await mkdtemp(join(tmpdir(), 'bench-index-'));
  const index = await RecorderIndex.open(dir);
  const start = Date.UTC(2026, 9, 1);
  const gops = encodeGops(Array.from({ length: 30 }, (_, i) => ({ offset: 1200 + i * 1_000_000, size: 1_000_000, timeMs: i * 2000 })));
  const t0 = performance.now();
  let segments = 0;
  for (let c = 0; c < cameras; c++) {
    const camera = `cam${c}`;
    // Puts made in one event-loop turn share lmdb-js commit batches; the last resolves after all.
    let last: Promise<boolean> = Promise.resolve(true);
    for (let ms = start; ms < start + days * DAY; ms += 60_000) {
      if ((ms / 60_000) % 997 === 0) continue; // a gap now and then
      const seg: SegmentRecord = {
        camera,
        startMs: ms,
        endMs: ms + 60_000,
        file: `pools/default/${camera}/x/${ms}.mp4`,
        format: 'mp4',
        pool: 'default',
        stream: 'main',
        bytes: 30_001_200,
        initSize: 1200,
        mimeType: 'video/mp4; codecs="avc1.640028,mp4a.40.2"',
        codecKey: 'k',
        types: [{ type: 'timing', fromMs: ms }],
        gops,
        open: false,
        flags: {},
      };
      last = index.segments.put(seg);
      segments++;
    }
    await last;
  }
  const writeSec = (performance.now() - t0) / 1000;
  const month: number[] = [];
  const hour: number[] = [];
  const lookup: number[] = [];
  let spans = 0;
  for (let i = 0; i < 50; i++) {
    const camera = `cam${i % cameras}`;
    let t = performance.now();
    spans = search(index, { camera, fromMs: start, toMs: start + days * DAY, nowMs: start + days * DAY }).spans.length;
    month.push(performance.now() - t);
    const h = start + Math.floor(Math.random() * (days * 24 - 1)) * 3_600_000;
    t = performance.now();
    search(index, { camera, fromMs: h, toMs: h + 3_600_000, nowMs: start + days * DAY });
    hour.push(performance.now() - t);
    t = performance.now();
    const at = h + 1_234_567;
    const seg = index.segments.inRange(camera, at, at + 1)[0]!;
    const g = decodeGops(seg.gops)
      .filter((x) => seg.startMs + x.timeMs <= at)
      .at(-1);
    if (!g) throw new Error('lookup failed');
    lookup.push(performance.now() - t);
  }
  await index.close();
  // A search that found nothing measured nothing (bench/README.md).
  requireWork(`index, ${cameras} cameras`, spans > 0 ? [] : ['the month search found no span']);
  const bytes = await dirBytes(join(dir, 'index'));
  const totalGops = segments * 30;
  console.log(
    JSON.stringify({
      cameras,
      days,
      segments,
      writeSegmentsPerSec: Math.round(segments / writeSec),
      monthSearchMs: { p50: +percentile(month, 50).toFixed(2), p99: +percentile(month, 99).toFixed(2), spans },
      hourSearchMs: { p50: +percentile(hour, 50).toFixed(3), p99: +percentile(hour, 99).toFixed(3) },
      gopLookupMs: { p50: +percentile(lookup, 50).toFixed(3), p99: +percentile(lookup, 99).toFixed(3) },
      indexMB: +(bytes / 1e6).toFixed(1),
      indexBytesPerGop: +(bytes / totalGops).toFixed(1),
    }),
  );
  await rm(dir, { recursive: true, force: true });
}
