/**
 * The one seam through which playback reads a segment file: `openSegmentFile(path)`
 * gives a read-only handle on the file *as fragmented MP4*, whatever its format.
 *   - `.mp4`: the file itself (fs.open).
 *   - `.ps`: a view converted on the fly, at the same offsets as the PS file: bytes
 *     [0, FILE_HEADER_BYTES) are the fMP4 init (built from the first GOP's parameter
 *     sets, media/ps/ps-convert.ts) padded with a `free` box, and each PS GOP at
 *     [offset, offset+size) reads as the moof+mdat it converts to, padded with a `free`
 *     box to exactly `size` (the writer makes every GOP big enough, ps-mux.ts). So the
 *     index's GOP table, initSize and byte counts are valid for both views, and every
 *     MP4 path (download, /play, frames, sample tables) serves PS recordings unchanged.
 * Decode times are the PS times (90 kHz video, unwrapped from the GOP info), so a
 * segment's GOPs and the segments of one session continue exactly as the fMP4
 * originals did.
 *
 * Caches: a PsViews (lru-cache, built with the node's read caches in the composition
 * root, playback/read-caches.ts) keeps layouts by path and converted GOPs by bytes
 * across opens; a handle opened without one converts each GOP once per handle (the
 * last one is kept, which serves the moof-then-mdat reads of one GOP).
 *
 * Only `read`, `stat` and `close` are served on a PS view; it is typed as a FileHandle
 * for the readers that take one.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { LRUCache } from 'lru-cache';
import type { EsTrack } from '../media/codec/codec-config.ts';
import { MediaFormatError } from '../media/media-error.ts';
import { firstGopOffset } from '../media/ps/ps-file.ts';
import { describePs, psGopToFmp4 } from '../media/ps/ps-convert.ts';
import { demuxPs } from '../media/ps/ps-demux.ts';
import { readUpTo } from '../media/mp4/file-read.ts';

const HEAD_BYTES = 8192;
const GOP_HEAD_BYTES = 1024;
/** Converted GOPs kept by a PsViews, and PS files whose layout it keeps. */
export const CONVERTED_CACHE_BYTES = 48 * 1024 * 1024;
const LAYOUTS = 1000;

/** A `free` box of exactly `bytes` (≥ 8). */
function freeBox(bytes: number): Buffer {
  const b = Buffer.alloc(bytes);
  b.writeUInt32BE(bytes, 0);
  b.write('free', 4, 'latin1');
  return b;
}

function padTo(bytes: Buffer, size: number, what: string): Buffer {
  if (bytes.length === size) return bytes;
  if (bytes.length + 8 > size) throw new MediaFormatError('PS_BAD_STREAM', `${what}: ${bytes.length} bytes of fMP4 do not fit the ${size} bytes of PS`);
  return Buffer.concat([bytes, freeBox(size - bytes.length)]);
}

interface PsLayout {
  /** The padded fMP4 init, exactly the file header's size. */
  init: Buffer;
  tracks: EsTrack[];
  /** GOP starts and sizes found so far (the file only grows). */
  gops: { offset: number; size: number }[];
}

/** What PS views keep across opens (see the module comment); one per node. */
export class PsViews {
  readonly layouts = new LRUCache<string, PsLayout>({ max: LAYOUTS });
  readonly converted = new LRUCache<string, Buffer>({ maxSize: CONVERTED_CACHE_BYTES, sizeCalculation: (b) => Math.max(1, b.length) });
}

async function layoutOf(path: string, fh: FileHandle, views: PsViews | undefined): Promise<PsLayout> {
  const cached = views?.layouts.get(path);
  if (cached) return cached;
  const head = await readUpTo(fh, 0, HEAD_BYTES);
  const headerBytes = firstGopOffset(head);
  if (headerBytes === 0) throw new MediaFormatError('PS_BAD_STREAM', `${path}: no file header before the first GOP (not written by this recorder)`);
  const first = demuxPs(await readUpTo(fh, headerBytes, GOP_HEAD_BYTES)).gopInfos[0];
  if (!first || first.offset !== 0) throw new MediaFormatError('PS_BAD_STREAM', `${path}: no GOP at ${headerBytes}`);
  const desc = describePs(demuxPs(await readUpTo(fh, headerBytes, first.gopBytes)));
  const layout: PsLayout = { init: padTo(desc.init, headerBytes, `${path} init`), tracks: desc.tracks, gops: [{ offset: headerBytes, size: first.gopBytes }] };
  views?.layouts.set(path, layout);
  return layout;
}

