/**
 * ISO BMFF box headers. A box is `size(4) type(4)`; size 1 means a 64-bit size
 * follows, size 0 means "to the end of the enclosing data" (only legal for the last
 * box). Sizes are checked against the data so garbage fails with a typed error
 * instead of a huge allocation.
 */

export type Mp4ErrorCode = 'MP4_TRUNCATED' | 'MP4_BAD_BOX' | 'MP4_UNEXPECTED_BOX' | 'MP4_NO_INIT' | 'MP4_UNSUPPORTED';

export class Mp4FormatError extends Error {
  readonly code: Mp4ErrorCode;
  constructor(code: Mp4ErrorCode, message: string) {
    super(message);
    this.name = 'Mp4FormatError';
    this.code = code;
  }
}

export interface BoxHeader {
  type: string;
  /** Whole box, header included. */
  size: number;
  headerSize: number;
}

/** Largest box we accept from a camera stream (a 1-GOP fragment of 8K video fits). */
export const MAX_BOX_BYTES = 256 * 1024 * 1024;

const TYPE_RE = /^[\x20-\x7e]{4}$/;

/**
 * Reads the header at `offset`; null when fewer than the header's bytes are present.
 * `available` bounds size-0 boxes (to the end of the data).
 */
export function readBoxHeader(buf: Uint8Array, offset: number, available = buf.byteLength - offset): BoxHeader | null {
  if (available < 8) return null;
  const view = new DataView(buf.buffer, buf.byteOffset + offset, Math.min(available, 16));
  let size = view.getUint32(0);
  const type = String.fromCharCode(buf[offset + 4]!, buf[offset + 5]!, buf[offset + 6]!, buf[offset + 7]!);
  if (!TYPE_RE.test(type)) throw new Mp4FormatError('MP4_BAD_BOX', `not a box type: ${JSON.stringify(type)} at ${offset}`);
  let headerSize = 8;
  if (size === 1) {
    if (available < 16) return null;
    const big = view.getBigUint64(8);
    if (big > BigInt(Number.MAX_SAFE_INTEGER)) throw new Mp4FormatError('MP4_BAD_BOX', `box ${type} too large`);
    size = Number(big);
    headerSize = 16;
  } else if (size === 0) {
    size = available;
  }
  if (size < headerSize) throw new Mp4FormatError('MP4_BAD_BOX', `box ${type} has size ${size}`);
  return { type, size, headerSize };
}

export interface Box {
  type: string;
  /** Offset of the box start within the parent buffer. */
  offset: number;
  size: number;
  headerSize: number;
}

/** Child boxes of the payload `buf[start, end)`; throws on a box running past `end`. */
export function childBoxes(buf: Uint8Array, start = 0, end = buf.byteLength): Box[] {
  const out: Box[] = [];
  let p = start;
  while (p < end) {
    const h = readBoxHeader(buf, p, end - p);
    if (!h) throw new Mp4FormatError('MP4_TRUNCATED', `box header cut at ${p}`);
    if (p + h.size > end) throw new Mp4FormatError('MP4_TRUNCATED', `box ${h.type} at ${p} runs past its parent`);
    out.push({ type: h.type, offset: p, size: h.size, headerSize: h.headerSize });
    p += h.size;
  }
  return out;
}

/** Finds the first box along a path like `moov/trak/mdia/mdhd` below `box`'s payload. */
export function findBox(buf: Uint8Array, path: string, within?: Box): Box | undefined {
  const [first, ...rest] = path.split('/');
  const start = within ? within.offset + within.headerSize : 0;
  const end = within ? within.offset + within.size : buf.byteLength;
  const hit = childBoxes(buf, start, end).find((b) => b.type === first);
  if (!hit || rest.length === 0) return hit;
  return findBox(buf, rest.join('/'), hit);
}

/** All boxes of `type` directly below `within`. */
export function findAll(buf: Uint8Array, type: string, within: Box): Box[] {
  return childBoxes(buf, within.offset + within.headerSize, within.offset + within.size).filter((b) => b.type === type);
}

export function dataView(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}
