/**
 * Scans a `.ps` segment file on disk GOP by GOP without reading the payloads. After
 * the file header (pack header, system header, PSM, padding; see ps-mux.ts) each GOP
 * of our writer opens with pack header, system header, PSM and a GOP info packet that
 * gives its byte length, first DTS and duration (media/ps/ps-mux.ts), so the scan reads
 * about a kilobyte per GOP through the demuxer and hops on. A GOP whose length runs
 * past the end of the file (a crash mid-write) or a place where no GOP header is found
 * ends the scan: `validBytes` is where the last whole GOP ends and `partialReason` says
 * why the rest is not one, so reconcile can truncate it. Only a file that does not
 * start with a GOP of ours throws (PS_BAD_STREAM).
 */
import { open } from 'node:fs/promises';
import { MediaFormatError } from '../media-error.ts';
import { demuxPs } from './ps-demux.ts';
import { FILE_HEADER_BYTES } from './ps-mux.ts';
import { readUpTo } from '../mp4/file-read.ts';

export interface ScannedPsGop {
  offset: number;
  size: number;
  /** 90 kHz, unwrapped. */
  firstDts: bigint;
  duration90k: number;
}

export interface ScannedPsFile {
  gops: ScannedPsGop[];
  validBytes: number;
  fileBytes: number;
  partialReason?: string;
  /** The first GOP's bytes (its parameter sets describe the file), null without a whole GOP. */
  firstGop: Buffer | null;
  /** Bytes before the first GOP (the file header). */
  headerBytes: number;
}

/** Where the first GOP starts: after the file header (the next pack header), or at 0 without one. */
export function firstGopOffset(head: Buffer): number {
  const d = demuxPs(head.subarray(0, Math.min(head.length, 2 * HEAD_BYTES)));
  if (d.gopInfos[0]?.offset === 0) return 0;
  const next = head.indexOf(PACK, 4);
  return next < 0 ? head.length : next;
}

const PACK = Buffer.from([0, 0, 1, 0xba]);
/** An MPEG-2 pack header without stuffing. */
const PACK_HEADER_MIN_BYTES = 14;

/** Enough for pack + system header + PSM + GOP info of a GOP with a few streams. */
const HEAD_BYTES = 1024;

export async function scanPsFile(path: string): Promise<ScannedPsFile> {
  const fh = await open(path, 'r');
  try {
    const fileBytes = (await fh.stat()).size;
    const gops: ScannedPsGop[] = [];
    let partialReason: string | undefined;
    const head = await readUpTo(fh, 0, Math.min(FILE_HEADER_BYTES + HEAD_BYTES, fileBytes));
    // Shorter than a pack header and a prefix of one: created, then cut by a crash before
    // its header was synced. No GOP (as a file cut later inside its header has none).
    if (fileBytes < PACK_HEADER_MIN_BYTES && PACK.subarray(0, head.length).equals(head.subarray(0, PACK.length))) {
      return { gops: [], validBytes: 0, fileBytes, partialReason: `file ends inside its header (${fileBytes} bytes)`, firstGop: null, headerBytes: 0 };
    }
    if (!demuxPs(head.subarray(0, Math.min(head.length, 64))).startsWithPack)
      throw new MediaFormatError('PS_BAD_STREAM', `${path} does not start with a pack header`);
    const headerBytes = firstGopOffset(head);
    let p = headerBytes;
    while (p < fileBytes) {
      const d = demuxPs(await readUpTo(fh, p, Math.min(HEAD_BYTES, fileBytes - p)));
      const info = d.gopInfos[0];
      if (!d.startsWithPack || !info || info.offset !== 0 || info.gopBytes === 0) {
        partialReason = `no GOP header at ${p}`;
        break;
      }
      if (p + info.gopBytes > fileBytes) {
        partialReason = `GOP at ${p} has ${info.gopBytes} bytes, the file ends ${fileBytes - p} bytes after it starts`;
        break;
      }
      gops.push({ offset: p, size: info.gopBytes, firstDts: info.firstDts, duration90k: info.duration90k });
      p += info.gopBytes;
    }
    const first = gops[0];
    return {
      gops,
      validBytes: p,
      fileBytes,
      ...(partialReason !== undefined ? { partialReason } : {}),
      firstGop: first ? await readUpTo(fh, first.offset, first.size) : null,
      headerBytes,
    };
  } finally {
    await fh.close();
  }
}
