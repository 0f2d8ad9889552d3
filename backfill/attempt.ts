/**
 * One back-fill attempt on one closed gap record: find where the index still has no
 * video inside it, pull those holes from the camera's edge storage (at most
 * `backfillPullSeconds` per pull, each staged to a temp file first), write what came
 * as `backfill` segments into the holes only, then split the gap record by what the
 * index now covers (index/gap-ledger.ts settleAttempt).
 *
 * Placement (docs/design/backfill.md): a fragment takes its time from the camera's clock
 * or the interval asked for (ingest/edge-replay.ts); it goes in only if it lies inside a
 * hole, give or take FIT_TOLERANCE_MS (the live side is timed by arrival, so its edges
 * are a little late), and is then trimmed to the hole: back-filled video never
 * overlaps stored video. The first error ends the attempt; holes pulled before it keep
 * their video. Segments are written in the camera's format, else its pool's, as live
 * video is (storage/segment-format.ts segmentFormatOf).
 */
import { createReadStream } from 'node:fs';
import { pipeline } from 'node:stream';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { RecorderIndex } from '../index/db.ts';
import { pieces, settleAttempt, subtract, type Interval } from '../index/gap-ledger.ts';
import type { CameraConfig, FenceStamp, GapRecord, SegmentRecord } from '../index/records.ts';
import type { RecorderConfig } from '../lib/config.ts';
import { RecorderError, toRecorderError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import type { Clock } from '../lib/time.ts';
import { pullEdgeInterval, type EdgePullOptions, type EdgePullResult } from '../ingest/edge-replay.ts';
import { Fmp4Splitter, type Fmp4Chunk } from '../media/mp4/fmp4-splitter.ts';
import { SegmentWriter } from '../storage/segment-writer.ts';
import { segmentFormatOf } from '../storage/segment-format.ts';

/** A fragment may stick out of its hole by this much and is then trimmed (below one GOP). */
export const FIT_TOLERANCE_MS = 1000;
/** Holes shorter than this are not gaps (the camera actor's GAP_MIN_MS). */
export const MIN_HOLE_MS = 1000;
/** Bytes per second of replay we accept at most (32 Mbit/s), plus a fixed allowance. */
const MAX_BYTES_PER_SECOND = 4 * 1024 * 1024;

export interface AttemptDeps {
  index: RecorderIndex;
  config: RecorderConfig;
  clock: Clock;
  log: Logger;
  onSegmentClosed?: (segment: SegmentRecord) => void;
  /**
   * In a cluster: this node's id, stamped on back-filled segments as their writer with
   * fence revision 0 (no grant: they rank below every grant's live video, and above
   * unfenced video, in playback/one-timeline.ts). Copies and backups find their writer
   * by it (cluster/copies.ts, cluster/backup-sender.ts).
   */
  nodeId?: string;
  /** Pulls an interval from the camera into a staging file (ingest/edge-replay.ts; tests inject a fake camera). */
  pull?: (opts: EdgePullOptions) => Promise<EdgePullResult>;
}

export interface AttemptResult {
  records: GapRecord[];
  error: RecorderError | null;
  filledMs: number;
}

/** The fence stamp of a cluster node's back-filled segments (see AttemptDeps.nodeId). */
export function backfillFence(nodeId: string): () => Promise<FenceStamp> {
  const stamp: FenceStamp = { node: nodeId, rev: 0 };
  return () => Promise.resolve(stamp);
}

export function stagingDir(dataDir: string): string {
  return join(dataDir, 'backfill-staging');
}

/** Fits [startMs, endMs) into `hole` (see the module comment); null: leave it out. */
export function fitIntoHole(hole: Interval, startMs: number, endMs: number, toleranceMs = FIT_TOLERANCE_MS): { startMs: number; endMs: number } | null {
  if (startMs < hole.fromMs - toleranceMs || endMs > hole.toMs + toleranceMs) return null;
  const s = Math.max(startMs, hole.fromMs);
  const e = Math.min(endMs, hole.toMs);
  return e - s > 0 ? { startMs: s, endMs: e } : null;
}

/**
 * Runs one attempt and settles the gap record by what the index then covers. Never
 * throws for what the camera or the files do (that is the attempt's error, recorded in
 * the ledger); throws only when the ledger itself cannot be read or written, and then
 * the caller gives the record back with releaseAttempt.
 */
export async function runAttempt(deps: AttemptDeps, camera: CameraConfig, gap: GapRecord & { endMs: number }, signal: AbortSignal): Promise<AttemptResult> {
  const log = deps.log.child({ camera: camera.id, gapStartMs: gap.startMs });
  let error: RecorderError | null = null;
  try {
    await fillHoles(deps, camera, gap, signal, log);
  } catch (err) {
    error = toRecorderError(err);
    if (error.code === 'INTERNAL' || error.code === 'STORAGE_IO') log.error({ err }, 'back-fill attempt failed');
    else log.warn({ code: error.code, message: error.message }, 'back-fill attempt failed');
  }
  return settle(deps, camera.id, gap, error, storedIn(deps.index, camera.id, gap), signal);
}

/**
 * An attempt that threw (the index failed under it, or a bug): its record goes back to
 * the ledger with that error, as a failed attempt, so it is retried after
 * `backfillRetryMs` (or given up) instead of staying `fetching` until a restart. What
 * the index covers is read if it can be; if not, the whole record is retried.
 */
export async function releaseAttempt(
  deps: AttemptDeps,
  cameraId: string,
  gap: GapRecord & { endMs: number },
  thrown: unknown,
  signal: AbortSignal,
): Promise<AttemptResult> {
  let covered: Interval[] = [];
  try {
    covered = storedIn(deps.index, cameraId, gap);
  } catch (err) {
    deps.log.warn({ camera: cameraId, err }, 'back-fill: what the index covers could not be read; the whole gap is retried');
  }
  return settle(deps, cameraId, gap, toRecorderError(thrown), covered, signal);
}

function storedIn(index: RecorderIndex, cameraId: string, gap: GapRecord & { endMs: number }): Interval[] {
  return index.segments.timesInRange(cameraId, gap.startMs, gap.endMs).map((s) => ({ fromMs: s.startMs, toMs: s.endMs }));
}

/** Pulls every hole of the gap (piece by piece) and writes what came; the first error ends it. */
async function fillHoles(deps: AttemptDeps, camera: CameraConfig, gap: GapRecord & { endMs: number }, signal: AbortSignal, log: Logger): Promise<void> {
  const { config } = deps;
  const window = { fromMs: gap.startMs, toMs: gap.endMs };
  if (!camera.edge) throw new RecorderError('EDGE_NOT_CONFIGURED', `camera ${camera.id} has no edge storage configured`);
  const edge = camera.edge;
  // Back-filled video is stored as the camera's live video is (its format, else its pool's).
  const writeAs: CameraConfig = { ...camera, record: { ...camera.record, format: segmentFormatOf(camera, deps.index.pools.get(camera.pool)?.format) } };
  await mkdir(stagingDir(config.dataDir), { recursive: true });
  for (const hole of subtract(window, storedIn(deps.index, camera.id, gap), MIN_HOLE_MS)) {
    let writtenUntil = hole.fromMs;
    for (const piece of pieces([hole], config.backfillPullSeconds * 1000)) {
      if (piece.toMs <= writtenUntil) continue;
      const staging = join(stagingDir(config.dataDir), `${camera.id}-${piece.fromMs}.mp4`);
      const seconds = (piece.toMs - piece.fromMs) / 1000;
      try {
        const pulled = await (deps.pull ?? pullEdgeInterval)({
          template: edge.replayUrl,
          mode: edge.mode ?? 'onvif',
          rateControl: edge.rateControl ?? false,
          fromMs: piece.fromMs,
          toMs: piece.toMs,
          ffmpegPath: config.ffmpegPath,
          stagingPath: staging,
          connectTimeoutMs: 10_000,
          stallTimeoutMs: 5_000,
          // Real time plus half, and time to connect: a camera ignoring Rate-Control still fits.
          deadlineMs: 30_000 + seconds * 1500,
          maxBytes: 16 * 1024 * 1024 + seconds * MAX_BYTES_PER_SECOND,
          signal,
        });
        log.info({ fromMs: piece.fromMs, toMs: piece.toMs, clock: pulled.clockSource, fragments: pulled.fragments, bytes: pulled.bytes }, 'edge replay pulled');
        const end = await writeStaged(deps, writeAs, staging, pulled.anchorMs, { fromMs: writtenUntil, toMs: hole.toMs });
        if (end !== null) writtenUntil = Math.max(writtenUntil, end);
      } finally {
        await rm(staging, { force: true, recursive: true });
      }
    }
  }
}

/** Splits the gap record by what the index covers (index/gap-ledger.ts settleAttempt) and stores the pieces. */
async function settle(
  deps: AttemptDeps,
  cameraId: string,
  gap: GapRecord & { endMs: number },
  error: RecorderError | null,
  covered: Interval[],
  signal: AbortSignal,
): Promise<AttemptResult> {
  const { config } = deps;
  const records = settleAttempt(gap, {
    covered,
    error: error ? { code: error.code, message: error.message } : null,
    // Configuration errors do not heal by retrying.
    maxAttempts: error?.code === 'EDGE_NOT_CONFIGURED' ? 0 : config.backfillMaxAttempts,
    nowMs: deps.clock.nowMs(),
    retryInMs: Math.min(config.backfillRetryMs * 2 ** gap.attempts, 24 * 3600_000),
    minMs: MIN_HOLE_MS,
    counts: !signal.aborted,
  });
  await deps.index.gaps.replace(cameraId, [gap.startMs], records);
  const filledMs = records.filter((r) => r.state === 'filled').reduce((n, r) => n + (r.endMs! - r.startMs), 0);
  return { records, error, filledMs };
}

/** Writes a staged replay into `hole` as `backfill` segments; returns the end of what was written. */
async function writeStaged(deps: AttemptDeps, camera: CameraConfig, staging: string, anchorMs: number, hole: Interval): Promise<number | null> {
  const writer = new SegmentWriter(
    camera,
    {
      index: deps.index,
      dataDir: deps.config.dataDir,
      clock: deps.clock,
      log: deps.log,
      segmentMs: deps.config.segmentSeconds * 1000,
      decide: () => ({ write: true, type: 'backfill', preMs: 0 }),
      anchorMs,
      fit: (startMs, endMs) => fitIntoHole(hole, startMs, endMs),
      flags: { backfill: true },
      ...(deps.nodeId !== undefined ? { fence: backfillFence(deps.nodeId) } : {}),
      ...(deps.onSegmentClosed ? { onSegmentClosed: deps.onSegmentClosed } : {}),
    },
    hole.fromMs,
  );
  const splitter = new Fmp4Splitter();
  // A read error of the staging file ends the splitter with it, and so the loop below
  // (pipe() dropped it: the loop waited for ever, holding the camera's slot); a loop
  // that stops early ends the read.
  pipeline(createReadStream(staging), splitter, () => undefined);
  try {
    for await (const chunk of splitter as AsyncIterable<Fmp4Chunk>) await writer.handle(chunk);
  } finally {
    await writer.close();
  }
  return writer.lastEndMs === hole.fromMs ? null : writer.lastEndMs;
}