/** The GOP holding byte `pos`, hopping over GOP headers past the ones known. */
async function gopAt(layout: PsLayout, fh: FileHandle, pos: number, fileBytes: number): Promise<{ offset: number; size: number } | null> {
  for (;;) {
    const last = layout.gops[layout.gops.length - 1]!;
    if (pos >= last.offset && pos < last.offset + last.size) break;
    if (pos < last.offset) break;
    const next = last.offset + last.size;
    if (next >= fileBytes) return null;
    const info = demuxPs(await readUpTo(fh, next, Math.min(GOP_HEAD_BYTES, fileBytes - next))).gopInfos[0];
    if (!info || info.offset !== 0 || next + info.gopBytes > fileBytes) return null;
    layout.gops.push({ offset: next, size: info.gopBytes });
  }
  // Binary search the known GOPs.
  let lo = 0;
  let hi = layout.gops.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (layout.gops[mid]!.offset <= pos) lo = mid;
    else hi = mid - 1;
  }
  const g = layout.gops[lo]!;
  return pos >= g.offset && pos < g.offset + g.size ? g : null;
}

/** One GOP of `path` as the fMP4 it reads as, padded to the GOP's size. */
async function convertGop(path: string, layout: PsLayout, fh: FileHandle, gop: { offset: number; size: number }): Promise<Buffer> {
  const ps = await readUpTo(fh, gop.offset, gop.size);
  if (ps.length !== gop.size) throw new MediaFormatError('PS_BAD_STREAM', `${path}: GOP at ${gop.offset} cut short`);
  return padTo(psGopToFmp4(ps, layout.tracks, 1).fragment, gop.size, `${path} GOP at ${gop.offset}`);
}

class PsFmp4Handle {
  /** The GOP converted last by this handle (moof and mdat are read apart). */
  private last: { key: string; bytes: Buffer } | null = null;

  constructor(
    private readonly path: string,
    private readonly fh: FileHandle,
    private readonly layout: PsLayout,
    private readonly views: PsViews | undefined,
  ) {}

  private async converted(gop: { offset: number; size: number }): Promise<Buffer> {
    const key = `${this.path}:${gop.offset}:${gop.size}`;
    if (this.last?.key === key) return this.last.bytes;
    let bytes = this.views?.converted.get(key);
    if (!bytes) {
      bytes = await convertGop(this.path, this.layout, this.fh, gop);
      this.views?.converted.set(key, bytes);
    }
    this.last = { key, bytes };
    return bytes;
  }

  async read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<{ bytesRead: number; buffer: Uint8Array }> {
    const fileBytes = (await this.fh.stat()).size;
    let done = 0;
    while (done < length && position + done < fileBytes) {
      const pos = position + done;
      let src: Buffer;
      let base: number;
      if (pos < this.layout.init.length) {
        src = this.layout.init;
        base = 0;
      } else {
        const g = await gopAt(this.layout, this.fh, pos, fileBytes);
        if (!g) break; // a partial trailing GOP: nothing served past the last whole one
        src = await this.converted(g);
        base = g.offset;
      }
      const n = Math.min(length - done, src.length - (pos - base));
      buffer.set(src.subarray(pos - base, pos - base + n), offset + done);
      done += n;
    }
    return { bytesRead: done, buffer };
  }

  stat(): ReturnType<FileHandle['stat']> {
    return this.fh.stat();
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}

/** Opens a segment file for reading as fMP4 (see the module comment); `views` caches PS views across opens. */
export async function openSegmentFile(path: string, views?: PsViews): Promise<FileHandle> {
  const fh = await open(path, 'r');
  if (!path.endsWith('.ps')) return fh;
  try {
    const layout = await layoutOf(path, fh, views);
    return new PsFmp4Handle(path, fh, layout, views) as unknown as FileHandle;
  } catch (err) {
    await fh.close();
    throw err;
  }
}

const STREAM_CHUNK = 256 * 1024;

/** Bytes [start, endInclusive] of a segment file as fMP4 (see openSegmentFile), streamed. */
export function segmentRangeStream(path: string, start: number, endInclusive: number, views?: PsViews): Readable {
  async function* chunks(): AsyncGenerator<Buffer> {
    const fh = await openSegmentFile(path, views);
    try {
      for (let p = start; p <= endInclusive;) {
        const n = Math.min(STREAM_CHUNK, endInclusive + 1 - p);
        const buf = Buffer.alloc(n);
        const { bytesRead } = await fh.read(buf, 0, n, p);
        if (bytesRead === 0) throw new MediaFormatError('PS_BAD_STREAM', `${path} ends at ${p}, expected ${endInclusive + 1}`);
        yield buf.subarray(0, bytesRead);
        p += bytesRead;
      }
    } finally {
      await fh.close();
    }
  }
  return Readable.from(chunks(), { objectMode: false });
}
