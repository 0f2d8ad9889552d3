/**
 * Live fan-out: hands the init and fragments that a camera's running ingest produces
 * to any number of live viewers, without a second RTSP session and without letting
 * a slow viewer grow memory.
 *
 * Per camera a LiveChannel keeps the init in force and the newest fragment that starts
 * with a keyframe (a joining viewer gets init + that GOP and sees a picture at once).
 * Buffers are shared with the ingest (never copied here, never mutated anywhere).
 *
 * Per viewer a bounded queue (invariants):
 * - at most one message is in flight to its sink (delivered, `done` not yet called);
 * - queued fragments never exceed `maxQueuedBytes`, except a single keyframe
 *   fragment larger than that on an otherwise empty queue (or nothing could flow);
 * - when a fragment would overflow the queue, every queued fragment is dropped and
 *   the viewer resumes at the next keyframe fragment, so it skips ahead to live
 *   instead of falling further behind. Init and status messages are never dropped
 *   (they are small and a fragment is useless without its init).
 * So memory per viewer is bounded by maxQueuedBytes + two fragments, whatever the
 * viewer does.
 */
import type { Fmp4Chunk } from '../media/mp4/fmp4-splitter.ts';
import type { InitInfo } from '../media/mp4/init-info.ts';

export type LiveMessage =
  | { kind: 'init'; bytes: Buffer; info: InitInfo }
  | { kind: 'fragment'; bytes: Buffer; keyframe: boolean }
  /** The ingest attempt ended (camera offline, stopped by plan); a new init follows if it comes back. */
  | { kind: 'ended'; reason: string }
  /** The channel is gone (camera removed, node stopping): nothing follows. */
  | { kind: 'closed'; reason: string };

/** Where a viewer's messages go: call `done` once the message has left (e.g. written to the socket). */
export interface LiveSink {
  deliver(msg: LiveMessage, done: () => void): void;
}

export interface LiveViewerStats {
  queuedBytes: number;
  queuedMessages: number;
  inFlight: boolean;
  deliveredFragments: number;
  droppedFragments: number;
  /** Times the backlog was dropped to skip ahead to the next keyframe. */
  skips: number;
}

/** Default per-viewer backlog: a few GOPs at camera bitrates (8 Mbps, 2 s GOP ≈ 2 MB). */
export const DEFAULT_MAX_QUEUED_BYTES = 8 * 1024 * 1024;

export class LiveViewer {
  private readonly queue: LiveMessage[] = [];
  private queuedBytes = 0;
  private inFlight = false;
  private waitKeyframe = false;
  /** No more messages are accepted (unsubscribed). */
  private closed = false;
  /** The client left: nothing more is delivered, the queue is freed. */
  private released = false;
  private delivered = 0;
  private dropped = 0;
  private skips = 0;

  constructor(
    private readonly sink: LiveSink,
    private readonly maxQueuedBytes: number,
    private readonly onClose: (v: LiveViewer) => void,
  ) {}

  offer(msg: LiveMessage): void {
    if (this.closed) return;
    if (msg.kind === 'fragment') {
      if (this.waitKeyframe && !msg.keyframe) {
        this.dropped++;
        return;
      }
      const queuedFragments = this.queue.some((m) => m.kind === 'fragment');
      if (queuedFragments && this.queuedBytes + msg.bytes.length > this.maxQueuedBytes) {
        this.dropBacklog();
        if (!msg.keyframe) {
          this.waitKeyframe = true;
          this.dropped++;
          return;
        }
      }
      this.waitKeyframe = false;
      this.queuedBytes += msg.bytes.length;
    } else if (msg.kind === 'init') {
      // Fragments after a new init must start at a keyframe too.
      this.waitKeyframe = false;
    } else if (msg.kind === 'closed') {
      // Nothing follows: old video is not worth delivering, the channel lets go now,
      // and the last message still goes out (if the sink ever takes it).
      this.dropBacklog();
      this.queue.push(msg);
      this.close(false);
      this.pump();
      return;
    }
    this.queue.push(msg);
    this.pump();
  }

