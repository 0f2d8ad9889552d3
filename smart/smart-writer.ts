/**
 * The smart stream of one ingest session: MPEG-TS bytes from ffmpeg's data output in,
 * smart files and `smart` index entries out (docs/design/architecture.md sections 1 and 5).
 *
 * Pipeline per packet: TS demux (smart/ts-demux.ts) → the first video PES gives the
 * origin of the fMP4's timeline (see below) → stream type and payload checked
 * (ONVIF XML, KLV) → per-camera rate limit → content parsed (smart/onvif-meta.ts) →
 * queued. Every FLUSH_MS the queue is timed, written and committed.
 *
 * Time (docs/design/time.md): ffmpeg writes the fMP4 video with decode times starting at 0
 * on the first keyframe it copies, while the TS output's times start at the input's
 * start. Our TS output therefore also carries exactly that first keyframe (`-frames:v 1`,
 * ffmpeg/ffmpeg-ingest.ts): its DTS is the origin, and a packet's media time on the
 * video's timeline is (PTS − origin) / 90 kHz. The segment writer's session anchor
 * turns that into wall-clock ms (`wallMsAt`), the same mapping the video's GOPs get.
 * Packets wait in the queue until both the origin and the anchor exist (the first
 * GOP), bounded by MAX_PENDING_*.
 *
 * Durability (invariant 2): records are appended, the file is fdatasync'ed, then the
 * index entries are committed; a crash loses at most the last FLUSH_MS of packets.
 * Files rotate every `segmentMs`, like video segments; keys [camera, ms, seq] stay
 * ordered across sessions (times never go back; seq splits equal ms).
 *
 * Bad input never reaches the video: every problem is counted (smartStats), logged
 * once per kind and session, and the packet skipped. A flooding track is capped by a
 * token bucket (packets and bytes per second).
 */
import { join } from 'node:path';
import type { RecorderIndex } from '../index/db.ts';
import type { SmartFileRecord, SmartKey, SmartRecord } from '../index/smart.ts';
import type { Logger } from '../lib/log.ts';
import type { Clock } from '../lib/time.ts';
import { SmartPacketError, classifyPayload, parseSmartPayload, type SmartContent } from './onvif-meta.ts';
import { encodeFileHeader, encodeRecord, type SmartKind } from './smart-frame.ts';
import { TsDemuxer, isVideoStreamType, type PesPacket } from './ts-demux.ts';
import { smartRelPath } from '../storage/layout.ts';
import { SegmentFile } from '../storage/segment-file.ts';

export const FLUSH_MS = 1000;
/** Sustained packets and bytes per second a camera's smart stream may store; twice that as burst. */
export const SMART_MAX_PACKETS_PER_SEC = 50;
export const SMART_MAX_BYTES_PER_SEC = 1024 * 1024;
/** Queue bounds while waiting for the first GOP or a slow disk. */
const MAX_PENDING_PACKETS = 2000;
const MAX_PENDING_BYTES = 8 * 1024 * 1024;
/** PMT stream types that carry data tracks: private PES (ffmpeg's choice) and metadata PES. */
const DATA_STREAM_TYPES = new Set([0x06, 0x15]);

export const SKIP_REASONS = [
  'malformedXml',
  'malformedKlv',
  'unknownPayload',
  'unknownStreamType',
  'truncatedPes',
  'syncLost',
  'badSection',
  'noTimestamp',
  'flood',
  'overflow',
  'unanchored',
  'writeError',
  'badSei',
] as const;
export type SmartSkipReason = (typeof SKIP_REASONS)[number];

export interface SmartStats {
  packets: number;
  bytes: number;
  /** Good packets not stored because no video is recorded at their time (plan, storage). */
  notRecorded: number;
  skipped: Record<SmartSkipReason, number>;
}

const statsByCamera = new Map<string, SmartStats>();

/**
 * Smart files a writer of this process has open (paths relative to the data dir).
 * An index entry still marked `open` whose file is not here was left by a crash:
 * nothing appends to it any more, so retention may delete it.
 */
export const liveSmartFiles = new Set<string>();

/** What the smart streams of `camera` stored and skipped since this process started. */
export function smartStats(camera: string): SmartStats {
  let s = statsByCamera.get(camera);
  if (!s) {
    s = { packets: 0, bytes: 0, notRecorded: 0, skipped: Object.fromEntries(SKIP_REASONS.map((r) => [r, 0])) as Record<SmartSkipReason, number> };
    statsByCamera.set(camera, s);
  }
  return s;
}

