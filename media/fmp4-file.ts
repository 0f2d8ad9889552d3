/**
 * Scans a segment file on disk: its init, every complete fragment (moof parsed, mdat
 * skipped by offset: payloads are never read), and where the valid bytes end. A
 * partial trailing box (a crash mid-write) is reported, not thrown, so reconcile can
 * truncate it away.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { MAX_BOX_BYTES, Mp4FormatError, readBoxHeader, type BoxHeader } from './boxes.ts';
import { parseInit, type InitInfo } from './init-info.ts';
import { parseMoof, type MoofInfo } from './moof.ts';

export interface ScannedFragment {
  offset: number;
  size: number;
  moofSize: number;
  moof: MoofInfo;
  durationTicks: number;
  keyframe: boolean;
}

export interface ScannedFile {
  initSize: number;
  init: Buffer;
  info: InitInfo;
  fragments: ScannedFragment[];
  /** End of the last complete fragment (or of the init). */
  validBytes: number;
  fileBytes: number;
  trailing: 'none' | 'partial' | 'mfra';
}

async function headerAt(fh: FileHandle, offset: number, fileBytes: number): Promise<BoxHeader | null> {
  const want = Math.min(16, fileBytes - offset);
  if (want < 8) return null;
  const buf = Buffer.alloc(want);
  await fh.read(buf, 0, want, offset);
  try {
    const h = readBoxHeader(buf, 0, fileBytes - offset);
    if (h && buf.readUInt32BE(0) === 0) return null; // size 0 is never written by us
    return h && h.size <= MAX_BOX_BYTES ? h : null;
  } catch {
    return null; // garbage where a box should start: treat as a partial tail
  }
}

async function readBytes(fh: FileHandle, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  const { bytesRead } = await fh.read(buf, 0, length, offset);
  if (bytesRead !== length) throw new Mp4FormatError('MP4_TRUNCATED', `short read at ${offset}`);
  return buf;
}

export async function scanFmp4File(path: string): Promise<ScannedFile> {
  const fh = await open(path, 'r');
  try {
    const fileBytes = (await fh.stat()).size;
    const ftyp = await headerAt(fh, 0, fileBytes);
    if (!ftyp || ftyp.type !== 'ftyp') throw new Mp4FormatError('MP4_NO_INIT', `${path} does not start with ftyp`);
    const moov = await headerAt(fh, ftyp.size, fileBytes);
    if (!moov || moov.type !== 'moov' || ftyp.size + moov.size > fileBytes) throw new Mp4FormatError('MP4_NO_INIT', `${path} has no complete moov after ftyp`);
    const initSize = ftyp.size + moov.size;
    const init = await readBytes(fh, 0, initSize);
    const info = parseInit(init);
    const mainId = info.videoTrackId ?? info.tracks[0]!.id;
    const fragments: ScannedFragment[] = [];
    let p = initSize;
    let trailing: ScannedFile['trailing'] = 'none';
    while (p < fileBytes) {
      const h = await headerAt(fh, p, fileBytes);
      if (!h || p + h.size > fileBytes) {
        trailing = 'partial';
        break;
      }
      if (h.type === 'mfra') {
        trailing = 'mfra';
        p += h.size;
        continue;
      }
      if (h.type !== 'moof') {
        p += h.size; // free/skip and the like
        continue;
      }
      const mdat = await headerAt(fh, p + h.size, fileBytes);
      if (!mdat || mdat.type !== 'mdat' || p + h.size + mdat.size > fileBytes) {
        trailing = 'partial';
        break;
      }
      let moof: MoofInfo;
      try {
        moof = parseMoof(await readBytes(fh, p, h.size), info.trexDefaults);
      } catch {
        trailing = 'partial';
        break;
      }
      const main = moof.tracks.find((t) => t.trackId === mainId) ?? moof.tracks[0];
      fragments.push({ offset: p, size: h.size + mdat.size, moofSize: h.size, moof, durationTicks: main?.durationTicks ?? 0, keyframe: main?.firstSampleSync ?? false });
      p += h.size + mdat.size;
    }
    const last = fragments[fragments.length - 1];
    const validBytes = trailing === 'partial' ? (last ? last.offset + last.size : initSize) : fileBytes;
    return { initSize, init, info, fragments, validBytes, fileBytes, trailing };
  } finally {
    await fh.close();
  }
}
