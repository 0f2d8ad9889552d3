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