export interface SmartWriterDeps {
  index: RecorderIndex;
  dataDir: string;
  clock: Clock;
  log: Logger;
  segmentMs: number;
  /** Wall-clock ms of a time (s) on the video's fMP4 timeline; null before the first GOP. */
  wallMsAt(mediaSec: number): number | null;
  /** Whether packets at `ms` are stored (video written, or held for pre-record); default all. */
  keep?(ms: number): boolean;
}

interface Pending {
  kind: SmartKind;
  streamType: number;
  /** 90 kHz PTS of a TS packet (timed through the origin)… */
  pts?: number;
  /** …or the time (s) on the fMP4 timeline of SEI user data taken from a video sample. */
  mediaSec?: number;
  payload: Buffer;
  content: SmartContent;
}

interface OpenFile {
  file: SegmentFile;
  entry: SmartFileRecord;
}

/** A token bucket: `take` is false when the rate is exceeded. */
class Bucket {
  private tokens: number;
  private at: number;
  constructor(
    private readonly perSec: number,
    private readonly burst: number,
    nowMs: number,
  ) {
    this.tokens = burst;
    this.at = nowMs;
  }
  take(n: number, nowMs: number): boolean {
    this.tokens = Math.min(this.burst, this.tokens + ((nowMs - this.at) * this.perSec) / 1000);
    this.at = nowMs;
    if (this.tokens < n) return false;
    this.tokens -= n;
    return true;
  }
}

function isVideo(pes: Omit<PesPacket, 'payload'>): boolean {
  return isVideoStreamType(pes.streamType) || (pes.streamId & 0xf0) === 0xe0;
}

export class SmartWriter {
  private readonly demux: TsDemuxer;
  private readonly stats: SmartStats;
  private readonly logged = new Set<SmartSkipReason>();
  private readonly packetsBucket: Bucket;
  private readonly bytesBucket: Bucket;
  private readonly timer: NodeJS.Timeout;
  private pending: Pending[] = [];
  private pendingBytes = 0;
  private originTicks: number | null = null;
  private current: OpenFile | null = null;
  private chain: Promise<void> = Promise.resolve();
  private lastMs: number;
  private lastSeq: number;
  private closed = false;
  /** Packets this session stored (tests and logs). */
  stored = 0;

  constructor(
    private readonly camera: string,
    private readonly deps: SmartWriterDeps,
  ) {
    this.stats = smartStats(camera);
    const now = deps.clock.nowMs();
    this.packetsBucket = new Bucket(SMART_MAX_PACKETS_PER_SEC, 2 * SMART_MAX_PACKETS_PER_SEC, now);
    this.bytesBucket = new Bucket(SMART_MAX_BYTES_PER_SEC, 2 * SMART_MAX_BYTES_PER_SEC, now);
    const last: SmartKey | null = deps.index.smart.lastKey(camera);
    this.lastMs = last ? last[1] : -1;
    this.lastSeq = last ? last[2] : -1;
    this.demux = new TsDemuxer({
      onPes: (pes) => this.onPes(pes),
      onPesStart: (pes) => {
        // The first video PES never completes (its stream has one frame): its header is the origin.
        if (this.originTicks === null && isVideo(pes)) this.originTicks = pes.dts ?? pes.pts ?? null;
      },
      wantsPayload: (streamType) => !isVideoStreamType(streamType),
      onSkip: (reason, detail) => this.skip(reason, detail),
    });
    this.timer = setInterval(() => {
      this.chain = this.chain.then(() => this.flush(false));
    }, FLUSH_MS);
    this.timer.unref();
  }

  /** Bytes of ffmpeg's TS data output, in any cut. Never throws. */
  feed(bytes: Buffer): void {
    if (this.closed) return;
    try {
      this.demux.push(bytes);
    } catch (err) {
      // A bug of ours must not stop the video; the stream is skipped from here.
      this.skip('truncatedPes', `demux failed: ${(err as Error).message}`);
    }
  }

  /** Ends the session: the queue is written and the file closed. Safe to call twice. */
  async close(): Promise<void> {
    if (this.closed) return this.chain;
    this.closed = true;
    clearInterval(this.timer);
    this.demux.end();
    this.chain = this.chain.then(async () => {
      await this.flush(true);
      await this.closeFile();
      const skipped = Object.entries(this.stats.skipped).filter(([, n]) => n > 0);
      if (skipped.length > 0)
        this.deps.log.info(
          { camera: this.camera, stored: this.stored, skipped: Object.fromEntries(skipped) },
          'smart stream: session ended with skipped packets',
        );
    });
    return this.chain;
  }

