/**
 * Healing the overlap a partition left (docs/design/cluster.md, "Partition overlap").
 *
 * A node cut off from NATS goes on recording its cameras under its last fence token;
 * the nodes that still reach a quorum grant those cameras anew and record them too.
 * When the partition heals, the cut-off node learns it lost a camera (its tick, or its
 * next fence check). Its last confirmation of the camera is when the overlap can have
 * begun: any grant to another node came after it (one grant or several, to one node or
 * more). If it recorded the camera after that, other nodes may hold video of those
 * instants under higher fences. This node then asks every holder of the camera for its
 * closed segments of that time and pulls those stamped with a higher fence than its own
 * as copies (the same pull as stitching: synced, then indexed, with their fence), so its
 * index has every series and each read of the time shows one timeline where the higher
 * fence wins (playback/one-timeline.ts). Reads of that time through another node are
 * served by this one (it has the most of it) or stitched; a node that holds only copies
 * of this node's segments of the time and all of the range serves those (the lower
 * fence's).
 *
 * A holder's segment being written at heal time cannot be pulled yet: the heal is tried
 * again every RETRY_MS until the higher-fenced closed segments reach the end of what
 * this node recorded, and given up (a warning) after GIVE_UP_MS (longer than the
 * longest segment). Until then the part not pulled shows this node's own video. Held in
 * memory: a node restarted before its heal finished leaves that overlap showing
 * whichever node serves it.
 */
import type { Logger } from '../lib/log.ts';
import type { FenceStamp, SegmentRecord } from '../index/records.ts';
import type { SegmentStore } from '../index/segment-store.ts';
import { iso } from '../lib/time.ts';

/** A closed segment the new owner has (its `segments` peer answer). */
export interface OwnerSegment {
  startMs: number;
  endMs: number;
  bytes: number;
  pool: string;
  fence?: FenceStamp;
}

export interface OverlapHealDeps {
  nodeId: string;
  segments: Pick<SegmentStore, 'overlapping' | 'get'>;
  /** The nodes that hold video of the camera (the holders catalog), this one included or not. */
  holders: (camera: string) => string[];
  /** A node's closed segments of [from, to) (`<prefix>.v1.node.<node>.segments`). */
  ownerSegments: (node: string, camera: string, fromMs: number, toMs: number) => Promise<OwnerSegment[]>;
  /** Pulls one closed segment from `node` and indexes it here (cluster/copies.ts); false: gone there. */
  pull: (node: string, camera: string, seg: OwnerSegment) => Promise<boolean>;
  /**
   * Deletes this node's own segment `ours` (as retention deletes: locks kept, under the
   * storage mutex) so that a later grant's segment starting at the same instant can take
   * its key; false: it stays (locked, or no longer the same). One key per instant.
   */
  dropOwn: (ours: SegmentRecord) => Promise<boolean>;
  log: Logger;
  signal: AbortSignal;
  retryMs?: number;
  giveUpMs?: number;
}

/** How often a heal whose owner has not closed every segment yet is tried again. */
export const RETRY_MS = 5000;
/** How long a heal is tried before it is given up: past the longest segment (an hour) a holder can be writing. */
export const GIVE_UP_MS = 65 * 60_000;
/** The longest one heal pass may take before it counts as failed and is tried again. */
const PASS_TIMEOUT_MS = 30_000;
/** How often a heal that waits says so. */
const NOT_YET_LOG_MS = 30_000;
/** The end of the owner's closed video may fall this short of ours and the heal is done (about a frame). */
const END_SLACK_MS = 40;

interface Heal {
  camera: string;
  /** The revision this node recorded under: what outranks it is pulled. */
  rev: number;
  fromMs: number;
  toMs: number;
  sinceMs: number;
  pulled: number;
  warned?: boolean;
  /** Whether a segment of a later grant starting where one of ours does was said. */
  clashSaid?: boolean;
  /** When the heal last said it waits (Date.now()). */
  saidAt?: number;
}

export class OverlapHeal {
  private readonly heals = new Map<string, Heal>();
  private timer: NodeJS.Timeout | null = null;
  private running = false;

  constructor(private readonly d: OverlapHealDeps) {
    d.signal.addEventListener('abort', () => this.stopTimer(), { once: true });
  }

  /**
   * `camera` was lost; this node recorded it under revision `rev` and last confirmed it
   * was still its own at `sinceMs` (wall clock). What it recorded after that may overlap
   * what other nodes recorded under later grants: theirs is pulled. Nothing to do after
   * a plain move (this node wrote nothing after its last confirmation).
   */
  lost(camera: string, rev: number, sinceMs: number): void {
    if (this.d.signal.aborted || !Number.isFinite(sinceMs)) return;
    const ours = this.d.segments
      .overlapping(camera, sinceMs, Number.MAX_SAFE_INTEGER)
      .filter((s) => s.fence?.node === this.d.nodeId && s.fence.rev === rev && s.endMs > sinceMs);
    if (ours.length === 0) return;
    const toMs = Math.max(...ours.map((s) => s.endMs));
    this.d.log.info(
      { camera, from: iso(sinceMs), to: iso(toMs) },
      'cluster: this node recorded a camera after its last confirmation that it held it; what other nodes recorded of that time under later grants is pulled (a partition overlap heals)',
    );
    this.heals.set(camera, { camera, rev, fromMs: sinceMs, toMs, sinceMs: Date.now(), pulled: 0 });
    void this.pass();
  }

