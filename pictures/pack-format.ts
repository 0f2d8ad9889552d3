/**
 * The bytes of a pack file (docs/design/pictures.md): self-describing, so the index can
 * be rebuilt from the packs and a start-up reconcile can index a tail the index lacks.
 *
 *   pack header   "RECPACK1" | u32 BE json length | json {id, pool, createdMs}
 *   record        "PIC1" | u8 version (1) | u16 BE json length | u32 BE payload length
 *                 | u32 BE CRC-32 of json and payload | json PictureHeader | payload
 *
 * A record is whole when its lengths fit in the file and its CRC matches; the first
 * record that is not ends the pack's readable part (a torn tail after a crash).
 */
import { crc32 } from 'node:zlib';
import { ID_PATTERN } from '../storage/layout.ts';
import type { FileHandle } from 'node:fs/promises';

export const PACK_MAGIC = Buffer.from('RECPACK1', 'latin1');
const RECORD_MAGIC = Buffer.from('PIC1', 'latin1');
/** Fixed part of a record header: magic 4, version 1, json length 2, payload length 4, crc 4. */
export const RECORD_FIXED = 15;
const RECORD_VERSION = 1;

export interface PackHeader {
  id: number;
  pool: string;
  createdMs: number;
  /**
   * A copy of another node's pack (cluster/picture-copies.ts): that node, its pack id and
   * the offset in its pack of this file's first record. Absent: this node's own pack.
   */
  copyOf?: { node: string; pack: number; start: number };
}

/** What a record says about its picture (the index entry can be rebuilt from it). */
export interface PictureHeader {
  camera: string;
  atMs: number;
  seq: number;
  type: string;
  meta?: Record<string, string>;
  width: number;
  height: number;
}

/**
 * A record's header as its JSON says, or null when it is not one this recorder writes.
 * The CRC only proves the writer wrote those bytes: a pack pulled from another node (a
 * build of another version, a bug there) must not put keys of any shape into the index.
 */
export function pictureHeaderOf(json: Buffer): PictureHeader | null {
  let h: unknown;
  try {
    h = JSON.parse(json.toString('utf8'));
  } catch {
    return null;
  }
  if (typeof h !== 'object' || h === null) return null;
  const r = h as Record<string, unknown>;
  const whole = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
  if (typeof r.camera !== 'string' || !ID_PATTERN.test(r.camera) || !whole(r.atMs) || !whole(r.seq) || typeof r.type !== 'string') return null;
  if (!whole(r.width) || !whole(r.height)) return null;
  if (r.meta !== undefined && (typeof r.meta !== 'object' || r.meta === null || Object.values(r.meta).some((v) => typeof v !== 'string'))) return null;
  return h as PictureHeader;
}

export function encodePackHeader(h: PackHeader): Buffer {
  const json = Buffer.from(JSON.stringify(h));
  const len = Buffer.alloc(4);
  len.writeUInt32BE(json.length);
  return Buffer.concat([PACK_MAGIC, len, json]);
}

/** The record header for `payload` (written before it; the payload itself is not copied). */
export function encodeRecordHeader(h: PictureHeader, payload: Uint8Array): Buffer {
  const json = Buffer.from(JSON.stringify(h));
  const head = Buffer.alloc(RECORD_FIXED + json.length);
  RECORD_MAGIC.copy(head, 0);
  head.writeUInt8(RECORD_VERSION, 4);
  head.writeUInt16BE(json.length, 5);
  head.writeUInt32BE(payload.length, 7);
  head.writeUInt32BE(crc32(payload, crc32(json)), 11);
  json.copy(head, RECORD_FIXED);
  return head;
}

export type PackHeaderRead = { ok: true; header: PackHeader; end: number } | { ok: false; why: 'short' | 'foreign' };

