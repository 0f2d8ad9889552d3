/** Test inputs made at test time with ffmpeg lavfi, plus ffprobe and splitter helpers. */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { ExecutionContext, TestFn } from 'ava';
import { Fmp4Splitter, type Fmp4Chunk } from '../../media/mp4/fmp4-splitter.ts';

const run = promisify(execFile);

export const FRAG_FLAGS = ['-movflags', 'frag_keyframe+empty_moov+default_base_moof'];

export interface EncodeOptions {
  video?: 'h264' | 'h265' | 'h265-hvc1' | 'none';
  audio?: boolean;
  size?: string;
  seconds?: number;
  gop?: number;
  bframes?: number;
  /** Video bitrate for x264/x265 (e.g. '4M'); default: their quality mode. */
  bitrate?: string;
  /** Add temporal noise so the encoder really spends the bitrate. */
  noise?: boolean;
  /** Distinct creation times make otherwise identical encodes differ in mvhd/tkhd/mdhd. */
  creationTime?: string;
}

/** A temp dir removed in t.teardown. */
export async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'media-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * Inputs shared by the tests of one file, encoded once on first use into a temp dir
 * that is removed after the file's tests (test.after.always).
 */
export function sharedInputs(test: TestFn): (name: string, o?: EncodeOptions) => Promise<string> {
  let dir: Promise<string> | null = null;
  const made = new Map<string, Promise<string>>();
  test.after.always(async () => {
    if (dir) await rm(await dir, { recursive: true, force: true });
  });
  return (name, o = {}) => {
    dir ??= mkdtemp(join(tmpdir(), 'media-inputs-'));
    let file = made.get(name);
    if (!file) {
      file = dir.then((d) => encode(d, name, o));
      made.set(name, file);
    }
    return file;
  };
}

/** Encodes a fragmented MP4 as ffmpeg's ingest writes it (frag_keyframe+empty_moov+default_base_moof). */
export async function encode(dir: string, name: string, o: EncodeOptions = {}): Promise<string> {
  const out = join(dir, name);
  const seconds = String(o.seconds ?? 6);
  const video = o.video ?? 'h264';
  const args = ['-v', 'error', '-y'];
  if (video !== 'none') args.push('-f', 'lavfi', '-i', `testsrc=size=${o.size ?? '320x240'}:rate=25`);
  if (o.audio ?? true) args.push('-f', 'lavfi', '-i', 'sine=f=440:sample_rate=48000');
  args.push('-t', seconds);
  if (video === 'h264') args.push('-c:v', 'libx264', '-preset', 'veryfast', '-pix_fmt', 'yuv420p', '-g', String(o.gop ?? 25), '-bf', String(o.bframes ?? 2));
  if (video === 'h265' || video === 'h265-hvc1') {
    args.push(
      '-c:v',
      'libx265',
      '-preset',
      'ultrafast',
      '-pix_fmt',
      'yuv420p',
      '-g',
      String(o.gop ?? 25),
      '-bf',
      String(o.bframes ?? 2),
      '-x265-params',
      'log-level=error',
    );
    if (video === 'h265-hvc1') args.push('-tag:v', 'hvc1');
  }
  if (o.bitrate) args.push('-b:v', o.bitrate, '-maxrate', o.bitrate, '-bufsize', o.bitrate);
  if (o.noise) args.push('-vf', 'noise=alls=40:allf=t');
  if (o.audio ?? true) args.push('-c:a', 'aac', '-b:a', '64k');
  if (o.creationTime) args.push('-metadata', `creation_time=${o.creationTime}`);
  args.push('-f', 'mp4', ...FRAG_FLAGS, out);
  await run('ffmpeg', args, { maxBuffer: 16 * 1024 * 1024 });
  return out;
}

export interface Packet {
  streamIndex: number;
  codecType: string;
  pts: number;
  dts: number;
  duration: number;
  size: number;
  keyframe: boolean;
}

