/**
 * GET /api/cameras/:id/video.ps?from=&to= — any recorded range, whatever the segment
 * format, as one MPEG program stream: the GOPs from the one holding `from` to the one
 * holding the last instant before `to`, across segments, codec changes and gaps.
 *
 * Every GOP is read through playback/segment-source.ts (fMP4 view of `.mp4` and `.ps`
 * segments alike) and muxed to PS by media/ps/ps-convert.ts. Output time starts at 0 and
 * stays continuous: a GOP that continues the previous one in the recording keeps its
 * spacing, a GOP after a gap starts where the previous output ended (like video.mp4).
 * A codec change continues with a new PSM and parameter sets (PS allows it); SCRs
 * never go back.
 *
 * The bytes are a pure function of the stored files, so a range of up to
 * PLAN_LIMIT_BYTES of stored video is planned first (every GOP converted once, only
 * its size and the converter state before it kept): exact Content-Length, a strong
 * ETag, single `Range` and `If-Range`, each GOP converted again when it is sent. A
 * longer range, or any with `stream=1` (first byte at once), is streamed as it is
 * converted (no Content-Length, `Accept-Ranges: none`). Either way one GOP is in
 * memory and no temp file is written.
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gopsOverlapping } from '../playback/gop-range.ts';
import type { SegmentRecord } from '../index/records.ts';
import { NoVideoError, RecorderError } from '../lib/errors.ts';
import { iso, parseRangeMs } from '../lib/time.ts';
import { parseInit, type InitInfo } from '../media/mp4/init-info.ts';
import { MediaFormatError } from '../media/media-error.ts';
import { parseMoof } from '../media/mp4/moof.ts';
import { FragmentToPs, PS_TIMESCALE } from '../media/ps/ps-convert.ts';
import { openSegmentFile } from '../playback/segment-source.ts';
import { readUpTo } from '../media/mp4/file-read.ts';
import { access } from '../security/http-auth.ts';
import { attachmentDisposition } from '../security/headers.ts';
import { replyRange } from './byte-ranges.ts';
import type { HttpDeps } from './http-deps.ts';

/**
 * Bump when the bytes produced for the same stored video change (part of the ETag).
 * 2: after a break in time the next GOP starts on the previous video's frame grid.
 */
export const PS_OUTPUT_VERSION = 2;
/** Ranges of up to this much stored video get Content-Length and Range (planned first). */
export const PLAN_LIMIT_BYTES = 512 * 1024 * 1024;
const PROGRAM_END = Buffer.from([0, 0, 1, 0xb9]);

export interface PickedSegment {
  seg: SegmentRecord;
  gops: { offset: number; size: number }[];
  firstMs: number;
  lastMs: number;
}

/** Where segments are, and the node's PS views when there are (tests read without). */
type PsDeps = Pick<HttpDeps, 'dataDir'> & Partial<Pick<HttpDeps, 'caches'>>;

/** The GOPs of every segment overlapping [fromMs, toMs), in time order. */
export function pickGops(deps: Pick<HttpDeps, 'index'>, camera: string, fromMs: number, toMs: number): PickedSegment[] {
  const out: PickedSegment[] = [];
  for (const seg of deps.index.segments.inRange(camera, fromMs, toMs)) {
    const picked = gopsOverlapping(seg, fromMs, toMs);
    if (picked.length === 0) continue;
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
interface PlannedGop {
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
async function* replay(deps: PsDeps, plan: PlannedGop[], start: number, end: number): AsyncGenerator<Buffer> {
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

function headers(reply: FastifyReply, cameraId: string, picks: PickedSegment[]): void {
  const name = `${cameraId}_${iso(picks[0]!.firstMs).replace(/[:.]/g, '-')}.ps`;
  void reply
    .header('Content-Type', 'video/MP2P')
    .header('Content-Disposition', attachmentDisposition(name))
    .header('X-Recording-From', iso(picks[0]!.firstMs))
    .header('X-Recording-To', iso(picks[picks.length - 1]!.lastMs));
}

/** A body generator whose failure after the headers aborts the connection (logged once). */
function guarded(deps: HttpDeps, url: string, gen: AsyncGenerator<Buffer>): Readable {
  async function* body(): AsyncGenerator<Buffer> {
    try {
      yield* gen;
    } catch (err) {
      deps.log.warn({ err, url }, 'video.ps aborted');
      throw err;
    }
  }
  return Readable.from(body(), { objectMode: false });
}

export function registerVideoPs(app: FastifyInstance, deps: HttpDeps): void {
  app.get<{ Params: { id: string }; Querystring: { from?: string; to?: string; stream?: string } }>(
    '/api/cameras/:id/video.ps',
    access('play', { camera: 'params.id' }),
    async (req, reply) => {
      const camera = deps.service.requireCamera(req.params.id);
      const { fromMs, toMs } = parseRangeMs(req.query.from, req.query.to);
      const picks = pickGops(deps, camera.id, fromMs, toMs);
      if (picks.length === 0) throw new NoVideoError(`no video of camera ${camera.id} between ${iso(fromMs)} and ${iso(toMs)}`);
      headers(reply, camera.id, picks);
      const sourceBytes = picks.reduce((n, p) => n + p.gops.reduce((m, g) => m + g.size, 0), 0);

      if (req.query.stream === '1' || sourceBytes > PLAN_LIMIT_BYTES) {
        // Streamed as converted. The first GOP is converted before the headers go out,
        // so its errors are typed replies.
        const gops = walk(deps, picks);
        const first = await gops.next();
        async function* body(): AsyncGenerator<Buffer> {
          if (!first.done) yield first.value.bytes;
          for await (const g of gops) yield g.bytes;
          yield PROGRAM_END;
        }
        void reply.header('Accept-Ranges', 'none');
        return reply.send(guarded(deps, req.url, body()));
      }

      const plan: PlannedGop[] = [];
      for await (const g of walk(deps, picks)) plan.push(g.planned);
      const contentLength = plan.reduce((n, g) => n + g.outBytes, 0) + PROGRAM_END.length;
      const hash = createHash('sha1').update(`psv${PS_OUTPUT_VERSION};`);
      for (const g of plan) hash.update(`${g.seg.file}:${g.seg.codecKey}:${g.offset}:${g.size};`);
      const etag = `"psv${PS_OUTPUT_VERSION}-${hash.digest('hex').slice(0, 32)}"`;
      const range = replyRange(req, reply, contentLength, etag);
      return reply.send(guarded(deps, req.url, replay(deps, plan, range.start, range.end + 1)));
    },
  );
}
