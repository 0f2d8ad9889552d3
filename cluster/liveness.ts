/**
 * Liveness by counting (docs/design/cluster.md "Liveness"): a peer is dead once K of
 * *this* node's successful heartbeats have passed without the peer's heartbeat key
 * changing revision. Nothing here reads a wall clock: a JetStream leader election
 * stalls every write for 4-9 s, and while it does this node's own heartbeats fail too,
 * so no tick is counted and nobody is judged dead for a stall that hit everyone alike.
 *
 * A process that died (kill -9, a crash) is known sooner: NATS itself says nobody
 * listens on its ping subject any more ("no responders": the server dropped its
 * connection). A peer whose heartbeat did not change and whose ping got no responders
 * in each of GONE_TICKS of our successful ticks in a row is dead then, before K. That
 * signal is the NATS server's, not a clock's: a node that hangs (SIGSTOP) or sits
 * behind a partition still holds its connection or its ping times out, and is judged
 * by K; a node whose nats-server died reconnects to another in well under GONE_TICKS
 * (a leader election meanwhile fails every node's heartbeat alike, and then nothing is
 * counted at all).
 *
 * Pure bookkeeping; cluster/cluster.ts feeds it what it read after each successful beat.
 */

/** Ticks of ours in a row with no responders on a peer's ping (and no beat) that make it dead before K. */
export const GONE_TICKS = 3;

export interface PeerView {
  /** Revision of its heartbeat key when last seen to change (0: no key). */
  revision: number;
  /** This node's successful ticks since then. */
  missed: number;
  /** Our ticks since it was first seen alive or came back from dead (rebalancing waits for a steady node). */
  aliveTicks: number;
  /** Our successful ticks in a row in which its ping had no responders and its beat did not change. */
  goneTicks: number;
}

export class LivenessCounter {
  private readonly peers = new Map<string, PeerView>();

  constructor(
    readonly self: string,
    /** K: ticks of ours without a change of theirs after which a peer is dead. */
    readonly deadTicks: number,
  ) {}

  /**
   * One successful tick of ours: `seen` is each peer's heartbeat revision as read after
   * our beat (0 when it has no key, -1 when its key was deleted: it left, and is gone at
   * once); peers whose read failed are left out (not counted). `gone`: the peers whose
   * ping this tick was answered "no responders" by NATS (module comment) → true, those
   * whose ping a node answered → false; a ping that timed out or failed otherwise is
   * left out and changes nothing.
   */
  tick(seen: ReadonlyMap<string, number>, gone: ReadonlyMap<string, boolean> = new Map()): void {
    for (const [node, revision] of seen) {
      if (node === this.self) continue;
      if (revision < 0) {
        this.peers.set(node, { revision, missed: Math.max(this.deadTicks, (this.peers.get(node)?.missed ?? 0) + 1), aliveTicks: 0, goneTicks: 0 });
        continue;
      }
      const p = this.peers.get(node);
      if (!p) this.peers.set(node, { revision, missed: revision === 0 ? 1 : 0, aliveTicks: 0, goneTicks: 0 });
      else if (p.revision !== revision) {
        if (this.isDead(p)) p.aliveTicks = 0;
        p.revision = revision;
        p.missed = revision === 0 ? p.missed + 1 : 0;
        p.goneTicks = 0;
      } else {
        p.missed++;
        const g = gone.get(node);
        if (g !== undefined) p.goneTicks = g ? p.goneTicks + 1 : 0;
      }
      const q = this.peers.get(node)!;
      q.aliveTicks = this.isDead(q) ? 0 : q.aliveTicks + 1;
    }
  }

  private isDead(p: PeerView): boolean {
    return p.missed >= this.deadTicks || p.goneTicks >= Math.min(GONE_TICKS, this.deadTicks);
  }

  /** Our ticks since `node` was seen alive in a row (0: dead or unknown). */
  aliveTicks(node: string): number {
    return this.peers.get(node)?.aliveTicks ?? 0;
  }

  /** Whether `node` is alive as far as this node can tell (itself always; unknown nodes are not). */
  alive(node: string): boolean {
    if (node === this.self) return true;
    const p = this.peers.get(node);
    return p !== undefined && !this.isDead(p);
  }

  /** Whether `node` was watched for K ticks and never changed, or NATS says it is gone (GONE_TICKS): safe to take its cameras. */
  dead(node: string): boolean {
    if (node === this.self) return false;
    const p = this.peers.get(node);
    return p !== undefined && this.isDead(p);
  }

  /** Ticks of ours since `node` last beat (undefined: never watched). */
  missed(node: string): number | undefined {
    return this.peers.get(node)?.missed;
  }

  /** The nodes alive now, this one included, sorted by id. */
  aliveNodes(): string[] {
    return [this.self, ...[...this.peers.keys()].filter((n) => this.alive(n))].sort();
  }

  /** Every node watched (alive or dead). */
  known(): string[] {
    return [...this.peers.keys()];
  }

  forget(node: string): void {
    this.peers.delete(node);
  }
}
