/**
 * How big each node of the cluster is, as placement weighs it (docs/design/cluster.md
 * "Placement"): a weight configured (RECORDER_CLUSTER_WEIGHT), else what the node
 * measured of itself (cores, bytes of its pools' filesystem) against the biggest live
 * node (cluster/placement.ts `nodeWeights`), and whether it is under pressure (a CPU,
 * memory or disk alarm holds: it takes no camera and gives its own up).
 *
 * This node's size is measured again every SIZE_EVERY_MS in the background (the tick
 * never waits for it) and taken at a beat, so what the beat reports and what this tick
 * plans with agree. A peer's comes from its last heartbeat, keeping only positive finite
 * numbers (a peer of another version may send anything); a dead node's last beat no
 * longer sizes the others.
 */
import type { Logger } from '../lib/log.ts';
import { nodeWeights, type NodeCapacity, type NodeSize, type NodeSizing } from './placement.ts';

/** How often a node measures its size again (cores, disk): disks and CPUs of a running box rarely change. */
const SIZE_EVERY_MS = 60_000;

/** What a heartbeat says of its node's size. */
export interface SizeBeat {
  /** Its capacity relative to the others as configured (RECORDER_CLUSTER_WEIGHT); absent: measured. */
  weight?: number;
  /** What it measured of itself (cores, bytes of its pools' filesystem); absent: weight 1 unless configured. */
  size?: NodeSize;
  /** Why it is under pressure (cpu-high, memory-high, disk-near-full); absent: none. */
  pressure?: string;
}

export interface NodeSizesOptions {
  nodeId: string;
  log: Logger;
  /** Whether a peer is alive by this node's count (only live nodes size the others). */
  alive: (node: string) => boolean;
  weight?: number | undefined;
  measureSize?: (() => Promise<NodeSize>) | undefined;
  pressure?: (() => string | null) | undefined;
}

/** A heartbeat's configured weight and measured size, keeping only positive finite numbers (a peer of another version may send anything). */
function sizingOf(hb: SizeBeat): NodeSizing {
  const ok = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x) && x > 0;
  const size = hb.size as Partial<NodeSize> | undefined;
  return {
    ...(ok(hb.weight) ? { configured: hb.weight } : {}),
    ...(size && ok(size.cores) && ok(size.diskBytes) ? { size: { cores: size.cores, diskBytes: size.diskBytes } } : {}),
  };
}

const now = (): number => performance.now();

export class NodeSizes {
  /** Each peer's sizing and pressure from its last heartbeat. */
  private readonly peers = new Map<string, NodeSizing & { pressure: string | null }>();
  /** This node's size as of its last beat, and as last measured. */
  private size: NodeSize | null = null;
  private measuredSize: NodeSize | null = null;
  private askedAt = -Infinity;
  private inFlight = false;

  constructor(private readonly o: NodeSizesOptions) {}

  /** At a beat: a new measure asked for when due, the last one taken; what the heartbeat says of this node. */
  beat(): SizeBeat {
    this.remeasure();
    // A new measure is taken at a beat: this tick's plan and the beat peers read say the same size.
    this.size = this.measuredSize;
    const pressure = this.pressure();
    return {
      ...(this.o.weight !== undefined ? { weight: this.o.weight } : {}),
      ...(this.size ? { size: this.size } : {}),
      ...(pressure ? { pressure } : {}),
    };
  }

  /** A peer's heartbeat was read. */
  peerBeat(peer: string, hb: SizeBeat): void {
    this.peers.set(peer, { ...sizingOf(hb), pressure: typeof hb.pressure === 'string' ? hb.pressure : null });
  }

  /** Why this node is under pressure now (null: it is not). */
  pressure(): string | null {
    return this.o.pressure?.() ?? null;
  }

  /** A node's size and pressure as `nodes()` shows them (this node's size as of its last beat). */
  view(node: string): { size: NodeSize | null; pressure: string | null } {
    if (node === this.o.nodeId) return { size: this.size, pressure: this.pressure() };
    const c = this.peers.get(node);
    return { size: c?.size ?? null, pressure: c?.pressure ?? null };
  }

  /**
   * Every live node's weight and pressure, this one's included. Weights are measured
   * against the largest live node (`nodeWeights`): a dead node's last beat no longer
   * sizes the others.
   */
  capacities(): Map<string, NodeCapacity> {
    const sizing = new Map<string, NodeSizing & { pressure: string | null }>();
    for (const [node, c] of this.peers) if (this.o.alive(node)) sizing.set(node, c);
    sizing.set(this.o.nodeId, {
      ...(this.o.weight !== undefined ? { configured: this.o.weight } : {}),
      ...(this.size ? { size: this.size } : {}),
      pressure: this.pressure(),
    });
    const weights = nodeWeights(sizing);
    return new Map([...sizing].map(([node, c]) => [node, { weight: weights.get(node)!, pressure: c.pressure }]));
  }

  /** Asks for this node's size again when the last answer is SIZE_EVERY_MS old; the tick goes on with the last one. */
  private remeasure(): void {
    const measure = this.o.measureSize;
    if (!measure || this.inFlight || now() - this.askedAt < SIZE_EVERY_MS) return;
    this.askedAt = now();
    this.inFlight = true;
    measure()
      .then(
        (size) => {
          // Whole GiB: a filesystem whose size moves a little (thin volumes, datasets) does not move placement.
          const diskBytes = Math.round(size.diskBytes / 2 ** 30) * 2 ** 30;
          this.measuredSize = size.cores > 0 && diskBytes > 0 ? { cores: size.cores, diskBytes } : null;
        },
        (err: unknown) => this.o.log.warn({ err: (err as Error).message }, 'cluster: node size not measured (placement weighs it 1)'),
      )
      .finally(() => (this.inFlight = false));
  }
}
