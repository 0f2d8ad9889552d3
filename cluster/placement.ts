/**
 * Placement (docs/design/cluster.md "Placement"): which live node should take each
 * camera that has no live owner, and whether a node should give one of its cameras up.
 * Pure: every node runs it on the same view (the owner keys, the live nodes and what
 * their heartbeats say) and so reaches the same plan; each node then claims only the
 * cameras the plan gives it, by compare-and-set, so views that differ for a tick cost a
 * retry, never a camera recorded twice.
 *
 * A camera weighs its last measured ingest bitrate (bits per second, as a heartbeat
 * reports it: `bitrateView`). A camera nobody has measured weighs the median of the
 * measured ones in the same view, or 1 when none is measured (then load is cameras
 * per weight). A node's load is the sum of its cameras' weights over its own weight
 * (RECORDER_CLUSTER_WEIGHT: a box twice as big says 2), so a node with four 8 Mbit/s
 * cameras is as loaded as one with thirty-two of 1 Mbit/s. A node under pressure (its
 * health sampler's cpu-high, memory-high or disk-near-full holds) takes no camera while
 * another node is not under pressure, and gives its cameras up one at a time.
 *
 * Invariants:
 * - Determinism: the same inputs give the same answer whatever order they come in.
 *   Orphans are placed heaviest first, ties by camera id; nodes are compared by load
 *   after taking, ties by node id. Weights are whole bits per second (or 1, or a median
 *   of whole numbers, a multiple of 0.5), so sums are exact in float64 whatever order
 *   they are added in.
 * - No flapping: `shouldGiveUp` moves a camera of weight w from s to t only when
 *   (a) placement will not hand it back: (L_t + w)/W_t < L_s/W_s (s's load after taking
 *   it back), so the orphan goes to t or a node at least as good, never to s; and
 *   (b) the move lowers Φ = Σ L²/W by a margin: with D = L_s/W_s − L_t/W_t and
 *   H = 1/W_s + 1/W_t, a move changes Φ by −2wD + w²H, and we ask D ≥ (1 − f/2)·w·H
 *   (`GIVE_UP_SLACK` f = 1/2), so Φ falls by at least (1 − f)·w²·H > 0. Φ only falls
 *   while the bitrates hold, so no chain of moves comes back to where it started, and
 *   a camera that just moved never goes straight back (D would have to be positive
 *   the other way). f = 0 would be "t no more loaded than s afterwards"; f > 0 lets
 *   near-equal cameras even out (three against one, the lone camera a few percent
 *   heavier), which that rule left as it was.
 *
 * Node weights (`nodeWeights`): a node's configured weight (RECORDER_CLUSTER_WEIGHT)
 * when it has one; else its measured size, the smaller of its share of CPU cores and
 * of video disk, each against the largest node of the view (1 = as big as the biggest).
 * Disk is the size of the filesystem that holds the pools, not its free space: a
 * recorder overwrites its oldest video, so in steady state every disk is near full by
 * design and free space says nothing of capacity (a disk that runs out regardless is
 * the `disk-near-full` pressure). Weighing by disk gives every node the same days of
 * retention for the same pool; by cores, the same CPU per core.
 */

export interface OwnerView {
  node: string;
}

/** What a node's heartbeat says of its capacity (absent: weight 1, no pressure). */
export interface NodeCapacity {
  /** Its weight in placement (`nodeWeights`). */
  weight: number;
  /** Why it is under pressure (e.g. `cpu-high`), or null. */
  pressure: string | null;
}

/** Camera id → its last measured ingest bitrate in bits per second (> 0). */
export type Bitrates = ReadonlyMap<string, number>;

/** A camera `shouldGiveUp` says to give up, and why (for the log). */
export interface GiveUp {
  camera: string;
  why: string;
}

/** What a node measures of itself and says in its heartbeat. */
export interface NodeSize {
  /** CPU cores it may use (os.availableParallelism). */
  cores: number;
  /** Bytes of the filesystem that holds its pools. */
  diskBytes: number;
}

/** What a heartbeat says that weighs the node: a configured weight, a measured size, both or neither. */
export interface NodeSizing {
  configured?: number;
  size?: NodeSize;
}

