/**
 * Playback sessions (WS /api/cameras/:id/playback) through any node of a cluster
 * (docs/design/cluster.md "Any node answers"). A session's range may lie on other nodes
 * (a camera that moved, a failover, a node that never recorded it), and one socket
 * cannot be proxied per command, so the node the viewer is connected to plays the
 * range itself, one window of recording time after another: before each window, the
 * closed segments other holders have of it and this node lacks are pulled here
 * (services/media-source.ts `pullMissing`: synced, then indexed, kept as copies); the
 * window is then played from this node's index, and the next one follows on the
 * session's timeline.
 *
 * Invariants:
 * - A window ends where one of this node's segments ends (forward) or starts (reverse),
 *   and the next window starts there: its first GOP is the first one not yet sent, so
 *   no frame is sent twice and none is skipped at a window's edge.
 * - A window starts at the first video any node holds at or after the position (before
 *   it, in reverse): time no node recorded is skipped, as within one node's gaps.
 * - Without other holders of the camera (one node, or only this one recorded it) there
 *   is one window, the session's whole range: single-node playback is unchanged.
 * - A window whose holder did not answer and of which this node has nothing is skipped
 *   (its holder named in `unreachable`), and the next one is prepared: the part of the
 *   range after it, perhaps another holder's, still plays.
 */
import type { CameraPlacement } from '../cluster/cluster.ts';
import type { SegmentRecord } from '../index/records.ts';
import { iso } from '../lib/time.ts';
import type { PullReport } from './media-source.ts';

/** Recording time per window: a 4 Mbit/s camera pulls ~300 MB for a window it lacks entirely. */
export const WINDOW_MS = 10 * 60_000;

export interface PlaybackWindowDeps {
  cluster: CameraPlacement;
  /** This node's segments of a camera (the index's segment store). */
  segments: {
    atOrBefore(camera: string, atMs: number): SegmentRecord | undefined;
    after(camera: string, afterMs: number): SegmentRecord | undefined;
  };
  /** Every node's spans of the camera, merged (a search). */
  spans(camera: string, fromMs: number, toMs: number): Promise<{ fromMs: number; toMs: number }[]>;
  /** `signal`: the session moved on or closed; pulling stops (services/media-source.ts). */
  pullMissing(camera: string, fromMs: number, toMs: number, signal?: AbortSignal): Promise<PullReport>;
  nowMs(): number;
  /** Recording time per window (default WINDOW_MS; `RECORDER_CLUSTER_PLAYBACK_WINDOW_MS`). */
  windowMs?: number;
}

/** The range as a session asks for it: forward [fromMs, toMs), reverse from fromMs down to toMs. */
export interface SessionRange {
  fromMs: number;
  toMs: number;
  reverse: boolean;
}

export interface PlaybackWindow {
  /** The stream's end (forward) or lower bound (reverse): the session's own, or a window's edge. */
  toMs: number;
  /** Where the next window starts when this one's stream runs out (null: this is the last). */
  nextFromMs: number | null;
  /** Holders whose part of the window could not be pulled (the session says so). */
  unreachable: string[];
}

/** One window, the session's whole range: a node alone, or a camera no other node holds. */
export function wholeRange(r: SessionRange): PlaybackWindow {
  return { toMs: r.toMs, nextFromMs: null, unreachable: [] };
}

/**
 * The window a session plays from `r.fromMs` on. `signal` aborts when the session no
 * longer wants it (a new command, the viewer gone): its pulls stop, and what it
 * answers then is not used.
 */
export async function playbackWindow(d: PlaybackWindowDeps, camera: string, r: SessionRange, signal?: AbortSignal): Promise<PlaybackWindow> {
  if (!d.cluster.holders(camera).some((n) => n !== d.cluster.nodeId)) return wholeRange(r);
  // A window whose holder did not answer and of which this node has nothing is skipped
  // (its holder named), not played as nothing: the next window may be another holder's.
  const missed = new Set<string>();
  let from = r.fromMs;
  for (;;) {
    const w = r.reverse ? await reverseWindow(d, camera, { ...r, fromMs: from }, signal) : await forwardWindow(d, camera, { ...r, fromMs: from }, signal);
    for (const n of w.unreachable) missed.add(n);
    if (!w.skip || signal?.aborted) return { toMs: w.toMs, nextFromMs: w.skip ? null : w.nextFromMs, unreachable: [...missed] };
    from = w.nextFromMs!;
  }
}

