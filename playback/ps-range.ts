/**
 * Any recorded range as one MPEG program stream, the read half of video.ps
 * (api/video-ps.ts is its HTTP route): the GOPs from the one holding `from` to the one
 * holding the last instant before `to`, across segments, codec changes and gaps.
 *
 * Every GOP is read through playback/segment-source.ts (fMP4 view of `.mp4` and `.ps`
 * segments alike) and muxed to PS by media/ps/ps-convert.ts. Output time starts at 0 and
 * stays continuous: a GOP that continues the previous one in the recording keeps its
 * spacing, a GOP after a gap starts where the previous output ended (like video.mp4).
 * A codec change continues with a new PSM and parameter sets (PS allows it); SCRs
 * never go back. `walk` converts every GOP once (a plan: its size and the converter
 * state before it); `replay` converts again only the GOPs a byte range touches.
 */
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { timelineGops } from './one-timeline.ts';
import type { RecorderIndex } from '../index/db.ts';
import type { SegmentRecord } from '../index/records.ts';
import { RecorderError } from '../lib/errors.ts';
import { parseInit, type InitInfo } from '../media/mp4/init-info.ts';
import { MediaFormatError } from '../media/media-error.ts';
import { parseMoof } from '../media/mp4/moof.ts';
import { FragmentToPs, PS_TIMESCALE } from '../media/ps/ps-convert.ts';
import { openSegmentFile } from './segment-source.ts';
import { readUpTo } from '../media/mp4/file-read.ts';
import type { ReadCaches } from './read-caches.ts';

/**
 * Bump when the bytes produced for the same stored video change (part of the ETag).
 * 2: after a break in time the next GOP starts on the previous video's frame grid.
 */
export const PS_OUTPUT_VERSION = 2;
/** Ranges of up to this much stored video get Content-Length and Range (planned first). */
export const PLAN_LIMIT_BYTES = 512 * 1024 * 1024;
export const PROGRAM_END = Buffer.from([0, 0, 1, 0xb9]);

export interface PickedSegment {
  seg: SegmentRecord;
  gops: { offset: number; size: number }[];
  firstMs: number;
  lastMs: number;
}

/** Where segments are, and the node's PS views when there are (tests read without). */
export interface PsDeps {
  dataDir: string;
  caches?: Pick<ReadCaches, 'psViews'> | undefined;
}

/** The GOPs of every segment overlapping [fromMs, toMs), in time order. */
export function pickGops(deps: { index: RecorderIndex }, camera: string, fromMs: number, toMs: number): PickedSegment[] {
  const out: PickedSegment[] = [];
  for (const { seg, gops: picked } of timelineGops(deps.index.segments.overlapping(camera, fromMs, toMs), fromMs, toMs)) {
    out.push({ seg, gops: picked.map((g) => ({ offset: g.offset, size: g.size })), firstMs: picked[0]!.startMs, lastMs: picked[picked.length - 1]!.endMs });
  }
  return out;
}

async function readAt(fh: FileHandle, offset: number, length: number, path: string): Promise<Buffer> {
  const buf = await readUpTo(fh, offset, length);
  if (buf.length !== length) throw new RecorderError('SEGMENT_GONE', `segment ${path} is shorter than its index entry`);
  return buf;
}

function to90k(ticks: bigint, timescale: number): bigint {
  return (ticks * 90_000n) / BigInt(timescale);
}

/** One segment opened for conversion: its fMP4 view, init and converter. */
interface OpenSegment {
  path: string;
  fh: FileHandle;
  info: InitInfo;
  conv: FragmentToPs;
}

async function openForPs(deps: PsDeps, seg: SegmentRecord): Promise<OpenSegment> {
  const path = join(deps.dataDir, seg.file);
  const fh = await openSegmentFile(path, deps.caches?.psViews).catch((err: unknown) => {
    throw (err as { code?: string }).code === 'ENOENT' ? new RecorderError('SEGMENT_GONE', `segment ${seg.file} was removed`) : err;
  });
  try {
    const init = await readAt(fh, 0, seg.initSize, path);
    return { path, fh, info: parseInit(init), conv: new FragmentToPs(init) };
  } catch (err) {
    await fh.close();
    if (err instanceof MediaFormatError && err.code === 'CODEC_UNSUPPORTED')
      throw new RecorderError('MEDIA_UNSUPPORTED', `${seg.file}: ${err.message}`, { cause: err });
    throw err;
  }
}

/** Where a GOP goes in the output and what the converter state was before it. */
export interface PlannedGop {
  seg: SegmentRecord;
  offset: number;
  size: number;
  shift: bigint;
  previousScr: bigint | undefined;
  /** Output bytes (known once converted). */
  outBytes: number;
}

/**
 * Walks the picked GOPs in output order, deciding each one's time shift (continuous
 * output time) and converting it: yields the plan entry and the PS bytes of each.
 */
