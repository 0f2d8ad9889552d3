/**
 * FLOOR_DEPACK for bench/floor-rtsp.ts: what an RTSP client of our own must add to
 * receiving, in the cheapest form we know. H.264 RTP payloads (RFC 6184: single NAL
 * units, STAP-A, FU-A) are reassembled into length-prefixed (AVCC) samples in one
 * fixed per-camera arena, an access unit ending where the RTP timestamp changes; at
 * each IDR the GOP held is written as one fMP4 fragment (a real `moof`: mfhd, traf with
 * tfhd, tfdt and a trun of every sample's duration, size and flags, built in a fixed
 * buffer; then the `mdat` header and the arena) with two writeSync calls. No new
 * Buffer memory per packet or GOP. No init segment and no audio: a floor, not a file a
 * player opens.
 */
import { writeSync } from 'node:fs';

const ARENA_BYTES = 4 * 1024 * 1024;
const MAX_SAMPLES = 1024;
const TRACK_ID = 1;

export class H264Depacketizer {
  private readonly arena = Buffer.allocUnsafe(ARENA_BYTES);
  private used = 0;
  /** Where the NAL being rebuilt from FU-A fragments has its length slot; -1 when none. */
  private fuAt = -1;
  private readonly sizes = new Uint32Array(MAX_SAMPLES);
  private readonly durations = new Uint32Array(MAX_SAMPLES);
  private readonly keys = new Uint8Array(MAX_SAMPLES);
  private samples = 0;
  private sampleStart = 0;
  private sampleTs = -1;
  private sampleKey = false;
  private decodeTime = 0;
  private seq = 0;
  private readonly moof = Buffer.alloc(64 + 12 * MAX_SAMPLES);
  private readonly mdatHead = Buffer.alloc(8);
  fragments = 0;
  dropped = 0;

  constructor(private readonly fd: number) {}

  /** One RTP packet: payload [from, to) of `buf`, its 90 kHz timestamp. */
  packet(buf: Buffer, from: number, to: number, ts: number): void {
    if (ts !== this.sampleTs) this.endSample(ts);
    const type = buf[from]! & 0x1f;
    if (type >= 1 && type <= 23) this.nal(buf, from, to);
    else if (type === 24) {
      // STAP-A: 16-bit size, NAL, …
      for (let at = from + 1; at + 2 <= to;) {
        const n = buf.readUInt16BE(at);
        if (at + 2 + n > to) break;
        this.nal(buf, at + 2, at + 2 + n);
        at += 2 + n;
      }
    } else if (type === 28 && to - from > 2) {
      const fu = buf[from + 1]!;
      if (fu & 0x80) {
        if (!this.room(5 + to - from)) return;
        this.fuAt = this.used;
        this.used += 4;
        this.arena[this.used++] = (buf[from]! & 0xe0) | (fu & 0x1f);
        if ((fu & 0x1f) === 5) this.sampleKey = true;
      }
      if (this.fuAt < 0 || !this.room(to - from - 2)) return;
      buf.copy(this.arena, this.used, from + 2, to);
      this.used += to - from - 2;
      if (fu & 0x40) {
        this.arena.writeUInt32BE(this.used - this.fuAt - 4, this.fuAt);
        this.fuAt = -1;
      }
    }
  }

  private nal(buf: Buffer, from: number, to: number): void {
    if (!this.room(4 + to - from)) return;
    this.arena.writeUInt32BE(to - from, this.used);
    buf.copy(this.arena, this.used + 4, from, to);
    this.used += 4 + to - from;
    if ((buf[from]! & 0x1f) === 5) this.sampleKey = true;
  }

  private room(n: number): boolean {
    if (this.used + n <= ARENA_BYTES) return true;
    this.dropped++;
    return false;
  }

  /** The access unit at `sampleTs` is whole: count it; an IDR starts a new fragment. */
  private endSample(nextTs: number): void {
    // A NAL whose last FU-A fragment was lost stays as it is; nothing more is added to it.
    this.fuAt = -1;
    // A run of samples longer than a fragment holds is cut where it is.
    if (this.samples === MAX_SAMPLES) this.cut();
    if (this.sampleTs >= 0 && this.used > this.sampleStart) {
      if (this.sampleKey && this.samples > 0) {
        // The IDR belongs to the next fragment: write what came before it.
        this.cut();
      }
      if (this.samples < MAX_SAMPLES) {
        const i = this.samples++;
        this.sizes[i] = this.used - this.sampleStart;
        this.keys[i] = this.sampleKey ? 1 : 0;
        this.durations[i] = (nextTs - this.sampleTs) >>> 0;
      }
      this.sampleStart = this.used;
    }
    this.sampleTs = nextTs;
    this.sampleKey = false;
  }

  /** Writes the samples counted and moves the sample being built to the arena's start. */
  private cut(): void {
    const pending = this.used - this.sampleStart;
    this.writeFragment(this.sampleStart);
    this.arena.copy(this.arena, 0, this.sampleStart, this.sampleStart + pending);
    this.used = pending;
    this.sampleStart = 0;
  }

  /** moof + mdat of the samples counted, whose bytes are arena[0, end). */
  private writeFragment(end: number): void {
    const n = this.samples;
    const m = this.moof;
    let at = 0;
    const box = (type: string): number => {
      const start = at;
      m.write(type, at + 4, 'latin1');
      at += 8;
      return start;
    };
    const close = (start: number): void => {
      m.writeUInt32BE(at - start, start);
    };
    const u32 = (v: number): void => {
      m.writeUInt32BE(v >>> 0, at);
      at += 4;
    };
    const moof = box('moof');
    const mfhd = box('mfhd');
    u32(0);
    u32(++this.seq);
    close(mfhd);
    const traf = box('traf');
    const tfhd = box('tfhd');
    u32(0x020000); // default-base-is-moof
    u32(TRACK_ID);
    close(tfhd);
    const tfdt = box('tfdt');
    u32(0x01000000); // version 1: 64-bit time
    u32(Math.floor(this.decodeTime / 2 ** 32));
    u32(this.decodeTime);
    close(tfdt);
    const trun = box('trun');
    u32(0x000701); // data offset, durations, sizes, flags
    u32(n);
    const offsetAt = at;
    u32(0);
    for (let i = 0; i < n; i++) {
      u32(this.durations[i]!);
      u32(this.sizes[i]!);
      u32(this.keys[i] ? 0x02000000 : 0x01010000);
      this.decodeTime += this.durations[i]!;
    }
    close(trun);
    close(traf);
    close(moof);
    m.writeUInt32BE(at + 8, offsetAt); // data starts after the moof and the mdat header
    this.mdatHead.writeUInt32BE(8 + end, 0);
    this.mdatHead.write('mdat', 4, 'latin1');
    writeSync(this.fd, m, 0, at);
    writeSync(this.fd, this.mdatHead, 0, 8);
    writeSync(this.fd, this.arena, 0, end);
    this.samples = 0;
    this.fragments++;
  }
}
