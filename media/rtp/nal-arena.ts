/**
 * One reused memory per camera where a GOP's video is rebuilt as MP4 samples
 * (4-byte length-prefixed NAL units) straight from the RTP payloads: no Buffer per
 * packet, NAL unit or frame. It grows by doubling when a GOP needs more (up to
 * `maxBytes`) and never shrinks, so a camera's steady state allocates nothing.
 * Positions handed out are offsets into `buf`, valid until the next compaction or
 * growth (which keep the bytes and their order, so offsets below `used` stay right
 * relative to each other: `moveToStart` says by how much they moved).
 */
export class NalArena {
  buf: Buffer;
  used = 0;

  constructor(
    initialBytes: number,
    private readonly maxBytes: number,
  ) {
    this.buf = Buffer.allocUnsafeSlow(initialBytes);
  }

  /** Room for `n` more bytes; false when that would pass `maxBytes` (nothing changes then). */
  reserve(n: number): boolean {
    const need = this.used + n;
    if (need <= this.buf.length) return true;
    if (need > this.maxBytes) return false;
    let size = this.buf.length;
    while (size < need) size *= 2;
    const next = Buffer.allocUnsafeSlow(Math.min(size, this.maxBytes));
    this.buf.copy(next, 0, 0, this.used);
    this.buf = next;
    return true;
  }

  /** Appends `src[from, to)`; the caller reserved room. */
  append(src: Uint8Array, from: number, to: number): void {
    this.buf.set(src.subarray(from, to), this.used);
    this.used += to - from;
  }

  /** Writes a 4-byte length slot (filled later by `setLength`) and returns where it is. */
  lengthSlot(): number {
    const at = this.used;
    this.used += 4;
    return at;
  }

  setLength(slot: number): void {
    this.buf.writeUInt32BE(this.used - slot - 4, slot);
  }

  /** Moves `[from, used)` to the start; returns the distance moved (subtract it from later offsets). */
  moveToStart(from: number): number {
    if (from > 0) this.buf.copyWithin(0, from, this.used);
    this.used -= from;
    return from;
  }

  /** Inserts `bytes` at `at`, shifting what follows; false when there is no room. */
  insert(at: number, bytes: Buffer): boolean {
    if (!this.reserve(bytes.length)) return false;
    this.buf.copyWithin(at + bytes.length, at, this.used);
    bytes.copy(this.buf, at);
    this.used += bytes.length;
    return true;
  }
}