  private dropBacklog(): void {
    if (!this.queue.some((m) => m.kind === 'fragment')) return;
    let n = 0;
    for (let i = this.queue.length - 1; i >= 0; i--) {
      const m = this.queue[i]!;
      if (m.kind !== 'fragment') continue;
      this.queuedBytes -= m.bytes.length;
      this.queue.splice(i, 1);
      n++;
    }
    this.dropped += n;
    this.skips++;
  }

  private pump(): void {
    if (this.inFlight || this.released) return;
    const msg = this.queue.shift();
    if (!msg) return;
    if (msg.kind === 'fragment') {
      this.queuedBytes -= msg.bytes.length;
      this.delivered++;
    }
    this.inFlight = true;
    let called = false;
    this.sink.deliver(msg, () => {
      if (called) return;
      called = true;
      this.inFlight = false;
      this.pump();
    });
  }

  /**
   * Unsubscribes: nothing more is accepted. By default (the client left) the queue
   * is released too; a channel closing keeps it so its last message goes out. Idempotent.
   */
  close(release = true): void {
    if (release) {
      this.released = true;
      this.queue.length = 0;
      this.queuedBytes = 0;
    }
    if (this.closed) return;
    this.closed = true;
    this.onClose(this);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  stats(): LiveViewerStats {
    return {
      queuedBytes: this.queuedBytes,
      queuedMessages: this.queue.length,
      inFlight: this.inFlight,
      deliveredFragments: this.delivered,
      droppedFragments: this.dropped,
      skips: this.skips,
    };
  }
}

/** One camera's live stream (or one derived stream, e.g. its transcoded preview). */
export class LiveChannel {
  private init: { bytes: Buffer; info: InitInfo } | null = null;
  private lastGop: Buffer | null = null;
  private readonly viewers = new Set<LiveViewer>();
  private closedReason: string | null = null;
  /** Called when the last viewer leaves (a derived stream stops its transcoder). */
  onIdle: (() => void) | null = null;

  get currentInit(): InitInfo | null {
    return this.init?.info ?? null;
  }

  get viewerCount(): number {
    return this.viewers.size;
  }

  get isClosed(): boolean {
    return this.closedReason !== null;
  }

  publish(chunk: Fmp4Chunk): void {
    if (this.closedReason !== null) return;
    if (chunk.kind === 'init') {
      this.init = { bytes: chunk.bytes, info: chunk.info };
      this.lastGop = null;
      for (const v of this.viewers) v.offer({ kind: 'init', bytes: chunk.bytes, info: chunk.info });
      return;
    }
    if (!this.init) return; // a fragment without an init cannot be played (splitter forbids it anyway)
    if (chunk.keyframe) this.lastGop = chunk.bytes;
    for (const v of this.viewers) v.offer({ kind: 'fragment', bytes: chunk.bytes, keyframe: chunk.keyframe });
  }

  /** The producing ingest ended; viewers stay subscribed for the next one. */
  ended(reason: string): void {
    if (this.closedReason !== null) return;
    this.init = null;
    this.lastGop = null;
    for (const v of this.viewers) v.offer({ kind: 'ended', reason });
  }

  /** No more video will come: every viewer gets `closed` and is then unsubscribed. */
  close(reason: string): void {
    if (this.closedReason !== null) return;
    this.closedReason = reason;
    this.init = null;
    this.lastGop = null;
    for (const v of [...this.viewers]) v.offer({ kind: 'closed', reason });
  }

  subscribe(sink: LiveSink, maxQueuedBytes = DEFAULT_MAX_QUEUED_BYTES): LiveViewer {
    const viewer = new LiveViewer(sink, maxQueuedBytes, (v) => {
      this.viewers.delete(v);
      if (this.viewers.size === 0) this.onIdle?.();
    });
    if (this.closedReason !== null) {
      viewer.offer({ kind: 'closed', reason: this.closedReason });
      return viewer;
    }
    this.viewers.add(viewer);
    if (this.init) {
      viewer.offer({ kind: 'init', bytes: this.init.bytes, info: this.init.info });
      if (this.lastGop) viewer.offer({ kind: 'fragment', bytes: this.lastGop, keyframe: true });
    }
    return viewer;
  }

  stats(): LiveViewerStats[] {
    return [...this.viewers].map((v) => v.stats());
  }
}
