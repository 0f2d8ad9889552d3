/**
 * GET /api/cameras/:id/video.ps?from=&to= — any recorded range, whatever the segment
 * format, as one MPEG program stream: the GOPs from the one holding `from` to the one
 * holding the last instant before `to`, across segments, codec changes and gaps.
 *
 * Every GOP is read through media/segment-source.ts (fMP4 view of `.mp4` and `.ps`
 * segments alike) and muxed to PS by media/ps-convert.ts. Output time starts at 0 and
 * stays continuous: a GOP that continues the previous one in the recording keeps its
 * spacing, a GOP after a gap starts where the previous output ended (like video.mp4).
 * A codec change simply continues with a new PSM/parameter sets (PS allows it).
 *
 * Streamed GOP by GOP (memory: one GOP), no temp file, no Content-Length: the bytes
 * are a pure function of the stored files, but their length is only known after
 * conversion, so Range is not offered (`Accept-Ranges: none`).
 */
import type { FastifyInstance } from 'fastify';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { decodeGops } from '../index/gop-table.ts';
import type { SegmentRecord } from '../index/records.ts';
import { NoVideoError, RecorderError } from '../lib/errors.ts';
import { iso, parseRangeMs } from '../lib/time.ts';
import { parseInit, type InitInfo } from '../media/init-info.ts';
import { MediaFormatError } from '../media/media-error.ts';
import { parseMoof } from '../media/moof.ts';
import { FragmentToPs, PS_TIMESCALE } from '../media/ps-convert.ts';
import { openSegmentFile } from '../media/segment-source.ts';
import { access } from '../security/http-auth.ts';
import { attachmentDisposition } from '../security/headers.ts';
import type { HttpDeps } from './http.ts';

const PROGRAM_END = Buffer.from([0, 0, 1, 0xb9]);

interface Pick {
  seg: SegmentRecord;
  gops: { offset: number; size: number }[];
  firstMs: number;
  lastMs: number;
}

/** The GOPs of every segment overlapping [fromMs, toMs), in time order. */
function pickGops(deps: HttpDeps, camera: string, fromMs: number, toMs: number): Pick[] {
  const out: Pick[] = [];
  for (const seg of deps.index.segmentsInRange(camera, fromMs, toMs)) {
    const table = decodeGops(seg.gops);
    const gops: Pick['gops'] = [];
    let firstMs: number | null = null;
    let lastMs = 0;
    table.forEach((g, i) => {
      const startMs = seg.startMs + g.timeMs;
      const endMs = i + 1 < table.length ? seg.startMs + table[i + 1]!.timeMs : seg.endMs;
      if (endMs <= fromMs || startMs >= toMs) return;
      gops.push({ offset: g.offset, size: g.size });
      firstMs ??= startMs;
      lastMs = endMs;
    });
    if (firstMs !== null) out.push({ seg, gops, firstMs, lastMs });
  }
  return out;
}

async function readAt(fh: FileHandle, offset: number, length: number, path: string): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  const { bytesRead } = await fh.read(buf, 0, length, offset);
  if (bytesRead !== length) throw new RecorderError('SEGMENT_GONE', `segment ${path} is shorter than its index entry`);
  return buf;
}

function to90k(ticks: bigint, timescale: number): bigint {
  return (ticks * 90_000n) / BigInt(timescale);
}

/** The PS bytes of the picked GOPs, one GOP per chunk, then the program end code. */
async function* psStream(deps: HttpDeps, picks: Pick[]): AsyncGenerator<Buffer> {
  let conv: FragmentToPs | null = null;
  let codecKey = '';
  let shift: bigint | null = null;
  let srcNext: bigint | null = null; // source video time where the previous GOP ended (90 kHz)
  let outEnd = 0n; // output video time where the previous GOP ended
  for (const { seg, gops } of picks) {
    const path = join(deps.dataDir, seg.file);
    const fh = await openSegmentFile(path).catch((err: unknown) => {
      throw (err as { code?: string }).code === 'ENOENT' ? new RecorderError('SEGMENT_GONE', `segment ${seg.file} was removed`) : err;
    });
    try {
      const init = await readAt(fh, 0, seg.initSize, path);
      let info: InitInfo;
      try {
        info = parseInit(init);
        if (conv === null || codecKey !== seg.codecKey) {
          const previousScr: bigint | undefined = conv === null ? undefined : (conv as FragmentToPs).scr;
          conv = new FragmentToPs(init, previousScr);
          codecKey = seg.codecKey;
        }
      } catch (err) {
        if (err instanceof MediaFormatError && err.code === 'CODEC_UNSUPPORTED') throw new RecorderError('MEDIA_UNSUPPORTED', `${seg.file}: ${err.message}`, { cause: err });
        throw err;
      }
      const videoId = info.videoTrackId ?? info.tracks[0]!.id;
      const videoScale = info.tracks.find((t) => t.id === videoId)!.timescale;
      for (const g of gops) {
        const bytes = await readAt(fh, g.offset, g.size, path);
        const moof = parseMoof(bytes, info.trexDefaults);
        const v = moof.tracks.find((t) => t.trackId === videoId);
        if (!v) continue;
        const first = to90k(v.baseDecodeTime, videoScale);
        if (shift === null) {
          // Output starts at 0 with the earliest track of the first GOP.
          const earliest = moof.tracks.reduce((m, t) => {
            const ts = info.tracks.find((x) => x.id === t.trackId)?.timescale ?? PS_TIMESCALE;
            const d = to90k(t.baseDecodeTime, ts);
            return d < m ? d : m;
          }, first);
          shift = -earliest;
        } else if (srcNext === null || first !== srcNext) {
          shift = outEnd - first; // after a gap or a new session: continue where output ended
        }
        srcNext = first + to90k(BigInt(v.durationTicks), videoScale);
        outEnd = srcNext + shift;
        yield conv.convert({ bytes, moof }, shift).bytes;
      }
    } finally {
      await fh.close();
    }
  }
  yield PROGRAM_END;
}

export function registerVideoPs(app: FastifyInstance, deps: HttpDeps): void {
  app.get<{ Params: { id: string }; Querystring: { from?: string; to?: string } }>('/api/cameras/:id/video.ps', access('play', { camera: 'params.id' }), async (req, reply) => {
    const camera = deps.service.requireCamera(req.params.id);
    const { fromMs, toMs } = parseRangeMs(req.query.from, req.query.to);
    const picks = pickGops(deps, camera.id, fromMs, toMs);
    if (picks.length === 0) throw new NoVideoError(`no video of camera ${camera.id} between ${iso(fromMs)} and ${iso(toMs)}`);
    // The first GOP is converted before the headers go out, so its errors are typed replies.
    const gen = psStream(deps, picks);
    const first = await gen.next();
    async function* body(): AsyncGenerator<Buffer> {
      try {
        if (!first.done) yield first.value;
        yield* gen;
      } catch (err) {
        // Headers are gone: the connection is aborted short (never a silent truncated file).
        deps.log.warn({ err, camera: camera.id, url: req.url }, 'video.ps aborted');
        throw err;
      }
    }
    const name = `${camera.id}_${iso(picks[0]!.firstMs).replace(/[:.]/g, '-')}.ps`;
    void reply
      .header('Content-Type', 'video/MP2P')
      .header('Accept-Ranges', 'none')
      .header('Content-Disposition', attachmentDisposition(name))
      .header('X-Recording-From', iso(picks[0]!.firstMs))
      .header('X-Recording-To', iso(picks[picks.length - 1]!.lastMs));
    return reply.send(Readable.from(body(), { objectMode: false }));
  });
}
