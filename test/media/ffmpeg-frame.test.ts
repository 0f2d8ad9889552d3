/**
 * Frame decoding through real ffmpeg, with the timing of a loaded machine made
 * deterministic by a wrapper that runs the real ffmpeg and then delays its own exit
 * (or its start). Before: an exit more than 20 ms after the end of stdout was reported
 * by fluent-ffmpeg as 'Output stream closed' and answered 500 though the JPEG was whole
 * (4 of 100 frame requests in a full test run); a decode past its timeout was a 500 too.
 * Serial: fluent-ffmpeg probes its binary once per process, and a wrapper that sleeps
 * before it would shift the other tests' timing.
 */
import test from 'ava';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { extractJpeg, FramesBusyError } from '../../ffmpeg/ffmpeg-frame.ts';
import { sharedInputs, tempDir } from './fixtures.ts';

const input = sharedInputs(test);

/** A stand-in for ffmpeg: `before` runs first, then the real ffmpeg, then stdout is closed and `after` runs. */
async function wrapper(dir: string, name: string, before: string, after: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, `#!/bin/sh\n${before}\n/usr/bin/ffmpeg "$@"\ncode=$?\nexec 1>&- 2>&-\n${after}\nexit $code\n`);
  await chmod(path, 0o755);
  return path;
}

test.serial('a whole JPEG is the answer when ffmpeg exits well after closing its output', async (t) => {
  const dir = await tempDir(t);
  const file = await readFile(await input('gop.mp4', { audio: false, seconds: 2 }));
  const ffmpegPath = await wrapper(dir, 'slow-exit', '', 'sleep 0.3');
  const jpeg = await extractJpeg(file, Buffer.alloc(0), { ffmpegPath, width: 160 });
  t.is(jpeg[0], 0xff);
  t.is(jpeg[1], 0xd8);
  t.is(jpeg[jpeg.length - 1], 0xd9);
});

test.serial('a decode past its timeout is FRAMES_BUSY (try again), not an internal error', async (t) => {
  const dir = await tempDir(t);
  const file = await readFile(await input('gop.mp4', { audio: false, seconds: 2 }));
  // The trap ends the sleep with the wrapper, so the test leaves no process behind.
  const ffmpegPath = await wrapper(dir, 'slow-start', "trap 'kill $p; exit 143' TERM; sleep 3 & p=$!; wait $p", '');
  const err = await t.throwsAsync(extractJpeg(file, Buffer.alloc(0), { ffmpegPath, timeoutMs: 1000 }));
  t.true(err instanceof FramesBusyError, String(err));
  t.is((err as FramesBusyError).code, 'FRAMES_BUSY');
});

test.serial('ffmpeg failing on a bad input is still an error', async (t) => {
  const err = await t.throwsAsync(extractJpeg(Buffer.from('not a video at all'), Buffer.alloc(0), { ffmpegPath: '/usr/bin/ffmpeg' }));
  t.regex(err.message, /frame extraction/);
});