export async function* walk(deps: PsDeps, picks: PickedSegment[]): AsyncGenerator<{ planned: PlannedGop; bytes: Buffer }> {
  let shift: bigint | null = null;
  let srcNext: bigint | null = null; // source video time where the previous GOP ended (90 kHz)
  let outEnd = 0n; // latest output time any track reached so far
  let videoGrid: { lastDts: bigint; frame: bigint } | null = null; // output DTS of the last video frame, and a frame's length
  let scr: bigint | undefined;
  for (const { seg, gops } of picks) {
    const s = await openForPs(deps, seg);
    try {
      const videoId = s.info.videoTrackId ?? s.info.tracks[0]!.id;
      const videoScale = s.info.tracks.find((t) => t.id === videoId)!.timescale;
      for (const g of gops) {
        const bytes = await readAt(s.fh, g.offset, g.size, s.path);
        const moof = parseMoof(bytes, s.info.trexDefaults);
        const v = moof.tracks.find((t) => t.trackId === videoId);
        if (!v) continue;
        const first = to90k(v.baseDecodeTime, videoScale);
        // Earliest start and latest end over all tracks of this GOP (90 kHz, source time).
        let earliest = first;
        let latest = first;
        for (const t of moof.tracks) {
          const ts = s.info.tracks.find((x) => x.id === t.trackId)?.timescale ?? PS_TIMESCALE;
          const d = to90k(t.baseDecodeTime, ts);
          const e = to90k(t.baseDecodeTime + BigInt(t.durationTicks), ts);
          if (d < earliest) earliest = d;
          if (e > latest) latest = e;
        }
        // Output starts at 0 with the earliest track; a GOP that does not continue the
        // previous one's video (a gap, a new session) starts, all tracks alike, where the
        // output so far ended, so no track goes back in time, and on the previous video's
        // frame grid at least one frame after its last frame: a session may end on a
        // near-zero last sample, and the next frame must not land on the same time
        // (as playback/fmp4-range.ts does for the fMP4 range).
        if (shift === null) shift = -earliest;
        else if (srcNext === null || first !== srcNext) {
          let start = outEnd;
          if (videoGrid) {
            const { lastDts, frame } = videoGrid;
            const frames = (start - lastDts + frame - 1n) / frame; // ceil, start >= lastDts
            start = lastDts + (frames > 1n ? frames : 1n) * frame;
          }
          shift = start - earliest;
        }
        srcNext = first + to90k(BigInt(v.durationTicks), videoScale);
        if (latest + shift > outEnd) outEnd = latest + shift;
        const n = v.durations.length;
        const lastDts = v.baseDecodeTime + BigInt(v.durations.slice(0, n - 1).reduce((a, d) => a + d, 0));
        const frame = Math.max(v.durations[n - 2] ?? 0, v.durations[n - 1] ?? 0, 1);
        videoGrid = { lastDts: to90k(lastDts, videoScale) + shift, frame: to90k(BigInt(frame), videoScale) || 1n };
        const planned: PlannedGop = { seg, offset: g.offset, size: g.size, shift, previousScr: scr, outBytes: 0 };
        const out = s.conv.convertAfter({ bytes, moof }, shift, scr);
        scr = out.lastScr;
        planned.outBytes = out.bytes.length;
        yield { planned, bytes: out.bytes };
      }
    } finally {
      await s.fh.close();
    }
  }
}

/** Bytes [start, end) of a planned output, converting only the GOPs they touch. */
export async function* replay(deps: PsDeps, plan: PlannedGop[], start: number, end: number): AsyncGenerator<Buffer> {
  let pos = 0;
  let open = null as { seg: SegmentRecord; s: OpenSegment } | null;
  try {
    for (const g of plan) {
      const gStart = pos;
      pos += g.outBytes;
      if (pos <= start) continue;
      if (gStart >= end) break;
      if (open === null || open.seg !== g.seg) {
        const previous = open;
        open = null;
        await previous?.s.fh.close();
        open = { seg: g.seg, s: await openForPs(deps, g.seg) };
      }
      const s = open.s;
      const bytes = await readAt(s.fh, g.offset, g.size, s.path);
      const out = s.conv.convertAfter({ bytes, moof: parseMoof(bytes, s.info.trexDefaults) }, g.shift, g.previousScr).bytes;
      if (out.length !== g.outBytes) throw new RecorderError('SEGMENT_GONE', `${g.seg.file}: GOP at ${g.offset} changed since the request was planned`);
      yield out.subarray(Math.max(0, start - gStart), Math.min(out.length, end - gStart));
    }
  } finally {
    await open?.s.fh.close();
  }
  if (end > pos) yield PROGRAM_END.subarray(Math.max(0, start - pos), end - pos);
}
