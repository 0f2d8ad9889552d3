/**
 * Makes the golden clip that test/golden-outputs.test.ts serves: 8 s of H.264 (320x240,
 * 25 fps, 1 s closed GOPs, 2 B-frames) + AAC (mono, 48 kHz), encoded by ffmpeg from
 * lavfi sources with deterministic settings (one thread, bit-exact flags, no metadata),
 * muxed as the ingest's ffmpeg muxes (fragmented MP4, one fragment per GOP), cut by
 * the recorder's own splitter and written by its own segment writer (a simulated clock
 * from the clip's start) into two 4 s segments of camera `golden` (fMP4) and the same
 * two of camera `goldenps` (MPEG-PS). Only the segment files are kept: the test
 * indexes them with the recorder's start-up reconcile, as `reindex` would.
 *
 *   node --import tsx scripts/make-golden-clip.ts           writes test/fixtures/golden/
 *   node --import tsx scripts/make-golden-clip.ts --check   makes it again in a temp dir
 *                                                           and compares (exit 1 if not equal)
 *
 * clip.json records the clip's start, the files with their sha256 and the ffmpeg that
 * made them: x264 and ffmpeg's AAC encoder give the same bytes for the same settings
 * and version; another version may give other bytes (then --check says so, and the
 * golden digests are re-pinned with the new files).
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cp, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { RecorderIndex } from '../index/db.ts';
import type { CameraConfig } from '../index/records.ts';
import { silentLogger } from '../lib/log.ts';
import { Fmp4Splitter, type Fmp4Chunk } from '../media/mp4/fmp4-splitter.ts';
import { SegmentWriter } from '../storage/segment-writer.ts';

const run = promisify(execFile);
const root = resolve(import.meta.dirname, '..');
export const GOLDEN_DIR = join(root, 'test/fixtures/golden');

/** Wall-clock start of the clip's first frame (the first segment's file name). */
export const CLIP_START_MS = Date.UTC(2026, 0, 2, 3, 4, 5);
const SECONDS = 8;
const SEGMENT_MS = 4000;
const CAMERAS: { id: string; format: 'mp4' | 'ps' }[] = [
  { id: 'golden', format: 'mp4' },
  { id: 'goldenps', format: 'ps' },
];

/** ffmpeg arguments of the source clip: every choice that decides its bytes is here. */
function encodeArgs(out: string): string[] {
  return [
    '-v',
    'error',
    '-nostdin',
    '-y',
    '-f',
    'lavfi',
    '-i',
    'testsrc2=size=320x240:rate=25',
    '-f',
    'lavfi',
    '-i',
    'sine=frequency=440:sample_rate=48000',
    '-t',
    String(SECONDS),
    '-map',
    '0:v',
    '-map',
    '1:a',
    '-c:v',
    'libx264',
    '-preset',
    'veryfast',
    '-profile:v',
    'main',
    '-pix_fmt',
    'yuv420p',
    '-g',
    '25',
    '-keyint_min',
    '25',
    '-sc_threshold',
    '0',
    '-bf',
    '2',
    '-b:v',
    '300k',
    '-threads',
    '1',
    '-c:a',
    'aac',
    '-b:a',
    '64k',
    '-ac',
    '1',
    '-map_metadata',
    '-1',
    '-fflags',
    '+bitexact',
    '-flags:v',
    '+bitexact',
    '-flags:a',
    '+bitexact',
    // As the ingest's ffmpeg writes (ffmpeg/ffmpeg-ingest.ts): one fragment per GOP.
    '-f',
    'mp4',
    '-movflags',
    'frag_keyframe+empty_moov+default_base_moof',
    out,
  ];
}

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out.push(relative(dir, join(e.parentPath, e.name)));
  }
  return out.sort();
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

export interface GoldenManifest {
  startMs: number;
  segmentMs: number;
  ffmpeg: string;
  encode: string;
  /** Segment files (relative to the data dir) and their sha256. */
  files: Record<string, string>;
}

