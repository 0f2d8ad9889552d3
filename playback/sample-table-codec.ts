/**
 * A compact binary encoding of one segment file's sample tables (what
 * playback/sample-table.ts reads from the fragments' `moof`s), stored in the index when a
 * segment closes so that the first request of an hour decodes ~60 records instead of
 * parsing ~1800 moofs (docs/design/playback.md, docs/design/index-layout.md `sampletables`).
 *
 * It is a cache of what the file says, never a second truth: decoding gives exactly
 * the tables `fragmentTable()` parses from the same file (test/unit/sample-table-codec),
 * and a record that is corrupt, of another format version or that does not describe
 * the file the index points at is refused, and the moofs are read instead.
 *
 * Layout, format 1 (varints are unsigned LEB128; "zigzag" maps signed to unsigned):
 *   u8      format (1)
 *   varint  fileBytes       size of the file the tables were read from
 *   varint  initSize        bytes of the init at offset 0
 *   varint  initStored      bytes of the init stored; the rest are zeros (a PS view's
 *                           init is padded with a zero-filled `free` box)
 *   bytes   init[initStored]
 *   varint  fragmentCount, sampleCount (of every track of every fragment)
 *   per fragment:
 *     zigzag  offset − end of the previous fragment (0 when they touch, as written)
 *     varint  size, moofSize, trackCount
 *     per track:
 *       varint  trackId
 *       zigzag  baseDecodeTime − (previous base + duration of this track), 64-bit
 *       varint  sampleCount
 *       seq     durations, sizes, flags (uint32), composition offsets (int32, zigzag)
 *       varint  runCount, then per run: varint offset in the fragment, varint samples
 *   u32 LE  CRC-32 of everything before it
 * A `seq` is a mode byte then, whichever is shortest:
 *   1  runs of equal values: varint runCount, then varint count + varint value per run
 *      (durations, flags and composition offsets are nearly constant);
 *   2  uint16 LE per value, 0xffff meaning "see the exceptions", then varint
 *      exceptionCount and per exception varint (index − previous index) + varint value
 *      (video sizes: a few large I-frames among smaller frames);
 *   3  the same with one byte per value and 0xff as the marker (audio sizes);
 *   4  uint32 LE per value.
 * Fixed-width values decode with native copies (no per-sample JS varint loop), and a
 * record's arrays are views of one buffer (one allocation, not four per track and
 * fragment): the first request of an hour decodes ~250 k samples on the request path.
 */
import { endianness } from 'node:os';
import { crc32 } from 'node:zlib';
import type { FragmentTable, SampleRun, TrackFragment } from './sample-table-types.ts';

/** Bump when the layout changes; records of another format are ignored (and rebuilt). */
export const SAMPLE_TABLE_FORMAT = 1;

/** Beyond what a recorder's segment holds (parseMoof refuses more in one trun too). */
const MAX_SAMPLES = 1_000_000;
const RUNS = 1;
const U16 = 2;
const U8 = 3;
const U32 = 4;
/** The marker of an exception, by value width: the value is in the exception list. */
const ESCAPE: Record<number, number> = { 1: 0xff, 2: 0xffff };
const U64_MAX = (1n << 64n) - 1n;
/** Typed-array copies of little-endian bytes are only right on a little-endian CPU. */
const NATIVE_LE = endianness() === 'LE';
/** Where uint16 sequences are widened from (decoding is synchronous: one is enough). */
let scratch16 = new Uint16Array(4096);

export interface PersistedTables {
  /** Size of the file the tables describe (the index's `bytes` for a closed segment). */
  fileBytes: number;
  /** The file's init (ftyp+moov), `initSize` bytes. */
  init: Buffer;
  /** Every fragment of the file, in file order. */
  fragments: FragmentTable[];
}

export class SampleTableRecordError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SampleTableRecordError';
  }
}

// ---- writing -------------------------------------------------------------------

class Writer {
  buf = Buffer.allocUnsafe(4096);
  p = 0;

