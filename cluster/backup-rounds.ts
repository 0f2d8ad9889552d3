/**
 * What the two senders of a backup to another cluster share (docs/design/cluster.md
 * "Backup to another cluster"): segments (cluster/backup-sender.ts) and pictures
 * (cluster/picture-backup.ts) are announced on the target cluster's streams in rounds,
 * by the same machinery:
 *
 * - the dependencies a sender is built from (`BackupDeps`: node.ts builds one set for
 *   both);
 * - the round loop: a round every `roundMs` (or at once when woken), a failed round
 *   logged and tried again at the next, stopped by the node's signal or close();
 * - the round's ground: the pools that name a backup cluster, this cluster's token and
 *   this node's HTTP URL (no round without both: grants are made under the token, and
 *   the target pulls from the URL), and this cluster's `<prefix>-backup` KV bucket where
 *   the cursors are kept;
 * - the connections to the target clusters: one per servers and credentials, made once,
 *   reconnecting for ever (a target down is waited for, never given up), let go when no
 *   pool names it any more.
 *
 * What is announced, the cursors and the alarms stay with each sender.
 */
import { connect, type KV, type NatsConnection } from 'nats';
import type { RecorderIndex } from '../index/db.ts';
import type { BackupClusterTarget, PoolPolicy } from '../index/records.ts';
import type { AlarmInput } from '../lib/alarms.ts';
import type { Logger } from '../lib/log.ts';

export const JS_TIMEOUT_MS = 4000;

/** What a backup sender is built from (node.ts gives both senders the same). */
export interface BackupDeps {
  nodeId: string;
  prefix: string;
  replicas: number;
  index: RecorderIndex;
  log: Logger;
  signal: AbortSignal;
  /** This node's HTTP base URL as the target's nodes reach it (null: not listening yet). */
  httpUrl: () => string | null;
  /** This cluster's token (null: not bound yet): grants are made under it. */
  clusterToken: () => string | null;
  raiseAlarm?: (alarm: AlarmInput) => void;
  roundMs?: number;
}

/** A pool that names a backup cluster. */
export type BackedUpPool = PoolPolicy & { backupCluster: BackupClusterTarget };

/** What one round works with: the pools to back up, and what every announcement needs. */
export interface BackupRound {
  pools: BackedUpPool[];
  token: string;
  http: string;
}

export interface BackupRoundsOptions {
  /** How the sender names itself in its log lines (`backup`, `picture backup`). */
  what: string;
  /** The NATS connection name to the target clusters. */
  connectionName: string;
  /** The round interval when the deps give none. */
  roundMs: number;
  /** One round, over the pools that name a backup cluster (never called with none). */
  round: (r: BackupRound) => Promise<void>;
}

/** What tells one target cluster connection from another (servers and credentials). */
export function targetKey(t: BackupClusterTarget): string {
  return JSON.stringify([t.servers, t.user ?? null, t.pass ?? null]);
}

/** How the status of a pool names its target (`GET /api/cluster/nodes`). */
export function targetLabel(pool: BackedUpPool): string {
  return `${pool.backupCluster.servers.join(',')} pool ${pool.backupCluster.pool ?? pool.id}`;
}

/** A connection to a target cluster's NATS that reconnects for ever (a target down is waited for, never given up). */
export function connectBackupTarget(t: BackupClusterTarget, name: string): Promise<NatsConnection> {
  return connect({
    servers: t.servers,
    ...(t.user !== undefined ? { user: t.user } : {}),
    ...(t.pass !== undefined ? { pass: t.pass } : {}),
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 1000,
    timeout: JS_TIMEOUT_MS,
  });
}

/** The round loop and the target connections of one backup sender (module comment). */
export class BackupRounds {
  private nc: NatsConnection | null = null;
  private kvBucket: KV | null = null;
  private readonly targets = new Map<string, NatsConnection>();
  private readonly stop = new AbortController();
  private wakeUp: (() => void) | null = null;
  private done: Promise<void> = Promise.resolve();

  constructor(
    private readonly d: BackupDeps,
    private readonly o: BackupRoundsOptions,
  ) {
    d.signal.addEventListener('abort', () => this.stop.abort(), { once: true });
  }

  /** Aborted when the sender stops. */
  get signal(): AbortSignal {
    return this.stop.signal;
  }

  /** This cluster's connection (null: not started). */
  get connection(): NatsConnection | null {
    return this.nc;
  }

  /** The `<prefix>-backup` KV bucket: bound before the first round runs. */
  get kv(): KV {
    if (!this.kvBucket) throw new Error('backup KV not bound yet');
    return this.kvBucket;
  }

  start(nc: NatsConnection): void {
    if (this.nc) return;
    this.nc = nc;
    this.done = this.loop();
  }

  /** The next round now rather than after the interval. */
  wake(): void {
    this.wakeUp?.();
    this.wakeUp = null;
  }

  async close(): Promise<void> {
    this.stop.abort();
    this.wake();
    await this.done;
    await Promise.all([...this.targets.values()].map((nc) => nc.close().catch(() => undefined)));
    this.targets.clear();
  }

  /** The connection to a target cluster (made once, kept while a pool names it; it reconnects by itself). */
  async target(t: BackupClusterTarget): Promise<NatsConnection> {
    const key = targetKey(t);
    const have = this.targets.get(key);
    if (have && !have.isClosed()) return have;
    const nc = await connectBackupTarget(t, this.o.connectionName);
    this.targets.set(key, nc);
    this.d.log.info({ servers: t.servers }, `${this.o.what}: connected to the target cluster`);
    return nc;
  }

  private async loop(): Promise<void> {
    while (!this.stop.signal.aborted) {
      try {
        await this.round();
      } catch (err) {
        if (!this.stop.signal.aborted) this.d.log.warn({ err: (err as Error).message }, `${this.o.what}: round failed; again shortly`);
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, this.d.roundMs ?? this.o.roundMs);
        this.wakeUp = () => {
          clearTimeout(t);
          resolve();
        };
        if (this.stop.signal.aborted) this.wake();
      });
    }
  }

  private async round(): Promise<void> {
    const pools = this.d.index.pools.list().filter((p): p is BackedUpPool => p.backupCluster !== undefined);
    // Targets no pool names any more are let go.
    const wanted = new Set(pools.map((p) => targetKey(p.backupCluster)));
    for (const [key, nc] of this.targets) {
      if (!wanted.has(key)) {
        this.targets.delete(key);
        void nc.close().catch(() => undefined);
      }
    }
    if (pools.length === 0) return;
    const token = this.d.clusterToken();
    const http = this.d.httpUrl();
    if (!token || !http || !this.nc) return;
    this.kvBucket ??= await this.nc
      .jetstream({ timeout: JS_TIMEOUT_MS })
      .views.kv(`${this.d.prefix}-backup`, { replicas: this.d.replicas, history: 1, timeout: JS_TIMEOUT_MS });
    await this.o.round({ pools, token, http });
  }
}
