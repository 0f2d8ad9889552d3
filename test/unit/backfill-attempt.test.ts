/**
 * One back-fill attempt against a real LMDB index and real segment files, with the
 * camera's edge storage replaced by a fake pull (AttemptDeps.pull) that stages a clip
 * made by ffmpeg: the pool's format is honoured, and a staging file that cannot be
 * read ends the attempt with an error instead of hanging it. And the manager: an
 * attempt that throws gives its gap back for a retry instead of leaving it `fetching`.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { copyFile, mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { runAttempt } from '../../backfill/attempt.ts';
import { BackfillManager, type BackfillProgress } from '../../backfill/manager.ts';
import { RecorderIndex } from '../../index/db.ts';
import type { CameraConfig, GapRecord } from '../../index/records.ts';
import { configSchema } from '../../lib/config.ts';
import { silentLogger } from '../../lib/log.ts';
import type { EdgePullOptions, EdgePullResult } from '../../ingest/edge-replay.ts';
import { tempDir, waitFor } from '../helpers/recorder.ts';

const run = promisify(execFile);
const NOW = Date.UTC(2026, 10, 25, 12, 0, 0);
const GAP = { fromMs: NOW - 600_000, toMs: NOW - 596_000 }; // 4 s, ten minutes ago

let clip: Promise<string> | null = null;
/** A 4 s fragmented MP4 with 1 s GOPs, as an edge replay stages it. */
function clipFile(dir: string): Promise<string> {
  clip ??= (async () => {
    const file = join(dir, 'clip.mp4');
    await run('ffmpeg', [
      '-v',
      'error',
      '-nostdin',
      '-y',
      '-f',
      'lavfi',
      '-i',
      'testsrc=size=160x120:rate=25',
      '-t',
      '4',
      '-c:v',
      'libx264',
      '-g',
      '25',
      '-pix_fmt',
      'yuv420p',
      '-f',
      'mp4',
      '-movflags',
      'frag_keyframe+empty_moov+default_base_moof',
      file,
    ]);
    return file;
  })();
  return clip;
}

async function setup(t: ExecutionContext, poolFormat: 'ps' | undefined) {
  const dir = await tempDir(t);
  const index = await RecorderIndex.open(dir);
  t.teardown(() => index.close());
  await index.pools.put('p', { id: 'p', capacityBytes: null, overwrite: 'capacity', maxLockShare: 0.5, ...(poolFormat ? { format: poolFormat } : {}) });
  // The camera sets no format: it inherits its pool's.
  const camera: CameraConfig = {
    id: 'c',
    pool: 'p',
    streams: { main: 'rtsp://127.0.0.1:1/x' },
    record: { stream: 'main' },
    edge: { replayUrl: 'rtsp://127.0.0.1:1/edge' },
  };
  await index.cameras.put('c', camera);
  const gap: GapRecord & { endMs: number } = { camera: 'c', startMs: GAP.fromMs, endMs: GAP.toMs, state: 'fetching', reason: 'camera offline', attempts: 0 };
  await index.gaps.put(gap);
  const config = configSchema.parse({ dataDir: dir, logLevel: 'silent', backfillMaxAttempts: 3 });
  const src = await clipFile(await tempDir(t, 'clip-'));
  const stagedClip = async (opts: EdgePullOptions): Promise<EdgePullResult> => {
    await copyFile(src, opts.stagingPath);
    const bytes = (await stat(src)).size;
    return { anchorMs: opts.fromMs, clockSource: 'requested', fragments: 4, bytes, firstStartMs: opts.fromMs, lastEndMs: opts.fromMs + 4000 };
  };
  return { dir, index, camera, gap, config, stagedClip };
}

test('a camera that inherits ps from its pool is back-filled as .ps, like its live video', async (t) => {
  const { index, camera, gap, config, stagedClip } = await setup(t, 'ps');
  const result = await runAttempt(
    { index, config, clock: { nowMs: () => NOW }, log: silentLogger, pull: stagedClip },
    camera,
    gap,
    new AbortController().signal,
  );
  t.is(result.error, null, result.error?.message);
  const segs = [...index.segments.all('c')];
  t.true(segs.length > 0, 'video was written');
  t.deepEqual([...new Set(segs.map((s) => s.format))], ['ps']);
  t.true(
    segs.every((s) => s.file.endsWith('.ps')),
    segs.map((s) => s.file).join(' '),
  );
  t.true(segs.every((s) => s.flags.backfill === true));
});

