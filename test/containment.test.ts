/**
 * Issue 12: one camera's trouble never takes the process or the other cameras with it.
 * Through a real recorder process, real cameras and fault points (lib/crash-point.ts):
 *   - an error thrown inside one camera's actor: the process lives, an alarm is raised,
 *     that camera is restarted and records again, its orphaned ffmpeg is ended, and the
 *     other camera records on without a gap;
 *   - an ingest attempt that throws while starting: the camera backs off and retries;
 *   - removing one camera while others record answers at once (it used to wait for
 *     every camera's ingest to end, i.e. never).
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { SimCamera } from '../sim/camera.ts';
import { getJson, spawnRecorder, tempDir, waitFor } from './helpers/recorder.ts';

const run = promisify(execFile);

interface SearchBody {
  spans: { from: string; to: string }[];
  gaps: { from: string; to: string; state: string }[];
}

async function search(http: string, camera: string, fromMs: number): Promise<SearchBody> {
  const q = new URLSearchParams({ camera, from: new Date(fromMs).toISOString(), to: new Date(Date.now() + 60_000).toISOString() });
  const { status, body } = await getJson<SearchBody>(`${http}/api/recordings?${q.toString()}`);
  if (status !== 200) throw new Error(`search ${status}`);
  return body;
}

async function status(http: string, id: string): Promise<{ status: string; lastError?: string | null } | null> {
  const { status: code, body } = await getJson<{ camera: { status: string; lastError?: string | null } }>(`${http}/api/cameras/${id}`);
  return code === 200 ? body.camera : null;
}

/** ffmpeg children reading exactly this URL (the trailing space keeps /h264 from matching /h264aac). */
async function ffmpegFor(url: string): Promise<number> {
  const { stdout } = await run('pgrep', ['-f', `ffmpeg.* -i ${url.replace(/[.]/g, '\\.')} `]).catch(() => ({ stdout: '' }));
  return stdout.split('\n').filter((l) => l.trim()).length;
}

async function put(http: string, id: string, url: string): Promise<void> {
  const r = await fetch(`${http}/api/cameras/${id}`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ streams: { main: url } }),
  });
  if (r.status !== 200) throw new Error(`PUT ${id}: ${r.status} ${await r.text()}`);
}

test('an error inside one camera actor is contained: the camera restarts, the process and the other camera go on', async (t) => {
  const sim = await SimCamera.start();
  t.teardown(() => sim.stop());
  const dataDir = await tempDir(t);
  const rec = spawnRecorder(t, {
    RECORDER_DATA_DIR: dataDir,
    RECORDER_HTTP: '127.0.0.1:0',
    RECORDER_SEGMENT_SECONDS: '4',
    RECORDER_BACKOFF_MAX_MS: '2000',
    // ffmpeg reads the cameras: the check below is that failed actors leave no child behind.
    RECORDER_INGEST: 'ffmpeg',
    // Twice inside the actor of `faulty` as it starts recording; once as `flaky` starts an attempt.
    RECORDER_FAULT_POINT: 'camera.recording:faulty:2,ingest.start:flaky:1',
  });
  const faults: string[] = [];
  rec.child.stdout!.on('data', (s: Buffer | string) => {
    for (const line of String(s).split('\n')) if (line.includes('"camera-fault"')) faults.push(line);
  });
  const http = await rec.http;

  await put(http, 'steady', sim.url('h264aac'));
  await waitFor('steady records', async () => (await status(http, 'steady'))?.status === 'recording', 60_000);
  const steadyFrom = Date.now();
  await put(http, 'faulty', sim.url('h264'));
  await put(http, 'flaky', sim.url('h265aac'));

  await waitFor('two faults of faulty alarmed', () => faults.filter((l) => l.includes('"faulty"')).length >= 2, 60_000);
  const lastFaultAt = Date.now();
  await waitFor(
    'faulty records again after its restarts',
    async () => {
      if ((await status(http, 'faulty'))?.status !== 'recording') return false;
      const s = await search(http, 'faulty', lastFaultAt - 10_000);
      return s.spans.some((sp) => Date.parse(sp.to) - Date.parse(sp.from) > 3000);
    },
    90_000,
    500,
  );
  await waitFor('flaky records after its failed start', async () => (await status(http, 'flaky'))?.status === 'recording', 60_000);
  t.false(
    faults.some((l) => l.includes('"flaky"')),
    'an attempt that fails to start is a backoff, not an actor fault',
  );

  t.is(rec.child.exitCode, null, 'the recorder process is alive');
  await waitFor('one ffmpeg for faulty: the failed actors left none behind', async () => (await ffmpegFor(sim.url('h264'))) === 1, 20_000).catch(async () => {
    t.fail(`ffmpeg children for faulty: ${await ffmpegFor(sim.url('h264'))}`);
  });

  // steady never noticed: one span from before the faults until now, no gap.
  const steadyTo = Date.now() - 6000;
  const steady = await waitFor(
    'steady indexed past the faults',
    async () => {
      const s = await search(http, 'steady', steadyFrom);
      return s.spans.some((sp) => Date.parse(sp.to) >= steadyTo) ? s : null;
    },
    30_000,
  );
  t.is(steady.gaps.length, 0, JSON.stringify(steady.gaps));
  t.is(steady.spans.filter((sp) => Date.parse(sp.to) > steadyFrom).length, 1, JSON.stringify(steady.spans));

  // Removing one camera answers while the others keep recording, and leaves no ffmpeg.
  const del = await fetch(`${http}/api/cameras/faulty`, { method: 'DELETE', signal: AbortSignal.timeout(30_000) });
  t.is(del.status, 200, await del.text());
  t.is(await status(http, 'faulty'), null, 'the camera is gone');
  await waitFor('no ffmpeg for the removed camera', async () => (await ffmpegFor(sim.url('h264'))) === 0, 20_000);
  t.is((await status(http, 'steady'))?.status, 'recording');
  t.is((await status(http, 'flaky'))?.status, 'recording');
});