  room(n: number): void {
    if (this.p + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.p + n));
    this.buf.copy(next, 0, 0, this.p);
    this.buf = next;
  }

  u8(v: number): void {
    this.room(1);
    this.buf[this.p++] = v;
  }

  /** Unsigned integer up to 2^53. */
  uv(v: number): void {
    this.room(8);
    while (v >= 0x80) {
      this.buf[this.p++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[this.p++] = v;
  }

  zz(v: number): void {
    this.uv(v >= 0 ? v * 2 : -v * 2 - 1);
  }

  zzBig(v: bigint): void {
    let u = v >= 0n ? v << 1n : (-v << 1n) - 1n;
    this.room(11);
    while (u >= 0x80n) {
      this.buf[this.p++] = Number(u & 0x7fn) | 0x80;
      u >>= 7n;
    }
    this.buf[this.p++] = Number(u);
  }

  bytes(b: Uint8Array): void {
    this.room(b.length);
    this.buf.set(b, this.p);
    this.p += b.length;
  }

  /** A sequence of uint32 values in the shortest of the forms (see the module comment). */
  seq(values: ArrayLike<number>): void {
    const n = values.length;
    let rle = 0;
    let runs = 0;
    for (let i = 0; i < n;) {
      const v = values[i]!;
      let j = i + 1;
      while (j < n && values[j] === v) j++;
      rle += varLen(j - i) + varLen(v);
      runs++;
      i = j;
    }
    rle += varLen(runs);
    const u8 = escapedLength(values, 1);
    const u16 = escapedLength(values, 2);
    const best = Math.min(rle, u8, u16, 4 * n);
    if (rle === best) {
      this.u8(RUNS);
      this.uv(runs);
      for (let i = 0; i < n;) {
        const v = values[i]!;
        let j = i + 1;
        while (j < n && values[j] === v) j++;
        this.uv(j - i);
        this.uv(v);
        i = j;
      }
    } else if (u8 === best || u16 === best) {
      const width = u8 === best ? 1 : 2;
      const marker = ESCAPE[width]!;
      this.u8(width === 1 ? U8 : U16);
      this.room(width * n);
      for (let i = 0; i < n; i++) {
        const v = Math.min(values[i]!, marker);
        if (width === 1) this.buf[this.p] = v;
        else this.buf.writeUInt16LE(v, this.p);
        this.p += width;
      }
      let escapes = 0;
      for (let i = 0; i < n; i++) if (values[i]! >= marker) escapes++;
      this.uv(escapes);
      let last = 0;
      for (let i = 0; i < n; i++) {
        if (values[i]! < marker) continue;
        this.uv(i - last);
        this.uv(values[i]!);
        last = i;
      }
    } else {
      this.u8(U32);
      this.room(4 * n);
      for (let i = 0; i < n; i++) {
        this.buf.writeUInt32LE(values[i]!, this.p);
        this.p += 4;
      }
    }
  }
}

/** Bytes of `values` as `width`-byte values with exceptions (modes 2 and 3). */
function escapedLength(values: ArrayLike<number>, width: 1 | 2): number {
  const marker = ESCAPE[width]!;
  let escapes = 0;
  let bytes = width * values.length;
  let last = 0;
  for (let i = 0; i < values.length; i++) {
    if (values[i]! < marker) continue;
    bytes += varLen(i - last) + varLen(values[i]!);
    last = i;
    escapes++;
  }
  return bytes + varLen(escapes);
}

function varLen(v: number): number {
  return v < 0x80 ? 1 : v < 0x4000 ? 2 : v < 0x20_0000 ? 3 : v < 0x1000_0000 ? 4 : 5;
}

function zigzag32(values: Int32Array): Uint32Array {
  const out = new Uint32Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = ((values[i]! << 1) ^ (values[i]! >> 31)) >>> 0;
  return out;
}

/** Encodes a file's tables (every fragment, in file order). */
export function encodeSampleTables(t: PersistedTables): Buffer {
  const w = new Writer();
  w.u8(SAMPLE_TABLE_FORMAT);
  w.uv(t.fileBytes);
  w.uv(t.init.length);
  let stored = t.init.length;
  while (stored > 0 && t.init[stored - 1] === 0) stored--;
  w.uv(stored);
  w.bytes(t.init.subarray(0, stored));
  w.uv(t.fragments.length);
  w.uv(t.fragments.reduce((n, f) => n + f.tracks.reduce((m, tr) => m + tr.durations.length, 0), 0));
  let prevEnd = t.init.length;
  const nextBase = new Map<number, bigint>();
  for (const f of t.fragments) {
    w.zz(f.offset - prevEnd);
    w.uv(f.size);
    w.uv(f.moofSize);
    w.uv(f.tracks.length);
    for (const tr of f.tracks) {
      w.uv(tr.trackId);
      w.zzBig(tr.baseDecodeTime - (nextBase.get(tr.trackId) ?? 0n));
      nextBase.set(tr.trackId, tr.baseDecodeTime + BigInt(tr.durationTicks));
      w.uv(tr.durations.length);
      w.seq(tr.durations);
      w.seq(tr.sizes);
      w.seq(tr.flags);
      w.seq(zigzag32(tr.compositionOffsets));
      w.uv(tr.runs.length);
      for (const r of tr.runs) {
        w.uv(r.fileOffset - f.offset);
        w.uv(r.count);
      }
    }
    prevEnd = f.offset + f.size;
  }
  const body = w.buf.subarray(0, w.p);
  const out = Buffer.allocUnsafe(body.length + 4);
  body.copy(out);
  out.writeUInt32LE(crc32(body), body.length);
  return out;
}

// ---- reading -------------------------------------------------------------------

class Reader {
  p = 0;
  constructor(
    readonly b: Uint8Array,
    readonly end: number,
  ) {}

  fail(what: string): never {
    throw new SampleTableRecordError(`sample table record: ${what} at byte ${this.p}`);
  }

  u8(): number {
    if (this.p >= this.end) this.fail('cut short');
    return this.b[this.p++]!;
  }

  uv(): number {
    let v = 0;
    let mul = 1;
    for (;;) {
      const c = this.u8();
      v += (c & 0x7f) * mul;
      if (c < 0x80) return v;
      mul *= 0x80;
      if (mul > 2 ** 49) this.fail('varint too long');
    }
  }

  /** An unsigned 32-bit value. */
  u32(): number {
    const v = this.uv();
    if (v > 0xffffffff) this.fail('value over 32 bits');
    return v;
  }

  zz(): number {
    const u = this.uv();
    return u % 2 === 0 ? u / 2 : -(u + 1) / 2;
  }

  zzBig(): bigint {
    let u = 0n;
    let shift = 0n;
    for (;;) {
      const c = this.u8();
      u |= BigInt(c & 0x7f) << shift;
      if (c < 0x80) break;
      shift += 7n;
      if (shift > 70n) this.fail('varint too long');
    }
    return u & 1n ? -((u + 1n) >> 1n) : u >> 1n;
  }

  /**
   * Reads a sequence into `out`; with `zigzag` the values are turned into int32 (in the
   * same bits: `out` is then read through an Int32Array). Returns the sum of the
   * (unsigned) values when `zigzag` is false.
   */
  seq(out: Uint32Array, zigzag = false): number {
    const mode = this.u8();
    const n = out.length;
    let sum = 0;
    if (mode === RUNS) {
      const runs = this.uv();
      let i = 0;
      for (let k = 0; k < runs; k++) {
        const count = this.uv();
        const v = this.u32();
        if (count === 0 || i + count > n) this.fail('runs do not add up to the sample count');
        out.fill(zigzag ? ((v >>> 1) ^ -(v & 1)) >>> 0 : v, i, i + count);
        sum += count * v;
        i += count;
      }
      if (i !== n) this.fail('runs do not add up to the sample count');
      return sum;
    } else if (mode === U8 || mode === U16) {
      const width = mode === U8 ? 1 : 2;
      const marker = ESCAPE[width]!;
      if (this.p + width * n > this.end) this.fail('cut short');
      const bytes = this.b.subarray(this.p, this.p + width * n);
      if (width === 1) out.set(bytes);
      else if (NATIVE_LE) {
        if (scratch16.length < n) scratch16 = new Uint16Array(Math.max(n, 2 * scratch16.length));
        const u16 = scratch16.subarray(0, n);
        new Uint8Array(u16.buffer, 0, 2 * n).set(bytes);
        out.set(u16);
      } else {
        for (let i = 0; i < n; i++) out[i] = bytes[2 * i]! | (bytes[2 * i + 1]! << 8);
      }
      this.p += width * n;
      let markers = 0;
      for (let at = out.indexOf(marker); at !== -1; at = out.indexOf(marker, at + 1)) markers++;
      const escapes = this.uv();
      // One value per marker, in increasing positions.
      if (escapes !== markers) this.fail(`${escapes} exceptions for ${markers} markers`);
      let i = 0;
      for (let k = 0; k < escapes; k++) {
        const delta = this.uv();
        i += delta;
        const v = this.u32();
        if ((k > 0 && delta === 0) || i >= n || out[i] !== marker || v < marker) this.fail('bad exception');
        out[i] = v;
      }
    } else if (mode === U32) {
      if (this.p + 4 * n > this.end) this.fail('cut short');
      const bytes = this.b.subarray(this.p, this.p + 4 * n);
      if (NATIVE_LE) new Uint8Array(out.buffer, out.byteOffset, 4 * n).set(bytes);
      else for (let i = 0; i < n; i++) out[i] = (bytes[4 * i]! | (bytes[4 * i + 1]! << 8) | (bytes[4 * i + 2]! << 16) | (bytes[4 * i + 3]! << 24)) >>> 0;
      this.p += 4 * n;
    } else {
      this.fail(`unknown sequence mode ${mode}`);
    }
    if (zigzag) for (let i = 0; i < n; i++) out[i] = ((out[i]! >>> 1) ^ -(out[i]! & 1)) >>> 0;
    else for (let i = 0; i < n; i++) sum += out[i]!;
    return sum;
  }
}

/**
 * Decodes a record. Throws SampleTableRecordError on anything that does not hold
 * together: another format version, a bad checksum, counts or offsets that do not add
 * up, sample data outside its fragment, fragments overlapping or past `fileBytes`.
 */
export function decodeSampleTables(record: Uint8Array): PersistedTables {
  if (record.length < 5) throw new SampleTableRecordError(`sample table record of ${record.length} bytes`);
  const bodyEnd = record.length - 4;
  const body = record.subarray(0, bodyEnd);
  const stored = Buffer.from(record.buffer, record.byteOffset, record.byteLength).readUInt32LE(bodyEnd);
  if (record[0] !== SAMPLE_TABLE_FORMAT)
    throw new SampleTableRecordError(`sample table record of format ${record[0]}, this build reads ${SAMPLE_TABLE_FORMAT}`);
  if (crc32(body) !== stored) throw new SampleTableRecordError('sample table record fails its checksum');
  const r = new Reader(record, bodyEnd);
  r.p = 1;
  const fileBytes = r.uv();
  const initSize = r.uv();
  const initStored = r.uv();
  if (initStored > initSize || initSize > fileBytes || r.p + initStored > bodyEnd) r.fail('bad init size');
  const init = Buffer.alloc(initSize);
  init.set(record.subarray(r.p, r.p + initStored));
  r.p += initStored;
  const count = r.uv();
  if (count > bodyEnd) r.fail('bad fragment count');
  const total = r.uv();
  if (total > MAX_SAMPLES) r.fail(`${total} samples`);
  // Every array of the record is a view of this one buffer: durations, sizes, flags, offsets.
  const all = new ArrayBuffer(16 * total);
  let used = 0;
  const take = (n: number): Uint32Array => {
    if (used + n > total) r.fail('more samples than the record says');
    const a = new Uint32Array(all, 16 * used, 4 * n);
    used += n;
    return a;
  };
  const fragments: FragmentTable[] = [];
  let prevEnd = initSize;
  const nextBase = new Map<number, bigint>();
  for (let i = 0; i < count; i++) {
    const offset = prevEnd + r.zz();
    const size = r.uv();
    const moofSize = r.uv();
    const trackCount = r.uv();
    if (offset < prevEnd || offset + size > fileBytes) r.fail(`fragment [${offset}, ${offset + size}) overlaps or runs past the file (${fileBytes} bytes)`);
    if (moofSize < 8 || moofSize > size || trackCount > 64) r.fail('bad fragment header');
    const tracks: TrackFragment[] = [];
    for (let k = 0; k < trackCount; k++) {
      const trackId = r.u32();
      const baseDecodeTime = (nextBase.get(trackId) ?? 0n) + r.zzBig();
      if (baseDecodeTime < 0n || baseDecodeTime > U64_MAX) r.fail('decode time outside 64 bits');
      const n = r.uv();
      if (n > MAX_SAMPLES) r.fail(`${n} samples`);
      const block = take(n);
      const durations = block.subarray(0, n);
      const sizes = block.subarray(n, 2 * n);
      const flags = block.subarray(2 * n, 3 * n);
      const zz = block.subarray(3 * n, 4 * n);
      const durationTicks = r.seq(durations);
      r.seq(sizes);
      r.seq(flags);
      r.seq(zz, true);
      const compositionOffsets = new Int32Array(all, zz.byteOffset, n);
      const runCount = r.uv();
      if (runCount * 2 > bodyEnd - r.p) r.fail('bad run count');
      const runs: SampleRun[] = [];
      let sample = 0;
      for (let j = 0; j < runCount; j++) {
        const rel = r.uv();
        const c = r.uv();
        if (sample + c > n) r.fail('runs hold more samples than the track');
        let bytes = 0;
        for (let s = sample; s < sample + c; s++) bytes += sizes[s]!;
        // The same rule fragmentTable() applies to a moof: sample data inside the fragment, after the moof.
        if (rel < moofSize || rel + bytes > size) r.fail(`track ${trackId} data [${rel}, ${rel + bytes}) outside its fragment`);
        runs.push({ fileOffset: offset + rel, count: c, bytes });
        sample += c;
      }
      if (sample !== n) r.fail('runs do not hold every sample');
      nextBase.set(trackId, baseDecodeTime + BigInt(durationTicks));
      tracks.push({ trackId, baseDecodeTime, durations, sizes, flags, compositionOffsets, runs, durationTicks });
    }
    fragments.push({ offset, size, moofSize, tracks });
    prevEnd = offset + size;
  }
  if (r.p !== bodyEnd) r.fail('trailing bytes');
  if (used !== total) r.fail('fewer samples than the record says');
  return { fileBytes, init, fragments };
}