  /** Heals still waiting (what the tests and /api/cluster/nodes may show). */
  pending(): { camera: string; from: string; to: string; pulled: number }[] {
    return [...this.heals.values()].map((h) => ({ camera: h.camera, from: iso(h.fromMs), to: iso(h.toMs), pulled: h.pulled }));
  }

  /** Tries every waiting heal once; one pass at a time. */
  private async pass(): Promise<void> {
    if (this.running) return;
    this.running = true;
    this.stopTimer();
    try {
      for (const h of [...this.heals.values()]) {
        if (this.d.signal.aborted) return;
        // Deleted only if still this heal: a newer loss of the camera may have replaced it meanwhile.
        const forget = (): void => {
          if (this.heals.get(h.camera) === h) this.heals.delete(h.camera);
        };
        // Bounded: a peer or a pull that never answers must not hold every later pass back
        // (the pass is tried again; what the stuck one still does joins the next).
        const attempt = Promise.race([
          this.tryHeal(h),
          new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`a heal pass took over ${PASS_TIMEOUT_MS} ms`)), PASS_TIMEOUT_MS).unref()),
        ]);
        if (await attempt.catch((err: unknown) => this.failed(h, err))) forget();
        else if (Date.now() - h.sinceMs > (this.d.giveUpMs ?? GIVE_UP_MS)) {
          forget();
          this.d.log.warn(
            { camera: h.camera, from: iso(h.fromMs), to: iso(h.toMs), pulled: h.pulled },
            'cluster: partition overlap not healed in time; the part not pulled shows whichever node serves it',
          );
        }
      }
    } finally {
      this.running = false;
      if (this.heals.size > 0 && !this.d.signal.aborted) {
        this.timer = setTimeout(() => void this.pass(), this.d.retryMs ?? RETRY_MS);
        this.timer.unref();
      }
    }
  }

  /**
   * true: the closed segments other holders wrote under later grants reach the end of
   * ours, and every one of them is here. A holder that does not answer: not yet.
   */
  private async tryHeal(h: Heal): Promise<boolean> {
    let reached = -Infinity;
    const asked: Record<string, number> = {};
    for (const node of this.d.holders(h.camera)) {
      if (node === this.d.nodeId) continue;
      // Only what outranks ours: a holder also lists copies it holds of our own segments.
      // Asked up to now: video of a later grant that begins after ours ended (a plain move,
      // a frozen node) shows there was no overlap, and the heal is done.
      const theirs = (await this.d.ownerSegments(node, h.camera, h.fromMs, Math.max(h.toMs, Date.now()))).filter(
        (s) => s.fence !== undefined && s.fence.rev > h.rev,
      );
      asked[node] = theirs.length;
      for (const seg of theirs) {
        let here = seg.startMs < h.toMs ? this.d.segments.get(h.camera, seg.startMs) : undefined;
        // Ours starts at the very millisecond theirs does (both writers anchor on the same
        // keyframes from the camera's clock): one key per instant, and the higher fence wins,
        // so ours goes and theirs takes the key. Theirs covers the same instants of the same
        // camera; the tail of ours past its end is covered by their next segment.
        if (here && here.fence?.node === this.d.nodeId && here.fence.rev <= h.rev && !here.open && (await this.d.dropOwn(here))) here = undefined;
        if (seg.startMs < h.toMs && !here && (await this.d.pull(node, h.camera, seg))) h.pulled++;
        // Ours stays (locked, or a copy of a third node's): reads of that instant show it.
        // Said once per heal: a limit (docs/design/cluster.md), not a silent hole.
        if (here && (here.fence?.node !== seg.fence!.node || here.fence.rev !== seg.fence!.rev) && !h.clashSaid) {
          h.clashSaid = true;
          this.d.log.warn(
            { camera: h.camera, startMs: iso(seg.startMs), from: node },
            "cluster: partition overlap: a segment of a later grant starts at the same millisecond as one kept here (locked, or another node's copy) and is not pulled; reads of it show the one here",
          );
        }
        reached = Math.max(reached, seg.endMs);
      }
    }
    const done = reached >= h.toMs - END_SLACK_MS;
    // Not done: said once, then every NOT_YET_LOG_MS, so a heal that waits is never silent.
    if (!done && Date.now() - (h.saidAt ?? 0) >= NOT_YET_LOG_MS) {
      h.saidAt = Date.now();
      this.d.log.info(
        { camera: h.camera, asked, reached: Number.isFinite(reached) ? iso(reached) : null, to: iso(h.toMs), pulled: h.pulled },
        "cluster: partition overlap heal waits for the later grants' closed video to reach the end of ours",
      );
    }
    if (done && h.pulled > 0)
      this.d.log.info({ camera: h.camera, pulled: h.pulled, from: iso(h.fromMs), to: iso(h.toMs) }, 'cluster: partition overlap healed');
    return done;
  }

  private failed(h: Heal, err: unknown): false {
    // Once at warn (the first failure says why), then quietly until it works or gives up.
    if (!h.warned) this.d.log.warn({ camera: h.camera, err: (err as Error).message }, 'cluster: partition overlap heal failed; tried again every few seconds');
    h.warned = true;
    return false;
  }

  private stopTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