  /** Counts (and logs once) packets a caller could not read, e.g. video samples with bad SEI. */
  countSkipped(reason: SmartSkipReason, detail: string, n = 1): void {
    this.skip(reason, detail, n);
  }

  private skip(reason: SmartSkipReason, detail: string, n = 1): void {
    this.stats.skipped[reason] += n;
    if (this.logged.has(reason)) return;
    this.logged.add(reason);
    this.deps.log.warn(
      { camera: this.camera, reason, detail },
      'smart stream: skipping bad packets (counted in /smart/stats; further ones of this kind are not logged)',
    );
  }

  private onPes(pes: PesPacket): void {
    if (isVideo(pes)) return; // only its start matters (onPesStart)
    if (!DATA_STREAM_TYPES.has(pes.streamType)) return this.skip('unknownStreamType', `stream type 0x${pes.streamType.toString(16)} on PID ${pes.pid}`);
    if (pes.pts === undefined) return this.skip('noTimestamp', `PES without PTS on PID ${pes.pid}`);
    const kind = classifyPayload(pes.payload, pes.registration);
    if (!kind) return this.skip('unknownPayload', `payload starting 0x${pes.payload.subarray(0, 4).toString('hex')} is neither XML nor KLV`);
    // The cap comes before parsing, so a flood costs no XML parsing either.
    const now = this.deps.clock.nowMs();
    if (!this.packetsBucket.take(1, now) || !this.bytesBucket.take(pes.payload.length, now)) {
      return this.skip('flood', `over ${SMART_MAX_PACKETS_PER_SEC} packets or ${SMART_MAX_BYTES_PER_SEC} bytes per second`);
    }
    let content: SmartContent;
    try {
      content = parseSmartPayload(kind, pes.payload);
    } catch (err) {
      if (err instanceof SmartPacketError) return this.skip(err.problem, err.message);
      throw err;
    }
    this.queue({ kind, streamType: pes.streamType, pts: pes.pts, payload: Buffer.from(pes.payload), content });
  }

  /**
   * SEI user data found in a video sample (media/codec/sei-userdata.ts): stored like a data
   * track packet, timed by the sample's decode time. Never throws.
   */
  addSei(msg: { uuid: string; data: Buffer; mediaSec: number; streamType: number }): void {
    if (this.closed) return;
    const payload = Buffer.concat([Buffer.from(msg.uuid, 'hex'), msg.data]);
    const now = this.deps.clock.nowMs();
    if (!this.packetsBucket.take(1, now) || !this.bytesBucket.take(payload.length, now)) {
      return this.skip('flood', `over ${SMART_MAX_PACKETS_PER_SEC} packets or ${SMART_MAX_BYTES_PER_SEC} bytes per second`);
    }
    // Vendors that put ONVIF-style XML in their SEI get it indexed; anything else by UUID.
    let content: SmartContent = { classes: [], rules: [], topics: [], objects: 0 };
    let text = msg.data;
    while (text.length > 0 && text[text.length - 1] === 0) text = text.subarray(0, -1); // C strings end in NUL
    if (classifyPayload(text) === 'onvif') {
      try {
        content = parseSmartPayload('onvif', text);
      } catch {
        /* not ONVIF after all: indexed by its UUID only */
      }
    }
    content = { ...content, topics: [`sei:${msg.uuid}`, ...content.topics] };
    this.queue({ kind: 'sei', streamType: msg.streamType, mediaSec: msg.mediaSec, payload, content });
  }

  private queue(p: Pending): void {
    this.pending.push(p);
    this.pendingBytes += p.payload.length;
    while (this.pending.length > MAX_PENDING_PACKETS || this.pendingBytes > MAX_PENDING_BYTES) {
      this.pendingBytes -= this.pending.shift()!.payload.length;
      this.skip('overflow', 'queue full (no video timeline yet, or a slow disk)');
    }
  }

  private wallMs(p: Pending): number | null {
    let sec: number;
    if (p.mediaSec !== undefined) sec = p.mediaSec;
    else if (this.originTicks === null || p.pts === undefined) return null;
    else sec = (p.pts - this.originTicks) / 90000;
    const ms = this.deps.wallMsAt(sec);
    return ms === null ? null : Math.round(ms);
  }

