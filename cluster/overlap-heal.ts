/**
 * Healing the overlap a partition left (docs/design/cluster.md, "Partition overlap").
 *
 * A node cut off from NATS goes on recording its cameras under its last fence token;
 * the nodes that still reach a quorum grant those cameras anew and record them too.
 * When the partition heals, the cut-off node learns it lost a camera (its tick, or its
 * next fence check) with the new owner and the time of the new grant. If it recorded
 * the camera after that grant, both nodes hold video of those instants. This node then
 * pulls the new owner's closed segments of that time as copies (the same pull as
 * stitching: synced, then indexed, with their fence), so its index has both series and
 * every read of the time shows one timeline where the higher fence wins
 * (playback/one-timeline.ts). Reads of the time on other nodes are served by this node
 * (it has the most of it) or stitched from both, and come out the same.
 *
 * The new owner's segment being written at heal time cannot be pulled yet: the heal is
 * tried again every RETRY_MS until the owner's closed segments reach the end of what
 * this node recorded, and given up (a warning) after GIVE_UP_MS. Until then the part
 * not pulled shows this node's own video. Held in memory: a node restarted before its
 * heal finished leaves that overlap showing whichever node serves it.
 */
import type { Logger } from '../lib/log.ts';
import type { FenceStamp } from '../index/records.ts';
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
  /** The owner's closed segments of [from, to) (`<prefix>.v1.node.<node>.segments`). */
  ownerSegments: (node: string, camera: string, fromMs: number, toMs: number) => Promise<OwnerSegment[]>;
  /** Pulls one closed segment from `node` and indexes it here (cluster/copies.ts); false: gone there. */
  pull: (node: string, camera: string, seg: OwnerSegment) => Promise<boolean>;
  log: Logger;
  signal: AbortSignal;
  retryMs?: number;
  giveUpMs?: number;
}

/** How often a heal whose owner has not closed every segment yet is tried again. */
export const RETRY_MS = 5000;
/** How long a heal is tried before it is given up. */
export const GIVE_UP_MS = 10 * 60_000;
/** The end of the owner's closed video may fall this short of ours and the heal is done (about a frame). */
const END_SLACK_MS = 40;

interface Heal {
  camera: string;
  node: string;
  fromMs: number;
  toMs: number;
  sinceMs: number;
  pulled: number;
}

export class OverlapHeal {
  private readonly heals = new Map<string, Heal>();
  private timer: NodeJS.Timeout | null = null;
  private running = false;

  constructor(private readonly d: OverlapHealDeps) {
    d.signal.addEventListener('abort', () => this.stopTimer(), { once: true });
  }

  /**
   * `camera` was lost to `node`, granted it at `grantedAtMs`. What this node recorded
   * of it since then overlaps what `node` recorded: its segments there are pulled.
   * Nothing to do after a plain move (this node wrote nothing after the grant).
   */
  lost(camera: string, node: string, grantedAtMs: number): void {
    if (this.d.signal.aborted || node === this.d.nodeId || !Number.isFinite(grantedAtMs)) return;
    const ours = this.d.segments
      .overlapping(camera, grantedAtMs, Number.MAX_SAFE_INTEGER)
      .filter((s) => s.fence?.node === this.d.nodeId && s.endMs > grantedAtMs);
    if (ours.length === 0) return;
    const toMs = Math.max(...ours.map((s) => s.endMs));
    this.d.log.warn(
      { camera, node, from: iso(grantedAtMs), to: iso(toMs) },
      'cluster: this node recorded a camera after it was granted to another (a partition); the overlap heals by pulling that node’s video of it',
    );
    this.heals.set(camera, { camera, node, fromMs: grantedAtMs, toMs, sinceMs: Date.now(), pulled: 0 });
    void this.pass();
  }

  /** Heals still waiting (what the tests and /api/cluster/nodes may show). */
  pending(): { camera: string; node: string; from: string; to: string; pulled: number }[] {
    return [...this.heals.values()].map((h) => ({ camera: h.camera, node: h.node, from: iso(h.fromMs), to: iso(h.toMs), pulled: h.pulled }));
  }

  /** Tries every waiting heal once; one pass at a time. */
  private async pass(): Promise<void> {
    if (this.running) return;
    this.running = true;
    this.stopTimer();
    try {
      for (const h of [...this.heals.values()]) {
        if (this.d.signal.aborted) return;
        if (await this.tryHeal(h).catch((err: unknown) => this.failed(h, err))) this.heals.delete(h.camera);
        else if (Date.now() - h.sinceMs > (this.d.giveUpMs ?? GIVE_UP_MS)) {
          this.heals.delete(h.camera);
          this.d.log.warn(
            { camera: h.camera, node: h.node, from: iso(h.fromMs), to: iso(h.toMs), pulled: h.pulled },
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

  /** true: the owner's closed video reaches the end of ours and every segment of it is here. */
  private async tryHeal(h: Heal): Promise<boolean> {
    const theirs = await this.d.ownerSegments(h.node, h.camera, h.fromMs, h.toMs);
    for (const seg of theirs) {
      if (this.d.segments.get(h.camera, seg.startMs)) continue;
      if (await this.d.pull(h.node, h.camera, seg)) h.pulled++;
    }
    const reached = theirs.reduce((end, s) => Math.max(end, s.endMs), -Infinity);
    const done = reached >= h.toMs - END_SLACK_MS;
    if (done) this.d.log.info({ camera: h.camera, node: h.node, pulled: h.pulled, from: iso(h.fromMs), to: iso(h.toMs) }, 'cluster: partition overlap healed');
    return done;
  }

  private failed(h: Heal, err: unknown): false {
    this.d.log.debug({ camera: h.camera, node: h.node, err: (err as Error).message }, 'cluster: partition overlap heal failed; tried again');
    return false;
  }

  private stopTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