/** Reads a pack's header: `short` when the file ends inside it (a crash at creation), `foreign` when it is not a pack. */
export async function readPackHeader(fh: FileHandle, size: number): Promise<PackHeaderRead> {
  if (size < PACK_MAGIC.length + 4) {
    const b = Buffer.alloc(Math.min(size, PACK_MAGIC.length));
    await fh.read(b, 0, b.length, 0);
    return { ok: false, why: PACK_MAGIC.subarray(0, b.length).equals(b) ? 'short' : 'foreign' };
  }
  const fixed = Buffer.alloc(PACK_MAGIC.length + 4);
  await fh.read(fixed, 0, fixed.length, 0);
  if (!fixed.subarray(0, PACK_MAGIC.length).equals(PACK_MAGIC)) return { ok: false, why: 'foreign' };
  const len = fixed.readUInt32BE(PACK_MAGIC.length);
  const end = fixed.length + len;
  if (len > 65536) return { ok: false, why: 'foreign' };
  if (end > size) return { ok: false, why: 'short' };
  const json = Buffer.alloc(len);
  await fh.read(json, 0, len, fixed.length);
  try {
    const h = JSON.parse(json.toString('utf8')) as PackHeader;
    if (typeof h.id !== 'number' || typeof h.pool !== 'string') return { ok: false, why: 'foreign' };
    const c = h.copyOf;
    if (c !== undefined && (typeof c.node !== 'string' || !Number.isSafeInteger(c.pack) || !Number.isSafeInteger(c.start)))
      return { ok: false, why: 'foreign' };
    return { ok: true, header: h, end };
  } catch {
    return { ok: false, why: 'short' };
  }
}

export interface ScannedRecord {
  /** Offset of the record header. */
  at: number;
  header: PictureHeader;
  /** Offset and length of the picture's bytes. */
  offset: number;
  length: number;
  /** Offset just past the record. */
  end: number;
}

/**
 * The whole records of a pack from `from` up to `size`, in order; `end` is where the
 * readable part ends (== size for a clean pack; less when the tail is torn).
 */
export async function scanRecords(fh: FileHandle, from: number, size: number): Promise<{ records: ScannedRecord[]; end: number }> {
  const records: ScannedRecord[] = [];
  const fixed = Buffer.alloc(RECORD_FIXED);
  let at = from;
  while (at + RECORD_FIXED <= size) {
    await fh.read(fixed, 0, RECORD_FIXED, at);
    if (!fixed.subarray(0, 4).equals(RECORD_MAGIC) || fixed.readUInt8(4) !== RECORD_VERSION) break;
    const jsonLen = fixed.readUInt16BE(5);
    const payloadLen = fixed.readUInt32BE(7);
    const end = at + RECORD_FIXED + jsonLen + payloadLen;
    if (end > size) break;
    const body = Buffer.alloc(jsonLen + payloadLen);
    await fh.read(body, 0, body.length, at + RECORD_FIXED);
    const json = body.subarray(0, jsonLen);
    if (crc32(body.subarray(jsonLen), crc32(json)) !== fixed.readUInt32BE(11)) break;
    const header = pictureHeaderOf(json);
    if (!header) break;
    records.push({ at, header, offset: at + RECORD_FIXED + jsonLen, length: payloadLen, end });
    at = end;
  }
  return { records, end: at };
}

/**
 * The whole records at the start of `buf`, whose first byte is at offset `base` of its
 * pack (a byte range pulled from another node): each checked as `scanRecords` does
 * (magic, version, lengths, CRC). `end` is the offset (in the pack) just past the last
 * whole one: the caller appends only up to it, so a torn or cut record is never kept.
 */
export function scanRecordBuffer(buf: Buffer, base: number): { records: ScannedRecord[]; end: number } {
  const records: ScannedRecord[] = [];
  let at = 0;
  while (at + RECORD_FIXED <= buf.length) {
    if (!buf.subarray(at, at + 4).equals(RECORD_MAGIC) || buf.readUInt8(at + 4) !== RECORD_VERSION) break;
    const jsonLen = buf.readUInt16BE(at + 5);
    const payloadLen = buf.readUInt32BE(at + 7);
    const end = at + RECORD_FIXED + jsonLen + payloadLen;
    if (end > buf.length) break;
    const json = buf.subarray(at + RECORD_FIXED, at + RECORD_FIXED + jsonLen);
    if (crc32(buf.subarray(at + RECORD_FIXED + jsonLen, end), crc32(json)) !== buf.readUInt32BE(at + 11)) break;
    const header = pictureHeaderOf(json);
    if (!header) break;
    records.push({ at: base + at, header, offset: base + at + RECORD_FIXED + jsonLen, length: payloadLen, end: base + end });
    at = end;
  }
  return { records, end: base + at };
}
