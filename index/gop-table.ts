/**
 * The compact GOP table stored with each segment: 12 bytes per fragment, three
 * little-endian uint32 — byte offset in the file, byte size (moof+mdat), start time in
 * ms relative to the segment start. Segment files stay below 4 GiB and 49 days, which
 * a segment never reaches (docs/design/architecture.md keeps segments at about a minute).
 */
export interface GopEntry {
  offset: number;
  size: number;
  timeMs: number;
}

const ENTRY_BYTES = 12;

export function encodeGops(gops: readonly GopEntry[]): Uint8Array {
  const buf = Buffer.alloc(gops.length * ENTRY_BYTES);
  gops.forEach((g, i) => {
    buf.writeUInt32LE(g.offset, i * ENTRY_BYTES);
    buf.writeUInt32LE(g.size, i * ENTRY_BYTES + 4);
    buf.writeUInt32LE(Math.max(0, Math.round(g.timeMs)), i * ENTRY_BYTES + 8);
  });
  return buf;
}

export function decodeGops(bytes: Uint8Array): GopEntry[] {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: GopEntry[] = [];
  for (let p = 0; p + ENTRY_BYTES <= buf.length; p += ENTRY_BYTES) {
    out.push({ offset: buf.readUInt32LE(p), size: buf.readUInt32LE(p + 4), timeMs: buf.readUInt32LE(p + 8) });
  }
  return out;
}

export function gopCount(bytes: Uint8Array): number {
  return Math.floor(bytes.byteLength / ENTRY_BYTES);
}
