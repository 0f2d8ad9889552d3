/**
 * The ingest watchdog judges the camera, not the writer (issue 14): a segment writer
 * that stalls (a slow disk) while the camera streams must not restart the camera, and
 * a camera that goes silent must. Before, ffmpeg's watchdog timed the fragments the
 * writer took ("no fragment for N ms"), so a write that took longer than the stall
 * timeout + 5 s killed a healthy ingest; MP2P's timed the bytes read from a socket that
 * its own back-pressure had paused.
 *
 * The slow disk is a file whose one write is held `stallTimeoutMs` + 8 s, as an
 * overloaded disk holds a write; the silent camera is the sim camera stopped by SIGSTOP
 * (its TCP connection stays open, nothing arrives).
 */
import test, { type ExecutionContext } from 'ava';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { startIngest, type IngestExit, type IngestSession } from '../ffmpeg/ffmpeg-ingest.ts';
import { startMp2pIngest } from '../ingest/mp2p-ingest.ts';
import { SimCamera } from '../sim/camera.ts';
import { SimMp2pCamera } from '../sim/mp2p-camera.ts';
import type { Fmp4Chunk } from '../media/mp4/fmp4-splitter.ts';
import { tempDir, waitFor } from './helpers/recorder.ts';

const STALL_MS = 1000;

/** A file whose `stallAt`-th write takes `holdMs`, as an overloaded disk does. */
async function slowFile(
  t: ExecutionContext,
  stallAt: number,
  holdMs: number,
): Promise<{ write(b: Uint8Array): Promise<void>; writes: number; heldDone: boolean }> {
  const fh = await open(join(await tempDir(t, 'slow-disk-'), 'segment.mp4'), 'w');
  t.teardown(() => fh.close());
  const file = {
    writes: 0,
    heldDone: false,
    async write(b: Uint8Array): Promise<void> {
      file.writes++;
      if (file.writes === stallAt) {
        await new Promise((r) => setTimeout(r, holdMs));
        file.heldDone = true;
      }
      await fh.write(b);
    },
  };
  return file;
}

/** Feeds every chunk to `write`; says whether the session ended, and how. */
function consume(session: IngestSession, write: (c: Fmp4Chunk) => Promise<void>): { fragments: number; ended: IngestExit | null; done: Promise<void> } {
  const state = { fragments: 0, ended: null as IngestExit | null, done: Promise.resolve() };
  void session.exited.then((e) => (state.ended = e));
  state.done = (async () => {
    for await (const chunk of session.chunks) {
      if (chunk.kind === 'fragment') state.fragments++;
      await write(chunk);
    }
  })().catch(() => undefined);
  return state;
}

test('ffmpeg ingest: a writer held up longer than the stall timeout does not restart a camera that streams', async (t) => {
  const sim = await SimCamera.start({ gop: 25 });
  t.teardown(() => sim.stop());
  const holdMs = STALL_MS + 5000 + 3000;
  const disk = await slowFile(t, 3, holdMs);
  const session = startIngest({ url: sim.url('h264'), ffmpegPath: '/usr/bin/ffmpeg', stallTimeoutMs: STALL_MS });
  t.teardown(() => session.stop());
  const run = consume(session, (c) => disk.write(c.bytes));
  await waitFor('the held write to end', () => disk.heldDone || run.ended, 60_000, 100);
  t.is(run.ended, null, `the session ended while the disk held a write: ${run.ended?.error?.message}`);
  // The camera went on meanwhile: what it sent then arrives now, and more after it.
  const after = run.fragments;
  await waitFor('fragments after the held write', () => run.fragments >= after + 3 || run.ended, 30_000, 100);
  t.is(run.ended, null, run.ended?.error?.message);
  session.stop();
  t.true((await session.exited).requested);
});

test('ffmpeg ingest: a camera that goes silent ends the session (the camera actor restarts it)', async (t) => {
  const sim = await SimCamera.start({ gop: 25 });
  t.teardown(() => sim.stop());
  const session = startIngest({ url: sim.url('h264'), ffmpegPath: '/usr/bin/ffmpeg', stallTimeoutMs: STALL_MS });
  t.teardown(() => session.stop());
  const run = consume(session, () => Promise.resolve());
  await waitFor('fragments', () => run.fragments >= 2, 60_000, 100);
  process.kill(sim.pid, 'SIGSTOP');
  t.teardown(() => {
    if (sim.pid) process.kill(sim.pid, 'SIGCONT');
  });
  const silentAt = Date.now();
  await waitFor('the session to end', () => run.ended, STALL_MS + 5000 + 15_000, 100);
  t.false(run.ended!.requested);
  t.truthy(run.ended!.error, 'a silent camera is a failed attempt');
  t.log(`ended ${Date.now() - silentAt} ms after the camera went silent: ${run.ended!.error!.message}`);
});

test('MP2P ingest: a consumer that holds the camera paused is not a stalled camera; a silent camera is', async (t) => {
  const sim = await SimMp2pCamera.start({ bitrateKbit: 800, pattern: 'snow', gop: 25 });
  t.teardown(() => sim.stop());
  // Small queue bounds so the hold pauses the camera's socket within a second or two;
  // a stall timeout that leaves a loaded machine's DESCRIBE time to be answered.
  const stallMs = 3000;
  const disk = await slowFile(t, 3, stallMs * 3);
  const session = startMp2pIngest({ url: sim.url('h264'), stallTimeoutMs: stallMs, queueHighBytes: 64 * 1024, queueLowBytes: 16 * 1024 });
  t.teardown(() => session.stop());
  const run = consume(session, (c) => disk.write(c.bytes));
  await waitFor('the held write to end', () => disk.heldDone || run.ended, 60_000, 100);
  t.is(run.ended, null, `the session ended while the disk held a write: ${run.ended?.error?.message}`);
  const after = run.fragments;
  await waitFor('fragments after the held write', () => run.fragments >= after + 3 || run.ended, 30_000, 100);
  t.is(run.ended, null, run.ended?.error?.message);

  process.kill(sim.pid, 'SIGSTOP');
  t.teardown(() => {
    if (sim.pid) process.kill(sim.pid, 'SIGCONT');
  });
  await waitFor('the session to end', () => run.ended, stallMs + 15_000, 100);
  t.false(run.ended!.requested);
  t.regex(run.ended!.error!.message, /no data from the camera/);
});
