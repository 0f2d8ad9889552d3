/**
 * Placement (docs/design/cluster.md "Placement"): which live node should take each
 * camera that has no live owner. Pure: every node runs it on the same view (the owner
 * keys and the live nodes) and so reaches the same plan; each node then claims only the
 * cameras the plan gives it, by compare-and-set, so views that differ for a tick cost a
 * retry, never a camera recorded twice.
 *
 * Least-loaded first by camera count (ties by node id); capacity weights come later.
 */

export interface OwnerView {
  node: string;
}

/**
 * The plan for the cameras without a live owner: camera → node. `owners` holds the
 * current owner of each owned camera; `alive` the live nodes (sorted or not);
 * `orphans` the cameras to place.
 */
export function placeOrphans(orphans: readonly string[], owners: ReadonlyMap<string, OwnerView>, alive: readonly string[]): Map<string, string> {
  const plan = new Map<string, string>();
  if (alive.length === 0) return plan;
  const load = new Map<string, number>(alive.map((n) => [n, 0]));
  for (const o of owners.values()) if (load.has(o.node)) load.set(o.node, load.get(o.node)! + 1);
  for (const camera of [...orphans].sort()) {
    let best: string | null = null;
    for (const n of [...load.keys()].sort()) if (best === null || load.get(n)! < load.get(best)!) best = n;
    plan.set(camera, best!);
    load.set(best!, load.get(best!)! + 1);
  }
  return plan;
}
