/**
 * Output decode times for a sequence of fragments taken from several segments, maybe
 * with gaps between them (pure). Within one ingest session the video decode time of a
 * segment continues the previous one exactly, and the shift is kept. After a
 * discontinuity (a gap, a new session, a restart) the next segment is rebased so its
 * earliest track starts where the output so far ended, put on the previous video's
 * frame grid; all tracks of a segment move by the same time, so A/V sync is kept and a
 * gap is skipped, never played as a hole.
 */
import type { TrackFragment } from './sample-table.ts';

export class OutputTimeline {
  private prevVideoNext: bigint | null = null;
  private outEndSec = 0;
  private shift = new Map<number, bigint>();
  private videoGrid: { lastDts: number; frame: number } | null = null;
  private started = false;

  /** `startSec`: output time of the first sample (a session continuing earlier output). */
  constructor(
    private readonly timescales: ReadonlyMap<number, number>,
    private readonly videoId: number,
    private readonly startSec = 0,
  ) {}

  /** Latest end over tracks of what was placed so far, in output seconds. */
  get endSec(): number {
    return this.started ? this.outEndSec : this.startSec;
  }

  private ts(trackId: number): number {
    return this.timescales.get(trackId) ?? 1;
  }

  /**
   * Called with the first fragment of every segment (in output order); returns the
   * shift (output minus input ticks) per track for this segment's fragments.
   */
  enterSegment(head: readonly Pick<TrackFragment, 'trackId' | 'baseDecodeTime'>[]): ReadonlyMap<number, bigint> {
    const headVideo = head.find((t) => t.trackId === this.videoId);
    const continuous = this.prevVideoNext !== null && headVideo !== undefined && headVideo.baseDecodeTime === this.prevVideoNext;
    if (!continuous) {
      if (this.videoGrid) {
        const vts = this.ts(this.videoId);
        const frames = Math.max(1, Math.ceil((this.outEndSec * vts - this.videoGrid.lastDts) / this.videoGrid.frame - 1e-9));
        this.outEndSec = (this.videoGrid.lastDts + frames * this.videoGrid.frame) / vts;
      }
      const startSec = Math.min(...head.map((t) => Number(t.baseDecodeTime) / this.ts(t.trackId)));
      const outStart = this.started ? this.outEndSec : this.startSec;
      this.shift = new Map(head.map((t) => [t.trackId, BigInt(Math.round((outStart - startSec) * this.ts(t.trackId)))]));
    }
    this.started = true;
    return this.shift;
  }

  /** Called after each fragment is placed. */
  afterFragment(tracks: readonly Pick<TrackFragment, 'trackId' | 'baseDecodeTime' | 'durations' | 'durationTicks'>[]): void {
    for (const t of tracks) {
      const ts = this.ts(t.trackId);
      const n = t.durations.length;
      // ffmpeg may close a session's last fragment with a near-zero last sample; count it
      // at least as long as the one before, or the next segment would start on the same
      // frame tick (players counting in frames would see a repeated time).
      const lastDur = t.durations[n - 1] ?? 0;
      const pad = Math.max(0, (t.durations[n - 2] ?? 1) - lastDur);
      const shift = this.shift.get(t.trackId) ?? 0n;
      const end = Number(t.baseDecodeTime + BigInt(t.durationTicks + pad) + shift) / ts;
      if (end > this.outEndSec) this.outEndSec = end;
      if (t.trackId === this.videoId && n > 0) {
        this.prevVideoNext = t.baseDecodeTime + BigInt(t.durationTicks);
        let lastDts = Number(t.baseDecodeTime + shift);
        for (let i = 0; i < n - 1; i++) lastDts += t.durations[i]!;
        this.videoGrid = { lastDts, frame: Math.max(t.durations[n - 2] ?? 0, lastDur, 1) };
      }
    }
  }
}
