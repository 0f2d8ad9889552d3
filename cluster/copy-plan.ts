/**
 * Which nodes hold a closed segment of a pool with `copies` > 1 (docs/design/cluster.md
 * "Redundant copies"). Pure: every node computes the same answer from the same view.
 *
 * The node that wrote the segment keeps it (it is there already); the other holders are
 * chosen by rendezvous hashing (highest random weight) of the segment's key over the
 * live nodes. Rendezvous hashing moves the least when a node goes: only the segments
 * it was chosen for get a new holder, the next one in their own ranking, and every
 * other segment keeps its holders. Nodes are spread evenly over segments without any
 * table to keep.
 */
import { createHash } from 'node:crypto';

/** The key that ranks the nodes for one segment. */
export function segmentKey(camera: string, startMs: number): string {
  return `${camera}/${startMs}`;
}

/** The rendezvous weight of `node` for `key` (the first 48 bits of SHA-256: plenty to rank three to a hundred nodes). */
function weight(key: string, node: string): number {
  return createHash('sha256').update(key).update('\0').update(node).digest().readUIntBE(0, 6);
}

/**
 * The nodes that should hold the segment `key`: its writer while it is alive, then the
 * live nodes by falling rendezvous weight, `copies` in all (fewer when fewer nodes
 * live). `live` need not be sorted; a `writer` not in `live` is not chosen.
 */
export function copyHolders(key: string, writer: string | null, live: readonly string[], copies: number): string[] {
  const want = Math.max(1, Math.floor(copies));
  const alive = [...new Set(live)];
  const first = writer !== null && alive.includes(writer) ? [writer] : [];
  const ranked = alive
    .filter((n) => n !== writer)
    .map((n) => ({ n, w: weight(key, n) }))
    .sort((a, b) => b.w - a.w || (a.n < b.n ? -1 : 1))
    .map((x) => x.n);
  return [...first, ...ranked].slice(0, want);
}

/**
 * Whether `dead` was one of the segment's holders before it died: the holders computed
 * over the live nodes with it. A survivor that holds such a segment announces it again,
 * so that its new holder (the next in the ranking) pulls it.
 */
export function heldByDead(key: string, writer: string | null, live: readonly string[], dead: string, copies: number): boolean {
  return copyHolders(key, writer, [...live, dead], copies).includes(dead);
}

/**
 * Whether a copy held here may go because the pool has one more than it asks for (a node
 * came back after its copies were re-made elsewhere, or a node joined and ranks above
 * this one): `keep` with the reason, or `drop` with the nodes that must first confirm
 * they hold the segment and keep it (every holder over the live nodes).
 *
 * A copy stays when this node wrote it (a writer always keeps its own file; a segment
 * with no fence stamp is counted as this node's own), when this node is one of its
 * holders, when it is locked (locked video is never deleted by any policy here, even a
 * copy the pool has too many of), when a pull of it runs here (the entry is being
 * made), or when fewer nodes live than the pool's copies (then every live node that has
 * it is a holder).
 */
export type TrimDecision = { keep: 'writer' | 'holder' | 'locked' | 'pulling' } | { drop: string[] };

export function trimDecision(c: {
  key: string;
  writer: string | null;
  self: string;
  live: readonly string[];
  copies: number;
  locked: boolean;
  pulling: boolean;
}): TrimDecision {
  if (c.writer === null || c.writer === c.self) return { keep: 'writer' };
  const holders = copyHolders(c.key, c.writer, [...c.live, c.self], c.copies);
  if (holders.includes(c.self)) return { keep: 'holder' };
  if (c.locked) return { keep: 'locked' };
  if (c.pulling) return { keep: 'pulling' };
  return { drop: holders };
}

/**
 * Whether the live nodes have been the same set for `settleMs` (a monotonic clock in
 * ms): surplus copies are trimmed only then. A node that flaps (joins, is judged dead,
 * joins again) changes the set each time, so nothing is deleted while it flaps, and
 * two nodes whose views differ for a moment do not both trim against different holders.
 */
export class MembershipSettle {
  private view = '';
  private sinceMs = 0;

  constructor(private readonly settleMs: number) {}

  /** Feeds the live nodes seen at `nowMs`; true when they have not changed for settleMs. */
  settled(live: readonly string[], nowMs: number): boolean {
    const view = [...new Set(live)].sort().join('\n');
    if (view !== this.view) {
      this.view = view;
      this.sinceMs = nowMs;
    }
    return nowMs - this.sinceMs >= this.settleMs;
  }

  /**
   * Membership changed (a node joined, came back or died), maybe between two samples:
   * settling starts over even if the set looks as it did at the last sample (a node that
   * died and came back between them).
   */
  reset(): void {
    this.view = '';
  }
}