/** ffprobe's packet list, in file order, with each packet's stream type. */
export async function probePackets(file: string): Promise<Packet[]> {
  const { stdout } = await run(
    'ffprobe',
    ['-v', 'error', '-show_entries', 'stream=index,codec_type:packet=stream_index,pts,dts,duration,size,flags', '-of', 'json', file],
    { maxBuffer: 256 * 1024 * 1024 },
  );
  const j = JSON.parse(stdout) as {
    streams: { index: number; codec_type: string }[];
    packets: { stream_index: number; pts: number; dts: number; duration: number; size: string; flags: string }[];
  };
  const types = new Map(j.streams.map((s) => [s.index, s.codec_type]));
  return j.packets.map((p) => ({
    streamIndex: p.stream_index,
    codecType: types.get(p.stream_index) ?? '?',
    pts: Number(p.pts),
    dts: Number(p.dts),
    duration: Number(p.duration),
    size: Number(p.size),
    keyframe: p.flags.includes('K'),
  }));
}

/** ffprobe's format start time and the stderr of a full probe (empty when clean). */
export async function probeStart(file: string): Promise<{ startSec: number; stderr: string }> {
  const { stdout, stderr } = await run('ffprobe', ['-v', 'error', '-show_entries', 'format=start_time', '-of', 'json', file]);
  return { startSec: Number((JSON.parse(stdout) as { format: { start_time: string } }).format.start_time), stderr: stderr.trim() };
}

/** Decodes the whole file; ffmpeg's error output (empty when clean). */
export async function decodeErrors(file: string): Promise<string> {
  try {
    const { stderr } = await run('ffmpeg', ['-v', 'repeat+error', '-i', file, '-f', 'null', '-'], { maxBuffer: 16 * 1024 * 1024 });
    return stderr.trim();
  } catch (err) {
    return (err as { stderr?: string }).stderr ?? String(err);
  }
}

export interface SplitResult {
  chunks: Fmp4Chunk[];
  error: Error | null;
  /** Largest number of bytes the splitter held at once. */
  maxBuffered: number;
}

/** Feeds `input` to a fresh splitter in pieces of the given sizes (cycled), collecting what comes out. */
export async function split(input: Buffer, pieceSizes: () => number = () => input.length): Promise<SplitResult> {
  const splitter = new Fmp4Splitter();
  const chunks: Fmp4Chunk[] = [];
  let maxBuffered = 0;
  splitter.on('data', (c: Fmp4Chunk) => chunks.push(c));
  const done = new Promise<Error | null>((resolve) => {
    splitter.on('end', () => resolve(null));
    splitter.on('error', (err) => resolve(err));
  });
  for (let p = 0; p < input.length && !splitter.destroyed;) {
    const n = Math.max(1, Math.min(pieceSizes(), input.length - p));
    splitter.write(input.subarray(p, p + n));
    maxBuffered = Math.max(maxBuffered, splitter.bufferedBytes);
    p += n;
  }
  if (!splitter.destroyed) splitter.end();
  return { chunks, error: await done, maxBuffered };
}

/** A deterministic pseudo-random generator (mulberry32) so failures reproduce. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Top-level boxes of a whole file as [type, offset, size]. */
export function topBoxes(buf: Buffer): { type: string; offset: number; size: number }[] {
  const out: { type: string; offset: number; size: number }[] = [];
  for (let p = 0; p + 8 <= buf.length;) {
    const size = buf.readUInt32BE(p);
    out.push({ type: buf.toString('latin1', p + 4, p + 8), offset: p, size });
    if (size < 8) break;
    p += size;
  }
  return out;
}

/** Builds a box from a type and payload. */
export function box(type: string, ...payload: Buffer[]): Buffer {
  const body = Buffer.concat(payload);
  const head = Buffer.alloc(8);
  head.writeUInt32BE(8 + body.length, 0);
  head.write(type, 4, 'latin1');
  return Buffer.concat([head, body]);
}

/** A full box (version + 24-bit flags) from a type and payload. */
export function fullBox(type: string, version: number, flags: number, ...payload: Buffer[]): Buffer {
  const vf = Buffer.alloc(4);
  vf.writeUInt32BE(((version & 0xff) << 24) | (flags & 0xffffff), 0);
  return box(type, vf, ...payload);
}

/** Big-endian uint32 fields as a buffer. */
export function u32s(...values: number[]): Buffer {
  const b = Buffer.alloc(values.length * 4);
  values.forEach((v, i) => b.writeInt32BE(v | 0, i * 4));
  return b;
}
