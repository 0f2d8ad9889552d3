/**
 * Which node serves a camera's media range in a cluster (docs/design/cluster.md "Any
 * node answers"), and the stitching of a range split between nodes.
 *
 * - This node has all of the range → it serves it (null).
 * - One node has as much as all nodes together (within half a second) → that node:
 *   this one (null) or another, to which the request is proxied.
 * - Split (a camera that moved, a failover): the closed segments this node lacks are
 *   pulled from the holders that have them, as copies (cluster/copies.ts `pull`: synced,
 *   then indexed here), and this node serves the whole range as one file. At most
 *   STITCH_MAX_BYTES are pulled for one request; beyond that, or when a pull fails, the
 *   node with the most of the range serves it (what it has). A segment still being
 *   written on its owner cannot be pulled: the range's very end may be cut to the last
 *   closed segment.
 */
import type { CameraPlacement } from '../cluster/cluster.ts';
import type { FenceStamp } from '../index/records.ts';
import { RecorderError } from '../lib/errors.ts';
import { iso } from '../lib/time.ts';
import type { Logger } from '../lib/log.ts';

/** A closed segment another node has (what its `segments` peer request answers). */
export interface RemoteSegment {
  startMs: number;
  endMs: number;
  bytes: number;
  pool: string;
  /** Who wrote it under which grant (absent: a single node's or a back-fill's). */
  fence?: FenceStamp;
}

/** Bytes one request may pull to stitch a split range (a 4 Mbit/s camera: about 2 hours). */
export const STITCH_MAX_BYTES = 4 * 1024 ** 3;

export interface MediaSourceDeps {
  cluster: CameraPlacement;
  /** This node's own spans of the camera. */
  localSearch: (q: { camera: string; from: string; to: string }) => SpansView;
  /**
   * Whether this node has the camera's segment that starts at `startMs` (that very
   * segment: another writer's overlapping one does not count, playback/one-timeline.ts
   * picks between them once both are here).
   */
  hasSegment: (camera: string, startMs: number) => boolean;
  /** Pulls one closed segment from `node` and indexes it here (true: copied). Absent: no stitching. */
  pull?: (node: string, camera: string, seg: RemoteSegment) => Promise<boolean>;
  log: Logger;
}

/** What a search answers, as far as choosing a source needs it. */
interface SpansView {
  spans: readonly { from: string; to: string }[];
}

interface Range {
  fromMs: number;
  toMs: number;
}

function clipped(v: SpansView, r: Range): Range[] {
  return v.spans.map((s) => ({ fromMs: Math.max(r.fromMs, Date.parse(s.from)), toMs: Math.min(r.toMs, Date.parse(s.to)) })).filter((s) => s.toMs > s.fromMs);
}

function length(ranges: readonly Range[]): number {
  return ranges.reduce((n, s) => n + (s.toMs - s.fromMs), 0);
}

/** The union of ranges, merged. */
function union(ranges: readonly Range[]): Range[] {
  const out: Range[] = [];
  for (const s of [...ranges].sort((a, b) => a.fromMs - b.fromMs)) {
    const last = out[out.length - 1];
    if (last && s.fromMs <= last.toMs) last.toMs = Math.max(last.toMs, s.toMs);
    else out.push({ ...s });
  }
  return out;
}

