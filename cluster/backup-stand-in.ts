/**
 * Who sends a dead writer's segments to the backup cluster, and what (docs/design/cluster.md
 * "Backup to another cluster", Faults). Pure: every node computes the same answer from
 * the same view, so nodes agree on one sender without talking.
 *
 * A writer announces its own closed segments (cluster/backup-sender.ts). While it is
 * judged dead, one survivor per (pool, camera, writer) stands in for it: the first node
 * by rendezvous ranking of that triple among the live nodes in the camera's holders
 * catalog (nodes that hold none of the camera's video are never chosen). Views that
 * differ for a tick may make two stand-ins; the cursor's compare-and-set and the
 * writer's own message ids make that cost repeated announcements, never a gap.
 */
import { copyHolders } from './copy-plan.ts';

/** The live node that announces `writer`'s segments of `camera` in `pool` while it is dead (null: no live holder). */
export function standInFor(pool: string, camera: string, writer: string, live: readonly string[], holders: readonly string[]): string | null {
  const catalog = new Set(holders);
  const candidates = live.filter((n) => n !== writer && catalog.has(n));
  return copyHolders(`backup/${pool}/${camera}/${writer}`, null, candidates, 1)[0] ?? null;
}

/** One round of a stand-in for (pool, camera, writer): what to announce, where the cursor goes, what is lost. */
export interface StandInPlan {
  /** In time order: each segment with the node it is pulled from (this node when it holds it). */
  send: { startMs: number; origin: string }[];
  /** The writer's new cursor: past every segment of it known after the old one (unchanged: nothing known). */
  cursor: number;
  /** Starts the writer announced for copies that no live node holds: only the writer has them. */
  lost: number[];
}

/**
 * `held`: the writer's closed segments after `cursor` in the pool, by start, each with
 * the live nodes that hold it; `announced`: the starts the writer announced on the copy
 * stream (its ledger of closed segments). The cursor passes both: a lost segment is
 * not walked again (the caller lists it behind the cursor for the writer, which sends
 * it when it is back).
 */
export function planStandIn(p: {
  self: string;
  cursor: number;
  held: ReadonlyMap<number, readonly string[]>;
  announced: readonly number[];
  /** The nodes that keep each segment's copy (its holders by the ranking): a surplus copy may be trimmed before the target pulls it. */
  keeps?: (startMs: number) => readonly string[];
}): StandInPlan {
  const send: StandInPlan['send'] = [];
  for (const startMs of [...p.held.keys()].filter((s) => s > p.cursor).sort((a, b) => a - b)) {
    const nodes = p.held.get(startMs)!;
    if (nodes.length === 0) continue;
    const kept = p.keeps ? new Set(p.keeps(startMs)) : null;
    const lasting = kept ? nodes.filter((n) => kept.has(n)) : [];
    const from = lasting.length > 0 ? lasting : nodes;
    send.push({ startMs, origin: from.includes(p.self) ? p.self : [...from].sort()[0]! });
  }
  const lost = [...new Set(p.announced)].filter((s) => s > p.cursor && (p.held.get(s)?.length ?? 0) === 0).sort((a, b) => a - b);
  const cursor = [...send.map((s) => s.startMs), ...lost].reduce((a, b) => Math.max(a, b), p.cursor);
  return { send, cursor, lost };
}