/** f of the module comment: how far short of "the taker no more loaded afterwards" a move may stop. */
export const GIVE_UP_SLACK = 0.5;

const PLAIN: NodeCapacity = { weight: 1, pressure: null };

const positive = (x: number | undefined): x is number => x !== undefined && Number.isFinite(x) && x > 0;

/**
 * Each node's weight (module comment): its configured weight, else the smaller of its
 * cores and disk over the largest of the view's measured nodes, else 1 (a node that
 * says neither: a peer of an older version). Pure and order-free: maxima are the same
 * whatever order the view comes in.
 */
export function nodeWeights(view: ReadonlyMap<string, NodeSizing>): Map<string, number> {
  let maxCores = 0;
  let maxDisk = 0;
  for (const s of view.values()) {
    if (positive(s.size?.cores)) maxCores = Math.max(maxCores, s.size.cores);
    if (positive(s.size?.diskBytes)) maxDisk = Math.max(maxDisk, s.size.diskBytes);
  }
  const weights = new Map<string, number>();
  for (const [node, s] of view) {
    if (positive(s.configured)) {
      weights.set(node, s.configured);
      continue;
    }
    const shares: number[] = [];
    if (positive(s.size?.cores)) shares.push(s.size.cores / maxCores);
    if (positive(s.size?.diskBytes)) shares.push(s.size.diskBytes / maxDisk);
    weights.set(node, shares.length > 0 ? Math.min(...shares) : 1);
  }
  return weights;
}

const byId = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/**
 * The bitrate of each camera as the heartbeats report it: `reports` holds, per node, the
 * last heartbeat read from it (a dead node's included: its record stays in the nodes
 * bucket for an hour and no longer changes, so every node reads the same one), and
 * `ownerOf` each camera's owner key. The owner's report wins; a camera its owner has
 * not measured (a dead owner's last beat never listed it, or the new owner has written
 * no GOP of it yet) takes the report of the first other node by id that lists it: the
 * node that gave it up keeps reporting it until its new owner measures it
 * (cluster/cluster.ts), so a camera that moved weighs the same before and after. A
 * camera nobody reports is absent (unmeasured).
 */
export function bitrateView(cameras: Iterable<string>, ownerOf: ReadonlyMap<string, string>, reports: ReadonlyMap<string, Bitrates>): Map<string, number> {
  const nodes = [...reports.keys()].sort(byId);
  const view = new Map<string, number>();
  for (const camera of cameras) {
    const owner = ownerOf.get(camera);
    let bps = owner === undefined ? undefined : reports.get(owner)?.get(camera);
    for (let i = 0; bps === undefined && i < nodes.length; i++) bps = reports.get(nodes[i]!)!.get(camera);
    if (bps !== undefined) view.set(camera, bps);
  }
  return view;
}

/**
 * Each camera's weight in placement: its bitrate in `bitrates` when measured (> 0), else
 * the median of the measured bitrates of `cameras`, or 1 when none of them is measured.
 */
export function cameraWeights(cameras: Iterable<string>, bitrates: Bitrates): Map<string, number> {
  const all = [...new Set(cameras)];
  const measured = all
    .map((c) => bitrates.get(c))
    .filter((b): b is number => b !== undefined && Number.isFinite(b) && b > 0)
    .sort((a, b) => a - b);
  const mid = measured.length >> 1;
  const median = measured.length === 0 ? 1 : measured.length % 2 === 1 ? measured[mid]! : (measured[mid - 1]! + measured[mid]!) / 2;
  return new Map(
    all.map((c) => {
      const b = bitrates.get(c);
      return [c, b !== undefined && Number.isFinite(b) && b > 0 ? b : median];
    }),
  );
}

function loads(owners: ReadonlyMap<string, OwnerView>, nodes: readonly string[], weight: ReadonlyMap<string, number>): Map<string, number> {
  const load = new Map<string, number>(nodes.map((n) => [n, 0]));
  for (const [camera, o] of owners) if (load.has(o.node)) load.set(o.node, load.get(o.node)! + weight.get(camera)!);
  return load;
}

/** The nodes that may take cameras: those not under pressure, or all of them when every one is. */
function takers(alive: readonly string[], cap: (n: string) => NodeCapacity): string[] {
  const calm = alive.filter((n) => cap(n).pressure === null);
  return calm.length > 0 ? calm : [...alive];
}