/** Makes the clip's segment files under `<out>/pools` and returns its manifest. */
async function make(out: string): Promise<GoldenManifest> {
  const work = await mkdtemp(join(tmpdir(), 'golden-'));
  try {
    const src = join(work, 'clip.mp4');
    await run('ffmpeg', encodeArgs(src));
    const chunks: Fmp4Chunk[] = [];
    for await (const c of Readable.from([await readFile(src)]).pipe(new Fmp4Splitter())) chunks.push(c as Fmp4Chunk);
    const init = chunks[0];
    if (init?.kind !== 'init') throw new Error('the clip has no init');
    const videoId = init.info.videoTrackId ?? init.info.tracks[0]!.id;

    const dataDir = join(work, 'data');
    await mkdir(dataDir);
    const index = await RecorderIndex.open(dataDir);
    try {
      for (const cam of CAMERAS) {
        const camera: CameraConfig = {
          id: cam.id,
          pool: 'default',
          streams: { main: 'rtsp://127.0.0.1:9/none' },
          record: { stream: 'main', format: cam.format },
        };
        // Each fragment "arrives" when its GOP is complete: the clock is the clip's start
        // plus the media time at the fragment's end, so the first starts at CLIP_START_MS.
        let now = CLIP_START_MS;
        const writer = new SegmentWriter(camera, { index, dataDir, clock: { nowMs: () => now }, log: silentLogger, segmentMs: SEGMENT_MS, syncMs: 0 }, null);
        let firstTicks: bigint | null = null;
        for (const c of chunks) {
          if (c.kind === 'fragment') {
            const v = c.moof.tracks.find((t) => t.trackId === videoId)!;
            firstTicks ??= v.baseDecodeTime;
            now = CLIP_START_MS + Math.round((Number(v.baseDecodeTime - firstTicks + BigInt(v.durationTicks)) * 1000) / c.timescale);
          }
          await writer.handle(c);
        }
        await writer.close();
      }
    } finally {
      await index.close();
    }
    await rm(join(out, 'pools'), { recursive: true, force: true });
    await mkdir(out, { recursive: true });
    await cp(join(dataDir, 'pools'), join(out, 'pools'), { recursive: true });
    const files: Record<string, string> = {};
    for (const rel of await listFiles(join(out, 'pools'))) files[join('pools', rel)] = sha256(await readFile(join(out, 'pools', rel)));
    const { stdout } = await run('ffmpeg', ['-version']);
    return { startMs: CLIP_START_MS, segmentMs: SEGMENT_MS, ffmpeg: stdout.split('\n')[0]!, encode: `ffmpeg ${encodeArgs('clip.mp4').join(' ')}`, files };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  if (process.argv.includes('--check')) {
    const out = await mkdtemp(join(tmpdir(), 'golden-check-'));
    try {
      const made = await make(out);
      const kept = JSON.parse(await readFile(join(GOLDEN_DIR, 'clip.json'), 'utf8')) as GoldenManifest;
      const names = [...new Set([...Object.keys(made.files), ...Object.keys(kept.files)])].sort();
      const differ = names.filter((n) => made.files[n] !== kept.files[n]);
      if (differ.length > 0) {
        process.stderr.write(
          `golden clip: ${differ.length} files differ from test/fixtures/golden (${differ.join(', ')}); kept with "${kept.ffmpeg}", made with "${made.ffmpeg}"\n`,
        );
        process.exit(1);
      }
      process.stdout.write(`golden clip: the ${names.length} files are made again byte for byte (${made.ffmpeg})\n`);
    } finally {
      await rm(out, { recursive: true, force: true });
    }
    return;
  }
  const manifest = await make(GOLDEN_DIR);
  await writeFile(join(GOLDEN_DIR, 'clip.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  const bytes = await Promise.all(Object.keys(manifest.files).map(async (f) => (await readFile(join(GOLDEN_DIR, f))).length));
  process.stdout.write(
    `golden clip: ${Object.keys(manifest.files).length} segment files, ${bytes.reduce((a, b) => a + b, 0)} bytes in ${relative(root, GOLDEN_DIR)}\n`,
  );
}

if (process.argv[1] && resolve(process.argv[1]) === resolve(import.meta.filename)) await main();
