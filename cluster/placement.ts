/**
 * Placement (docs/design/cluster.md "Placement"): which live node should take each
 * camera that has no live owner, and whether a node should give one of its cameras up.
 * Pure: every node runs it on the same view (the owner keys, the live nodes and what
 * their heartbeats say) and so reaches the same plan; each node then claims only the
 * cameras the plan gives it, by compare-and-set, so views that differ for a tick cost a
 * retry, never a camera recorded twice.
 *
 * Load is a node's cameras over its weight (RECORDER_CLUSTER_WEIGHT: a box twice as big
 * says 2). A node under pressure (its health sampler's cpu-high, memory-high or
 * disk-near-full holds) takes no camera while another node is not under pressure, and
 * gives its cameras up one at a time.
 */

export interface OwnerView {
  node: string;
}

/** What a node's heartbeat says of its capacity (absent: weight 1, no pressure). */
export interface NodeCapacity {
  weight: number;
  /** Why it is under pressure (e.g. `cpu-high`), or null. */
  pressure: string | null;
}

const PLAIN: NodeCapacity = { weight: 1, pressure: null };

function loads(owners: ReadonlyMap<string, OwnerView>, nodes: readonly string[]): Map<string, number> {
  const load = new Map<string, number>(nodes.map((n) => [n, 0]));
  for (const o of owners.values()) if (load.has(o.node)) load.set(o.node, load.get(o.node)! + 1);
  return load;
}

/** The nodes that may take cameras: those not under pressure, or all of them when every one is. */
function takers(alive: readonly string[], cap: (n: string) => NodeCapacity): string[] {
  const calm = alive.filter((n) => cap(n).pressure === null);
  return calm.length > 0 ? calm : [...alive];
}

/**
 * The plan for the cameras without a live owner: camera → node. `owners` holds the
 * current owner of each owned camera; `alive` the live nodes (sorted or not);
 * `orphans` the cameras to place; `capacity` what each node's heartbeat says.
 */
export function placeOrphans(
  orphans: readonly string[],
  owners: ReadonlyMap<string, OwnerView>,
  alive: readonly string[],
  capacity: ReadonlyMap<string, NodeCapacity> = new Map(),
): Map<string, string> {
  const plan = new Map<string, string>();
  if (alive.length === 0) return plan;
  const cap = (n: string): NodeCapacity => capacity.get(n) ?? PLAIN;
  const load = loads(owners, takers(alive, cap));
  const nodes = [...load.keys()].sort();
  for (const camera of [...orphans].sort()) {
    // The node whose load after taking this camera is least; ties by node id.
    let best: string | null = null;
    for (const n of nodes) if (best === null || (load.get(n)! + 1) / cap(n).weight < (load.get(best)! + 1) / cap(best).weight) best = n;
    plan.set(camera, best!);
    load.set(best!, load.get(best!)! + 1);
  }
  return plan;
}

/**
 * Whether `self` should give one camera up now (why), or null: it is under pressure
 * while some steady node is not; or moving one camera to the least-loaded steady node
 * leaves that node no more loaded than `self` is after (with equal weights: `self` has
 * two cameras more).
 */
export function shouldGiveUp(
  self: string,
  owners: ReadonlyMap<string, OwnerView>,
  steady: readonly string[],
  capacity: ReadonlyMap<string, NodeCapacity> = new Map(),
): string | null {
  if (steady.length < 2) return null;
  const cap = (n: string): NodeCapacity => capacity.get(n) ?? PLAIN;
  const load = loads(owners, steady);
  const mine = load.get(self) ?? 0;
  if (mine === 0) return null;
  const others = takers(steady, cap).filter((n) => n !== self);
  const pressure = cap(self).pressure;
  if (pressure !== null && others.some((n) => cap(n).pressure === null)) return `under pressure (${pressure}): ${mine} cameras here`;
  let least: string | null = null;
  for (const n of others.sort()) if (least === null || load.get(n)! / cap(n).weight < load.get(least)! / cap(least).weight) least = n;
  if (least === null) return null;
  const after = (load.get(least)! + 1) / cap(least).weight;
  const mineAfter = (mine - 1) / cap(self).weight;
  return mineAfter >= after
    ? `rebalancing: ${mine} cameras here (weight ${cap(self).weight}), ${load.get(least)} on ${least} (weight ${cap(least).weight})`
    : null;
}