  private async flush(final: boolean): Promise<void> {
    if (this.pending.length === 0) return;
    const ready: { p: Pending; ms: number }[] = [];
    while (this.pending.length > 0) {
      const ms = this.wallMs(this.pending[0]!);
      if (ms === null) break;
      const p = this.pending.shift()!;
      this.pendingBytes -= p.payload.length;
      if (this.deps.keep && !this.deps.keep(ms)) this.stats.notRecorded++;
      else ready.push({ p, ms });
    }
    if (final && this.pending.length > 0) {
      this.skip('unanchored', 'session ended before the first GOP gave the packets a time', this.pending.length);
      this.pending = [];
      this.pendingBytes = 0;
    }
    if (ready.length === 0) return;
    try {
      await this.write(ready);
    } catch (err) {
      this.skip('writeError', (err as Error).message, ready.length);
      await this.closeFile().catch(() => undefined);
    }
  }

  private async write(ready: { p: Pending; ms: number }[]): Promise<void> {
    let bufs: Buffer[] = [];
    let puts: { key: SmartKey; value: SmartRecord }[] = [];
    for (const { p, ms: rawMs } of ready) {
      const ms = Math.max(rawMs, this.lastMs); // keys never go back in time
      if (this.current && ms - this.current.entry.startMs >= this.deps.segmentMs) {
        await this.commit(bufs, puts);
        bufs = [];
        puts = [];
        await this.closeFile();
      }
      const f = this.current ?? (await this.openFile(ms));
      const seq = ms === this.lastMs ? this.lastSeq + 1 : 0;
      const mediaTicks90k = p.pts ?? Math.round((p.mediaSec ?? 0) * 90000);
      const rec = encodeRecord({ kind: p.kind, streamType: p.streamType, timeMs: ms, mediaTicks90k, payload: p.payload });
      const offset = f.file.size + bufs.reduce((n, b) => n + b.length, 0);
      bufs.push(rec);
      const c = p.content;
      puts.push({
        key: [this.camera, ms, seq],
        value: {
          fileMs: f.entry.startMs,
          offset,
          size: rec.length,
          kind: p.kind,
          ...(c.classes.length > 0 ? { classes: c.classes } : {}),
          ...(c.rules.length > 0 ? { rules: c.rules } : {}),
          ...(c.topics.length > 0 ? { topics: c.topics } : {}),
          ...(c.objects > 0 ? { objects: c.objects } : {}),
          ...(c.contentMs !== undefined ? { contentMs: c.contentMs } : {}),
        },
      });
      this.lastMs = ms;
      this.lastSeq = seq;
    }
    await this.commit(bufs, puts);
  }

  /** Append → fdatasync → commit the entries that point at those bytes (invariant 2). */
  private async commit(bufs: Buffer[], puts: { key: SmartKey; value: SmartRecord }[]): Promise<void> {
    const f = this.current;
    if (!f || bufs.length === 0) return;
    const bytes = Buffer.concat(bufs);
    await f.file.append(bytes);
    await f.file.sync();
    f.entry.bytes = f.file.size;
    f.entry.records += puts.length;
    f.entry.endMs = puts[puts.length - 1]!.key[1];
    await this.deps.index.smart.putPackets(f.entry, puts);
    this.stored += puts.length;
    this.stats.packets += puts.length;
    this.stats.bytes += bytes.length;
  }

  private async openFile(startMs: number): Promise<OpenFile> {
    // A name already taken (same ms as a file of an earlier session) moves on by 1 ms.
    for (let ms = startMs; ; ms++) {
      const rel = smartRelPath(this.camera, ms);
      try {
        const file = await SegmentFile.create(join(this.deps.dataDir, rel), encodeFileHeader(ms));
        this.current = { file, entry: { camera: this.camera, startMs: ms, endMs: ms, file: rel, bytes: file.size, records: 0, open: true } };
        liveSmartFiles.add(rel);
        return this.current;
      } catch (err) {
        const errno = ((err as { details?: { errno?: string } }).details ?? {}).errno;
        if (errno !== 'EEXIST' || ms - startMs > 1000) throw err;
      }
    }
  }

  private async closeFile(): Promise<void> {
    const f = this.current;
    if (!f) return;
    this.current = null;
    liveSmartFiles.delete(f.entry.file);
    await f.file.close();
    if (f.entry.records === 0) return; // never indexed: an empty file reconcile may remove
    f.entry.open = false;
    await this.deps.index.smart.putFile(f.entry);
  }
}
