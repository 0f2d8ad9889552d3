/**
 * ISO BMFF (MP4) box headers. A box is `size(4) type(4) payload`; size 1 means a
 * 64-bit `largesize` follows the type, size 0 means "to the end of the enclosing
 * data" (only legal for the last box). Every size is checked against the bytes it
 * claims, so garbage fails with a typed Mp4FormatError instead of a RangeError or a
 * huge allocation.
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
  /** 8, or 16 with a 64-bit largesize. */
  headerSize: number;
}

export interface Box extends BoxHeader {
  /** Offset of the box start within the buffer it was read from. */
  offset: number;
}

/** Largest box we accept (a one-GOP fragment of 8K video fits well below it). */
export const MAX_BOX_BYTES = 256 * 1024 * 1024;

/** True when the 4 bytes at `offset` are printable ASCII (0x20..0x7e), as box types are. */
export function isBoxType(buf: Uint8Array, offset: number): boolean {
  for (let i = offset; i < offset + 4; i++) {
    const c = buf[i];
    if (c === undefined || c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

function u32(buf: Uint8Array, p: number): number {
  return ((buf[p]! << 24) | (buf[p + 1]! << 16) | (buf[p + 2]! << 8) | buf[p + 3]!) >>> 0;
}

function typeAt(buf: Uint8Array, p: number): string {
  return String.fromCharCode(buf[p]!, buf[p + 1]!, buf[p + 2]!, buf[p + 3]!);
}

function printable(buf: Uint8Array, p: number): string {
  return JSON.stringify(Buffer.from(buf.buffer, buf.byteOffset + p, Math.min(4, buf.byteLength - p)).toString('latin1'));
}

/**
 * Reads the box header at `offset`. Returns null when the header's own bytes (8, or
 * 16 with a largesize) are not all in `buf` yet. `available` is how many bytes the box
 * may span from `offset` (defaults to the rest of `buf`); it only gives size-0 boxes
 * their size, so callers that stream can pass a larger number than what `buf` holds.
 * Throws MP4_BAD_BOX for a non-printable type or a size below the header size.
 */
export function readBoxHeader(buf: Uint8Array, offset: number, available = buf.byteLength - offset): BoxHeader | null {
  const present = buf.byteLength - offset;
  if (present < 8) return null;
  if (!isBoxType(buf, offset + 4)) throw new Mp4FormatError('MP4_BAD_BOX', `not a box type: ${printable(buf, offset + 4)} at ${offset}`);
  const type = typeAt(buf, offset + 4);
  let size = u32(buf, offset);
  let headerSize = 8;
  if (size === 1) {
    if (present < 16) return null;
    const hi = u32(buf, offset + 8);
    const lo = u32(buf, offset + 12);
    if (hi >= 0x200000) throw new Mp4FormatError('MP4_BAD_BOX', `box ${type} at ${offset}: largesize beyond 2^53`);
    size = hi * 0x1_0000_0000 + lo;
    headerSize = 16;
  } else if (size === 0) {
    size = available;
  }
  if (size < headerSize) throw new Mp4FormatError('MP4_BAD_BOX', `box ${type} at ${offset} has size ${size}`);
  return { type, size, headerSize };
}

/**
 * The boxes laid side by side in `buf[start, end)` (the payload of a container, or a
 * whole file). Throws MP4_TRUNCATED when a box header is cut or a box runs past `end`.
 */
export function childBoxes(buf: Uint8Array, start = 0, end = buf.byteLength): Box[] {
  if (end > buf.byteLength) throw new Mp4FormatError('MP4_TRUNCATED', `range ends at ${end}, data at ${buf.byteLength}`);
  const out: Box[] = [];
  let p = start;
  while (p < end) {
    const h = readBoxHeader(buf, p, end - p);
    if (!h) throw new Mp4FormatError('MP4_TRUNCATED', `box header cut at ${p}`);
    if (p + h.size > end) throw new Mp4FormatError('MP4_TRUNCATED', `box ${h.type} at ${p} (${h.size} bytes) runs past ${end}`);
    out.push({ type: h.type, size: h.size, headerSize: h.headerSize, offset: p });
    p += h.size;
  }
  return out;
}

/** The first child of `type` directly inside `within` (or at top level of `buf`). */
export function findChild(buf: Uint8Array, type: string, within?: Box): Box | undefined {
  const start = within ? within.offset + within.headerSize : 0;
  const end = within ? within.offset + within.size : buf.byteLength;
  if (end > buf.byteLength) throw new Mp4FormatError('MP4_TRUNCATED', `range ends at ${end}, data at ${buf.byteLength}`);
  let p = start;
  while (p < end) {
    const h = readBoxHeader(buf, p, end - p);
    if (!h) throw new Mp4FormatError('MP4_TRUNCATED', `box header cut at ${p}`);
    if (p + h.size > end) throw new Mp4FormatError('MP4_TRUNCATED', `box ${h.type} at ${p} (${h.size} bytes) runs past ${end}`);
    if (h.type === type) return { type: h.type, size: h.size, headerSize: h.headerSize, offset: p };
    p += h.size;
  }
  return undefined;
}

/**
 * Finds the first box along a path like `moov/trak/mdia/mdhd`, starting at the top
 * level of `buf` or inside `within`. Only the boxes on the path are descended into.
 */
export function findBox(buf: Uint8Array, path: string, within?: Box): Box | undefined {
  let box = within;
  for (const type of path.split('/')) {
    const next = findChild(buf, type, box);
    if (!next) return undefined;
    box = next;
  }
  return box;
}

/** All boxes of `type` directly inside `within`. */
export function findAll(buf: Uint8Array, type: string, within: Box): Box[] {
  return childBoxes(buf, within.offset + within.headerSize, within.offset + within.size).filter((b) => b.type === type);
}

/** A view on `buf` (any Uint8Array, offset respected). */
export function dataView(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

/**
 * The payload of a full box (after version+flags) as offsets into `buf`, checking it
 * holds at least `minBytes` after version+flags. Throws MP4_BAD_BOX otherwise.
 */
export function fullBoxBody(buf: Uint8Array, box: Box, minBytes: number): { version: number; flags: number; body: number; end: number } {
  const start = box.offset + box.headerSize;
  const end = box.offset + box.size;
  if (end - start < 4 + minBytes || end > buf.byteLength) {
    throw new Mp4FormatError('MP4_BAD_BOX', `${box.type} at ${box.offset} too short (${box.size} bytes)`);
  }
  return { version: buf[start]!, flags: u32(buf, start) & 0xffffff, body: start + 4, end };
}