/** Where `[fromMs, toMs)` of `camera` is served from: another node to proxy to, or null (here). */
export async function chooseMediaSource(d: MediaSourceDeps, camera: string, fromMs: number, toMs: number): Promise<{ node: string; http: string } | null> {
  const cluster = d.cluster;
  const range = { fromMs, toMs };
  const q = { camera, from: iso(fromMs), to: iso(toMs) };
  const here = clipped(d.localSearch(q), range);
  const hereMs = length(here);
  if (hereMs >= toMs - fromMs) return null;
  const others = (
    await Promise.all(
      cluster
        .holders(camera)
        .filter((n) => n !== cluster.nodeId)
        .map(async (node) => {
          const http = cluster.peerHttp(node);
          const v = await cluster.ask<SpansView>(node, 'search', q).catch(() => null);
          return v && http ? { node, http, ranges: clipped(v, range) } : null;
        }),
    )
  ).filter((o) => o !== null);
  const allMs = length(union([...here, ...others.flatMap((o) => o.ranges)]));
  let best: { node: string; http: string; ms: number } | null = null;
  for (const o of others) {
    const ms = length(o.ranges);
    if (ms > hereMs && (!best || ms > best.ms)) best = { node: o.node, http: o.http, ms };
  }
  const bestMs = best?.ms ?? hereMs;
  // One node has it all (as far as any node has it): no stitching.
  if (bestMs >= allMs - 500 || !d.pull) return best ? { node: best.node, http: best.http } : null;
  try {
    // The nodes with the most first: fewer, longer pulls.
    const order = [...others].sort((a, b) => length(b.ranges) - length(a.ranges)).filter((o) => o.ranges.length > 0);
    const { pulled, bytes, unreachable } = await pullMissing(
      d,
      camera,
      fromMs,
      toMs,
      order.map((o) => o.node),
    );
    if (unreachable.length > 0) throw new Error(`node ${unreachable.join(', ')} did not answer`);
    d.log.info({ camera, from: q.from, to: q.to, pulled, bytes }, 'media range split between nodes: the segments this node lacked pulled, served here as one');
    return null;
  } catch (err) {
    d.log.warn({ camera, err: (err as Error).message }, 'media range split between nodes could not be stitched: served by the node with the most of it');
    return best ? { node: best.node, http: best.http } : null;
  }
}

/** What `pullMissing` did. */
export interface PullReport {
  pulled: number;
  bytes: number;
  /** Holders that did not answer or whose pull failed: their part of the range may be missing here. */
  unreachable: string[];
}

/**
 * Pulls to this node every closed segment of `camera` overlapping [fromMs, toMs) that
 * `nodes` (default: every other holder of the camera) have and this node lacks, as
 * copies (synced, then indexed). Throws past STITCH_MAX_BYTES; a node that does not
 * answer, or whose pull fails, is reported, not thrown. Once `signal` aborts (the
 * playback session that wanted the range moved on or closed) no further segment is
 * pulled; one being pulled finishes (a copy kept here) and the report so far returns.
 */
export async function pullMissing(
  d: Pick<MediaSourceDeps, 'cluster' | 'hasSegment' | 'pull'>,
  camera: string,
  fromMs: number,
  toMs: number,
  nodes?: readonly string[],
  signal?: AbortSignal,
): Promise<PullReport> {
  const report: PullReport = { pulled: 0, bytes: 0, unreachable: [] };
  const pull = d.pull;
  if (!pull) return report;
  const q = { camera, from: iso(fromMs), to: iso(toMs) };
  for (const node of nodes ?? d.cluster.holders(camera).filter((n) => n !== d.cluster.nodeId)) {
    if (signal?.aborted) return report;
    const answer = await d.cluster.ask<{ segments: RemoteSegment[] }>(node, 'segments', q).catch(() => null);
    if (!answer) {
      report.unreachable.push(node);
      continue;
    }
    for (const seg of answer.segments) {
      if (signal?.aborted) return report;
      if (d.hasSegment(camera, seg.startMs)) continue;
      report.bytes += seg.bytes;
      if (report.bytes > STITCH_MAX_BYTES) throw new RecorderError('PAYLOAD_TOO_LARGE', `more than ${STITCH_MAX_BYTES} bytes to pull for one range`);
      // false: gone from the holder meanwhile (retention) or here already; a throw: the holder failed.
      const pulled = await pull(node, camera, seg).catch(() => null);
      if (pulled === true) report.pulled++;
      else if (pulled === null && !report.unreachable.includes(node)) report.unreachable.push(node);
    }
  }
  return report;
}