test('in a cluster, back-filled segments name this node as their writer, under no grant (fence revision 0)', async (t) => {
  const { index, camera, gap, config, stagedClip } = await setup(t, undefined);
  const result = await runAttempt(
    { index, config, clock: { nowMs: () => NOW }, log: silentLogger, pull: stagedClip, nodeId: 'node-a' },
    camera,
    gap,
    new AbortController().signal,
  );
  t.is(result.error, null, result.error?.message);
  const segs = [...index.segments.all('c')];
  t.true(segs.length > 0);
  t.true(
    segs.every((s) => s.fence?.node === 'node-a' && s.fence.rev === 0 && s.flags.backfill === true),
    JSON.stringify(segs.map((s) => s.fence)),
  );
});

test('a staging file that cannot be read ends the attempt with an error; it does not hang holding the camera', async (t) => {
  const { index, camera, gap, config } = await setup(t, undefined);
  // The pull "succeeds" but what it staged is unreadable (EISDIR on read, as EIO would be).
  const unreadable = async (opts: EdgePullOptions): Promise<EdgePullResult> => {
    await mkdir(opts.stagingPath, { recursive: true });
    return { anchorMs: opts.fromMs, clockSource: 'requested', fragments: 4, bytes: 1, firstStartMs: opts.fromMs, lastEndMs: opts.fromMs + 4000 };
  };
  const attempt = runAttempt({ index, config, clock: { nowMs: () => NOW }, log: silentLogger, pull: unreadable }, camera, gap, new AbortController().signal);
  const outcome = await Promise.race([attempt, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 10_000).unref())]);
  t.not(outcome, 'hung', 'the attempt never ended');
  if (outcome === 'hung') return;
  t.truthy(outcome.error, "the read error is the attempt's error");
  t.regex(outcome.error!.message, /EISDIR/);
  const after = index.gaps.get('c', GAP.fromMs)!;
  t.is(after.state, 'pending', 'the gap waits for a retry');
  t.is(after.attempts, 1);
  t.is(after.lastError?.message, outcome.error!.message);
});

test('an attempt that throws gives its gap back for a retry instead of leaving it fetching', async (t) => {
  const { index, camera, config } = await setup(t, undefined);
  // Two gaps of the camera, both due (and at start a third: from the last one to now).
  // Every read of the camera's video fails (an index that cannot be read), which the
  // attempt does not expect and throws out of.
  await index.gaps.put({ camera: 'c', startMs: GAP.fromMs, endMs: GAP.toMs, state: 'pending', reason: 'camera offline', attempts: 0 });
  await index.gaps.put({ camera: 'c', startMs: GAP.toMs + 60_000, endMs: GAP.toMs + 64_000, state: 'pending', reason: 'camera offline', attempts: 0 });
  const segments = Object.create(index.segments, {
    timesInRange: {
      value: () => {
        throw new Error('index read failed');
      },
    },
  }) as RecorderIndex['segments'];
  const broken = Object.create(index, { segments: { value: segments } }) as RecorderIndex;
  const progress: BackfillProgress[] = [];
  const manager = new BackfillManager({
    index: broken,
    config: { ...config, backfillRetryMs: 3_600_000 },
    clock: { nowMs: () => NOW },
    log: silentLogger,
    camera: (id) => (id === 'c' ? camera : undefined),
    cameras: () => [camera],
    raiseAlarm: () => undefined,
    publish: (p) => progress.push(p),
  });
  t.teardown(() => manager.stop());
  await manager.start();
  const gaps = (): GapRecord[] => index.gaps.ofCamera('c');
  // A record's progress is published after its release commits: wait for both, or the
  // last release can be seen in the index before its progress is out.
  const published = (): number => progress.filter((p) => p.state !== 'fetching').length;
  const settled = await waitFor(
    'every gap given back and published',
    () => {
      const g = gaps();
      return g.length === 3 && g.every((x) => x.state === 'pending' && x.attempts === 1) && published() >= 3 ? g : null;
    },
    10_000,
    50,
  ).catch(() => null);
  t.truthy(settled, `gaps: ${JSON.stringify(gaps().map((g) => [g.state, g.attempts]))}, published: ${published()}`);
  if (!settled) return;
  t.true(
    settled.every((g) => g.lastError?.message.includes('index read failed')),
    JSON.stringify(settled.map((g) => g.lastError)),
  );
  t.true(
    settled.every((g) => g.nextAttemptMs === NOW + 3_600_000),
    'retried after backfillRetryMs',
  );
  t.deepEqual(
    progress.filter((p) => p.state !== 'fetching').map((p) => p.state),
    ['pending', 'pending', 'pending'],
    'the gap state search shows is published',
  );
});
