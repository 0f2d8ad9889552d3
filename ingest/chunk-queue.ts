/**
 * The fMP4 chunks an ingest of our own (native, MP2P) has made and its consumer (the
 * segment writer, through the camera actor) has not taken yet, with back-pressure: past
 * `highBytes` waiting, the owner is asked to stop reading the camera (`pause`, TCP
 * back-pressure), and below `lowBytes` to go on (`resume`). A slow disk thus slows the
 * camera's socket instead of growing memory. The owner says when no more will come
 * (`end`); the consumer's `chunks()` then returns once it has taken what waits.
 * ffmpeg's ingest gets the same from its pipe (ffmpeg/ffmpeg-ingest.ts).
 */
import type { Fmp4Chunk } from '../media/mp4/fmp4-splitter.ts';

export interface ChunkQueueOptions {
  highBytes: number;
  lowBytes: number;
  /** Stop reading the camera; false when it cannot be yet (the queue then asks again at the next chunk). */
  pause(): boolean;
  resume(): void;
}

export class ChunkQueue {
  /** The owner was asked to pause and has not been resumed. */
  paused = false;
  private readonly queue: Fmp4Chunk[] = [];
  private bytes = 0;
  private ended = false;
  private wake: (() => void) | null = null;

  constructor(private readonly opts: ChunkQueueOptions) {}

  push(chunks: readonly Fmp4Chunk[]): void {
    if (chunks.length === 0) return;
    for (const c of chunks) {
      this.queue.push(c);
      this.bytes += c.bytes.length;
    }
    if (!this.paused && this.bytes > this.opts.highBytes) this.paused = this.opts.pause();
    this.notify();
  }

  /** No more chunks: the consumer gets what waits, then its iteration ends. */
  end(): void {
    this.ended = true;
    this.notify();
  }

  async *chunks(): AsyncGenerator<Fmp4Chunk> {
    for (;;) {
      const c = this.queue.shift();
      if (c) {
        this.bytes -= c.bytes.length;
        if (this.paused && this.bytes < this.opts.lowBytes) {
          this.paused = false;
          this.opts.resume();
        }
        yield c;
        continue;
      }
      if (this.ended) return;
      await new Promise<void>((r) => (this.wake = r));
    }
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }
}
