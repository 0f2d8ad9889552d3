/**
 * Reads the wall clock the simulated camera burns into its picture (top-left,
 * HH:MM:SS UTC, white on a shaded box): ffmpeg cuts one frame, crops the overlay,
 * scales it up and inverts it; tesseract reads digits.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export async function readClockSeconds(videoFile: string, atSeconds = 0): Promise<number | null> {
  const dir = await mkdtemp(join(tmpdir(), 'ocr-'));
  try {
    const png = join(dir, 'clock.png');
    // No -ss for 0: on a still image (JPEG) it drops the only frame.
    const seek = atSeconds > 0 ? ['-ss', String(atSeconds)] : [];
    await run('ffmpeg', [
      '-v',
      'error',
      '-y',
      ...seek,
      '-i',
      videoFile,
      '-frames:v',
      '1',
      '-vf',
      'crop=iw*0.8:ih*0.25:0:0,scale=iw*3:ih*3:flags=bicubic,format=gray,negate',
      png,
    ]);
    const { stdout } = await run('tesseract', [png, '-', '--psm', '7', '-c', 'tessedit_char_whitelist=0123456789:']);
    const m = /(\d{1,2}):?(\d{2}):?(\d{2})/.exec(stdout.replace(/\s/g, ''));
    if (!m) return null;
    const [h, mi, s] = [Number(m[1]), Number(m[2]), Number(m[3])];
    if (h > 23 || mi > 59 || s > 59) return null;
    return h * 3600 + mi * 60 + s;
  } catch {
    return null;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export function secondsOfDayUtc(ms: number): number {
  return Math.floor((ms % 86_400_000) / 1000);
}

/** Signed smallest difference a - b modulo one day. */
export function clockDiffSeconds(a: number, b: number): number {
  let d = (a - b) % 86_400;
  if (d > 43_200) d -= 86_400;
  if (d < -43_200) d += 86_400;
  return d;
}
