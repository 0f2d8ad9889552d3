/**
 * The smart-stream file format (`<data>/smart/<camera>/<day>/<startMs>.smart`), ours
 * and self-describing, so the index can be rebuilt from the files and a download of
 * the raw separated stream can be read without the recorder:
 *
 *   file header, 16 bytes:  'RSMT' | version u8 (1) | 3 reserved bytes (0) | startMs u64 BE
 *   then records, each:     'SM' | kind u8 | stream type u8 | timeMs u64 BE (UTC wall clock)
 *                           | media time u64 BE (90 kHz, the PES PTS as received)
 *                           | payload length u32 BE | CRC-32 of the payload u32 BE
 *                           | payload (the data packet exactly as the camera sent it)
 *
 * One record per camera packet, so packet boundaries survive; records are in time
 * order. A torn trailing record (crash mid-write) fails its length or CRC check and
 * `decodeRecords` stops there: everything before it is still read.
 */
import { crc32 } from 'node:zlib';
import { SMART_KINDS, type SmartKind } from '../index/smart.ts';

export const SMART_FILE_MAGIC = 'RSMT';
export const SMART_FORMAT_VERSION = 1;
export const SMART_FILE_HEADER_BYTES = 16;
export const SMART_RECORD_HEADER_BYTES = 28;

/** What a packet carries, decided from its bytes (smart/onvif-meta.ts classify); the index stores it (index/smart.ts). */
export { SMART_KINDS, type SmartKind };
const KIND_CODE: Record<SmartKind, number> = { onvif: 1, klv: 2, sei: 3, data: 0 };

export interface SmartFrame {
  kind: SmartKind;
  streamType: number;
  timeMs: number;
  mediaTicks90k: number;
  payload: Buffer;
}

export function encodeFileHeader(startMs: number): Buffer {
  const b = Buffer.alloc(SMART_FILE_HEADER_BYTES);
  b.write(SMART_FILE_MAGIC, 0, 'latin1');
  b[4] = SMART_FORMAT_VERSION;
  b.writeBigUInt64BE(BigInt(startMs), 8);
  return b;
}

/** startMs of a file header, or null if the bytes are not one. */
export function decodeFileHeader(b: Buffer): { startMs: number; version: number } | null {
  if (b.length < SMART_FILE_HEADER_BYTES || b.toString('latin1', 0, 4) !== SMART_FILE_MAGIC) return null;
  if (b[4] !== SMART_FORMAT_VERSION) return null;
  return { startMs: Number(b.readBigUInt64BE(8)), version: b[4] };
}

export function encodeRecord(f: SmartFrame): Buffer {
  const b = Buffer.alloc(SMART_RECORD_HEADER_BYTES + f.payload.length);
  b.write('SM', 0, 'latin1');
  b[2] = KIND_CODE[f.kind];
  b[3] = f.streamType & 0xff;
  b.writeBigUInt64BE(BigInt(Math.max(0, Math.round(f.timeMs))), 4);
  b.writeBigUInt64BE(BigInt(Math.max(0, Math.round(f.mediaTicks90k))), 12);
  b.writeUInt32BE(f.payload.length, 20);
  b.writeUInt32BE(crc32(f.payload), 24);
  f.payload.copy(b, SMART_RECORD_HEADER_BYTES);
  return b;
}

export interface DecodedRecord extends SmartFrame {
  /** Offset of the record (its header) in the buffer given. */
  offset: number;
  /** Header + payload bytes. */
  size: number;
}

/**
 * Records in `b` from `offset` on; stops at the first record that is cut short or
 * fails its checks. `validBytes` is where that happened (the durable, readable end).
 */
export function decodeRecords(b: Buffer, offset = 0): { records: DecodedRecord[]; validBytes: number } {
  const records: DecodedRecord[] = [];
  let at = offset;
  while (at + SMART_RECORD_HEADER_BYTES <= b.length) {
    if (b[at] !== 0x53 || b[at + 1] !== 0x4d) break;
    const kind = SMART_KINDS.find((k) => KIND_CODE[k] === b[at + 2]);
    const len = b.readUInt32BE(at + 20);
    const end = at + SMART_RECORD_HEADER_BYTES + len;
    if (!kind || end > b.length) break;
    const payload = b.subarray(at + SMART_RECORD_HEADER_BYTES, end);
    if (crc32(payload) !== b.readUInt32BE(at + 24)) break;
    records.push({
      kind,
      streamType: b[at + 3]!,
      timeMs: Number(b.readBigUInt64BE(at + 4)),
      mediaTicks90k: Number(b.readBigUInt64BE(at + 12)),
      payload,
      offset: at,
      size: end - at,
    });
    at = end;
  }
  return { records, validBytes: at };
}
