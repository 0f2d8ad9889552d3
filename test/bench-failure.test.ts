/**
 * A bench whose side did nothing must fail with the reason and print no figures
 * (bench/README.md). bench/ingest once printed a negative CPU ratio and a recorded share
 * of 0 with exit code 0 when the recorder recorded nothing; here (ingest ffmpeg) its cameras' ffmpeg is
 * /bin/false, so the recorder records nothing, and the bench must say so and exit 1.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

const root = join(import.meta.dirname, '..');

test('bench/ingest fails with the reason and no figures when the recorder records nothing', async (t) => {
  // A small clip of our own: the bench's 1080p clip takes a minute to encode on a fresh machine.
  const dir = await mkdtemp(join(tmpdir(), 'bench-failure-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const clip = join(dir, 'clip.mp4');
  await run('ffmpeg', [
    '-v',
    'error',
    '-f',
    'lavfi',
    '-i',
    'testsrc2=size=320x240:rate=25',
    '-t',
    '10',
    '-c:v',
    'libx264',
    '-preset',
    'ultrafast',
    '-g',
    '50',
    clip,
  ]);
  const result = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', join(root, 'bench', 'ingest.ts'), '--cameras', '2', '--seconds', '5', '--mode', 'recorder', '--clip', clip, '--ingest', 'ffmpeg'],
      { cwd: root, env: { ...process.env, RECORDER_FFMPEG: '/bin/false', BENCH_SOURCES: '1' }, timeout: 150_000, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr }),
    );
  });
  t.is(result.code, 1, result.stderr.slice(-2000));
  t.regex(result.stderr, /BenchFailure: ingest, 2 cameras: the recorder recorded nothing in the window/);
  t.regex(result.stderr, /ffmpeg exited/, 'the reason names the cameras’ state');
  t.false(
    result.stdout.split('\n').some((l) => l.startsWith('{')),
    `no figure row: ${result.stdout}`,
  );
});
