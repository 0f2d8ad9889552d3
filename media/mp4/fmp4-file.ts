/**
 * Scans a segment file on disk: its init, every complete fragment (moof parsed, mdat
 * skipped by its header: payloads are never read), and where the valid bytes end. A
 * partial trailing box (a crash mid-write) or garbage after the last good fragment is
 * reported (`trailing: 'partial'`, `validBytes < fileBytes`), not thrown, so reconcile
 * can truncate it away. A file that does not start with a complete ftyp+moov throws:
 * MP4_TRUNCATED when the file ends inside its init (what a crash between creating a
 * segment file and syncing its header leaves; no fragment can follow, since the writer
 * appends fragments only after the header is synced), MP4_NO_INIT for anything else.
 */
import { open } from 'node:fs/promises';
import { MAX_BOX_BYTES, Mp4FormatError, readBoxHeader, type BoxHeader } from './boxes.ts';
import { parseInit, type InitInfo } from './init-info.ts';
import { parseMoof, type MoofInfo } from './moof.ts';
import { readUpTo } from './file-read.ts';

export interface ScannedFragment {
  /** Offset of the moof in the file. */
  offset: number;
  /** moof+mdat bytes. */
  size: number;
  moofSize: number;
  moof: MoofInfo;
  /** Duration of the video track (or of the first track without video), in ticks. */
  durationTicks: number;
  keyframe: boolean;
}

export interface ScannedFile {
  initSize: number;
  init: Buffer;
  info: InitInfo;
  fragments: ScannedFragment[];
  /** End of the last complete fragment (or of the init when there is none). */
  validBytes: number;
  fileBytes: number;
  /** What follows the fragments: nothing, a cut/garbled box, or ffmpeg's mfra index. */
  trailing: 'none' | 'partial' | 'mfra';
  /** Why the tail is partial (for logs). */
  partialReason?: string;
}

/** A box header parsed from `buf` (bytes read at file offset `at`), or a reason it is not one. */
function headerIn(buf: Buffer, fileBytes: number, at: number): BoxHeader | string {
  if (buf.length < 8) return `box header cut at ${at}`;
  let h: BoxHeader | null;
  try {
    h = readBoxHeader(buf, 0, fileBytes - at);
  } catch (err) {
    return (err as Error).message;
  }
  if (!h) return `box header cut at ${at}`;
  if (buf.readUInt32BE(0) === 0) return `box ${h.type} at ${at} has size 0 (to the end)`;
  if (h.size > MAX_BOX_BYTES) return `box ${h.type} at ${at} of ${h.size} bytes is beyond the limit`;
  if (at + h.size > fileBytes) return `box ${h.type} at ${at} (${h.size} bytes) runs past the end of the file (${fileBytes})`;
  return h;
}

/**
 * Whether the file ends inside the box expected at `at`: fewer than 8 bytes left, or a
 * header of the expected type whose box runs past the end. Garbage is not "cut".
 */
function cutInside(buf: Buffer, fileBytes: number, at: number, type: string): boolean {
  if (fileBytes - at < 8) return true;
  try {
    const h = readBoxHeader(buf, 0, fileBytes - at);
    return h === null || (h.type === type && at + h.size > fileBytes);
  } catch {
    return false;
  }
}

export async function scanFmp4File(path: string): Promise<ScannedFile> {
  const fh = await open(path, 'r');
  try {
    const fileBytes = (await fh.stat()).size;
    const ftypHead = await readUpTo(fh, 0, 16);
    const ftyp = headerIn(ftypHead, fileBytes, 0);
    if (typeof ftyp === 'string' || ftyp.type !== 'ftyp') {
      const code = cutInside(ftypHead, fileBytes, 0, 'ftyp') ? 'MP4_TRUNCATED' : 'MP4_NO_INIT';
      throw new Mp4FormatError(code, `${path} does not start with ftyp (${typeof ftyp === 'string' ? ftyp : ftyp.type})`);
    }
    const moovHead = await readUpTo(fh, ftyp.size, 16);
    const moov = headerIn(moovHead, fileBytes, ftyp.size);
    if (typeof moov === 'string' || moov.type !== 'moov') {
      const code = cutInside(moovHead, fileBytes, ftyp.size, 'moov') ? 'MP4_TRUNCATED' : 'MP4_NO_INIT';
      throw new Mp4FormatError(code, `${path} has no complete moov after ftyp (${typeof moov === 'string' ? moov : moov.type})`);
    }
    const initSize = ftyp.size + moov.size;
    const init = await readUpTo(fh, 0, initSize);
    let info: InitInfo;
    try {
      info = parseInit(init);
    } catch (err) {
      if (err instanceof Mp4FormatError) throw new Mp4FormatError('MP4_NO_INIT', `${path}: init not usable: ${err.message}`);
      throw err;
    }
    const mainId = info.videoTrackId ?? info.tracks[0]!.id;

    const fragments: ScannedFragment[] = [];
    let trailing: ScannedFile['trailing'] = 'none';
    let partialReason: string | undefined;
    let validBytes = initSize;
    let p = initSize;
    let head = await readUpTo(fh, p, 16);
    while (p < fileBytes) {
      const h = headerIn(head, fileBytes, p);
      if (typeof h === 'string') {
        partialReason = h;
        break;
      }
      if (h.type !== 'moof') {
        if (h.type === 'mdat') {
          partialReason = `mdat without moof at ${p}`;
          break;
        }
        if (h.type === 'mfra') trailing = 'mfra';
        p += h.size; // mfra, free, skip and the like
        head = await readUpTo(fh, p, 16);
        continue;
      }
      // The whole moof plus the next header (the mdat's, then the next box's) in one read.
      const moofAndNext = await readUpTo(fh, p, h.size + 16);
      const mdat = headerIn(moofAndNext.subarray(h.size), fileBytes, p + h.size);
      if (typeof mdat === 'string' || mdat.type !== 'mdat') {
        partialReason = typeof mdat === 'string' ? mdat : `moof at ${p} followed by ${mdat.type}`;
        break;
      }
      let moof: MoofInfo;
      try {
        moof = parseMoof(moofAndNext.subarray(0, h.size), info.trexDefaults);
      } catch (err) {
        partialReason = `moof at ${p}: ${(err as Error).message}`;
        break;
      }
      const main = moof.tracks.find((t) => t.trackId === mainId) ?? moof.tracks[0];
      const size = h.size + mdat.size;
      fragments.push({ offset: p, size, moofSize: h.size, moof, durationTicks: main?.durationTicks ?? 0, keyframe: main?.firstSampleSync ?? false });
      p += size;
      validBytes = p;
      trailing = 'none';
      head = p < fileBytes ? await readUpTo(fh, p, 16) : Buffer.alloc(0);
    }
    if (partialReason !== undefined) trailing = 'partial';
    return { initSize, init, info, fragments, validBytes, fileBytes, trailing, ...(partialReason !== undefined ? { partialReason } : {}) };
  } finally {
    await fh.close();
  }
}