/** Of `nodes`, the one whose load after taking `w` is least; ties by node id. */
function leastAfter(nodes: readonly string[], w: number, load: ReadonlyMap<string, number>, cap: (n: string) => NodeCapacity): string | null {
  let best: string | null = null;
  for (const n of [...nodes].sort(byId)) if (best === null || (load.get(n)! + w) / cap(n).weight < (load.get(best)! + w) / cap(best).weight) best = n;
  return best;
}

/**
 * The plan for the cameras without a live owner: camera → node. `owners` holds the
 * current owner of each owned camera; `alive` the live nodes (sorted or not);
 * `orphans` the cameras to place; `capacity` what each node's heartbeat says;
 * `bitrates` each camera's last measured bitrate (`bitrateView`).
 */
export function placeOrphans(
  orphans: readonly string[],
  owners: ReadonlyMap<string, OwnerView>,
  alive: readonly string[],
  capacity: ReadonlyMap<string, NodeCapacity> = new Map(),
  bitrates: Bitrates = new Map(),
): Map<string, string> {
  const plan = new Map<string, string>();
  if (alive.length === 0) return plan;
  const cap = (n: string): NodeCapacity => capacity.get(n) ?? PLAIN;
  const weight = cameraWeights([...owners.keys(), ...orphans], bitrates);
  const nodes = takers(alive, cap);
  const load = loads(owners, nodes, weight);
  // Heaviest first (a greedy that places big cameras while every node still has room balances best).
  const order = [...new Set(orphans)].sort((a, b) => weight.get(b)! - weight.get(a)! || byId(a, b));
  for (const camera of order) {
    const w = weight.get(camera)!;
    const best = leastAfter(nodes, w, load, cap)!;
    plan.set(camera, best);
    load.set(best, load.get(best)! + w);
  }
  return plan;
}

/**
 * Which camera `self` should give up now, or null: under pressure while some steady
 * node is not, its heaviest camera; else, of its cameras heaviest first (ties: the last
 * by id), the first whose move to the node least loaded after taking it passes the
 * no-flapping rule of the module comment (placement will not hand it back, and the
 * move lowers Σ L²/W by a margin; with equal weights and unmeasured cameras: `self`
 * has two cameras more).
 */
export function shouldGiveUp(
  self: string,
  owners: ReadonlyMap<string, OwnerView>,
  steady: readonly string[],
  capacity: ReadonlyMap<string, NodeCapacity> = new Map(),
  bitrates: Bitrates = new Map(),
): GiveUp | null {
  if (steady.length < 2) return null;
  const cap = (n: string): NodeCapacity => capacity.get(n) ?? PLAIN;
  const weight = cameraWeights(owners.keys(), bitrates);
  const load = loads(owners, steady, weight);
  const mine = [...owners]
    .filter(([, o]) => o.node === self)
    .map(([camera]) => camera)
    .sort((a, b) => weight.get(b)! - weight.get(a)! || byId(b, a));
  if (mine.length === 0 || !load.has(self)) return null;
  const selfLoad = load.get(self)!;
  const here = `${mine.length} cameras of load ${selfLoad} here`;
  const others = takers(steady, cap).filter((n) => n !== self);
  const pressure = cap(self).pressure;
  if (pressure !== null && others.some((n) => cap(n).pressure === null)) return { camera: mine[0]!, why: `under pressure (${pressure}): ${here}` };
  for (const camera of mine) {
    const w = weight.get(camera)!;
    const to = leastAfter(others, w, load, cap);
    if (to === null) return null;
    const ws = cap(self).weight;
    const wt = cap(to).weight;
    const d = selfLoad / ws - load.get(to)! / wt;
    const noReturn = (load.get(to)! + w) / wt < selfLoad / ws;
    if (noReturn && d >= (1 - GIVE_UP_SLACK / 2) * w * (1 / ws + 1 / wt))
      return {
        camera,
        why: `rebalancing: ${here} (weight ${cap(self).weight}), load ${load.get(to)} on ${to} (weight ${cap(to).weight}); ${camera} weighs ${w}`,
      };
  }
  return null;
}
