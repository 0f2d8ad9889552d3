/** ffprobe wrappers for assertions on real files. */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface Probe {
  durationSec: number;
  codecs: string[];
  videoFrames?: number;
  startSec: number;
}

export async function ffprobe(file: string, countFrames = false): Promise<Probe> {
  const args = ['-v', 'error', '-show_format', '-show_streams', '-of', 'json'];
  if (countFrames) args.push('-count_packets');
  const { stdout } = await run('ffprobe', [...args, file], { maxBuffer: 16 * 1024 * 1024 });
  const j = JSON.parse(stdout) as {
    format: { duration?: string; start_time?: string };
    streams: { codec_name: string; codec_type: string; nb_read_packets?: string }[];
  };
  const video = j.streams.find((s) => s.codec_type === 'video');
  return {
    durationSec: Number(j.format.duration ?? NaN),
    startSec: Number(j.format.start_time ?? 0),
    codecs: j.streams.map((s) => s.codec_name),
    ...(video?.nb_read_packets ? { videoFrames: Number(video.nb_read_packets) } : {}),
  };
}

/** Decodes the whole file; returns ffmpeg's error output (empty when clean). */
export async function decodeErrors(file: string): Promise<string> {
  try {
    // repeat: every message on its own line, never "Last message repeated n times" (a
    // filtered message would otherwise leave its repeat count behind as an error line).
    const { stderr } = await run('ffmpeg', ['-v', 'repeat+error', '-i', file, '-f', 'null', '-'], { maxBuffer: 16 * 1024 * 1024 });
    return stderr.trim();
  } catch (err) {
    return (err as { stderr?: string }).stderr ?? String(err);
  }
}

/** Video packets whose decode time does not increase (in the stream's own timescale). */
export async function nonIncreasingDts(file: string): Promise<string[]> {
  const { stdout } = await run('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-show_entries', 'packet=dts', '-of', 'csv=p=0', file], {
    maxBuffer: 64 * 1024 * 1024,
  });
  const dts = stdout.split('\n').filter(Boolean).map(Number);
  const bad: string[] = [];
  for (let i = 1; i < dts.length; i++) if (dts[i]! <= dts[i - 1]!) bad.push(`packet ${i}: ${dts[i - 1]} then ${dts[i]}`);
  return bad;
}
