/**
 * Whether a source (a camera's stream) has gone silent, judged by bytes arriving from
 * it, never by how fast we consume them. While the reader holds the source back (the
 * segment writer is behind: a slow disk; the pipe from ffmpeg is paused, the MP2P
 * socket too) its silence is not counted, and the count starts afresh when reading
 * resumes: a slow disk must never look like a dead camera (issue 14). Before, the
 * ingest watchdog timed the fragments the writer took, so a disk that stalled for the
 * stall timeout restarted a camera that was streaming all along.
 */
import type { Clock } from './time.ts';

export class SilenceWatch {
  private lastMs: number;
  private held = false;

  constructor(private readonly clock: Pick<Clock, 'nowMs'> = { nowMs: () => Date.now() }) {
    this.lastMs = clock.nowMs();
  }

  /** Bytes arrived from the source. */
  heard(): void {
    this.lastMs = this.clock.nowMs();
  }

  /** The reader stops taking bytes (its consumer is behind): silence is not counted meanwhile. */
  hold(): void {
    this.held = true;
  }

  /** The reader takes bytes again: silence counts from now. */
  release(): void {
    if (!this.held) return;
    this.held = false;
    this.lastMs = this.clock.nowMs();
  }

  get holding(): boolean {
    return this.held;
  }

  /** How long the source has sent nothing while we were ready to read it (0 while held). */
  silentMs(): number {
    return this.held ? 0 : this.clock.nowMs() - this.lastMs;
  }
}