/** A window as found; `skip`: nothing of it here and a holder did not answer, go on at nextFromMs. */
type FoundWindow = PlaybackWindow & { skip?: true };

async function forwardWindow(d: PlaybackWindowDeps, camera: string, r: SessionRange, signal?: AbortSignal): Promise<FoundWindow> {
  const now = d.nowMs();
  const first = (await d.spans(camera, r.fromMs, Math.min(r.toMs, now + 60_000))).find((s) => s.toMs > r.fromMs);
  if (!first) return { toMs: r.toMs, nextFromMs: null, unreachable: [] };
  const start = Math.max(r.fromMs, first.fromMs);
  const edge = Math.min(r.toMs, start + (d.windowMs ?? WINDOW_MS));
  const { unreachable } = await d.pullMissing(camera, start, edge, signal);
  if (unreachable.length > 0 && edge < r.toMs && edge < now) {
    const here = d.segments.atOrBefore(camera, edge - 1);
    if (!here || here.endMs <= start) return { toMs: edge, nextFromMs: edge, unreachable, skip: true };
  }
  const last = edge >= r.toMs || edge >= now ? undefined : d.segments.atOrBefore(camera, edge - 1);
  // The live edge, the session's own end, or nothing here to cut at: one stream to the end.
  if (!last || last.open || last.endMs <= r.fromMs || last.endMs >= r.toMs) return { toMs: r.toMs, nextFromMs: null, unreachable };
  return { toMs: last.endMs, nextFromMs: last.endMs, unreachable };
}

async function reverseWindow(d: PlaybackWindowDeps, camera: string, r: SessionRange, signal?: AbortSignal): Promise<FoundWindow> {
  const spans = await d.spans(camera, Math.max(0, r.toMs), r.fromMs + 1);
  const latest = [...spans].reverse().find((s) => s.fromMs <= r.fromMs);
  if (!latest) return { toMs: r.toMs, nextFromMs: null, unreachable: [] };
  const start = Math.min(r.fromMs, latest.toMs - 1);
  const edge = Math.max(r.toMs, start - (d.windowMs ?? WINDOW_MS));
  const { unreachable } = await d.pullMissing(camera, edge, start + 1, signal);
  if (edge <= r.toMs) return { toMs: r.toMs, nextFromMs: null, unreachable };
  if (unreachable.length > 0) {
    const here = d.segments.atOrBefore(camera, start);
    if (!here || here.endMs <= edge) return { toMs: edge, nextFromMs: edge - 1, unreachable, skip: true };
  }
  // The earliest segment here that reaches past the edge: the window stops at its start.
  const holding = d.segments.atOrBefore(camera, edge);
  const earliest = holding && holding.endMs > edge ? holding : d.segments.after(camera, edge - 1);
  if (!earliest || earliest.startMs > r.fromMs || earliest.startMs <= r.toMs) return { toMs: r.toMs, nextFromMs: null, unreachable };
  // The next window's first GOP is the last one before this window's first segment.
  return { toMs: earliest.startMs, nextFromMs: earliest.startMs - 1, unreachable };
}

/** The merged search's spans as times (what `PlaybackWindowDeps.spans` answers). */
export function spanTimes(view: { spans: readonly { from: string; to: string }[] }): { fromMs: number; toMs: number }[] {
  return view.spans.map((s) => ({ fromMs: Date.parse(s.from), toMs: Date.parse(s.to) })).sort((a, b) => a.fromMs - b.fromMs);
}

/** The search body for a camera's range (what `RecorderService.search` takes). */
export function searchBody(camera: string, fromMs: number, toMs: number): { camera: string; from: string; to: string } {
  return { camera, from: iso(fromMs), to: iso(toMs) };
}
