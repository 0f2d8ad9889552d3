/**
 * One node's part in the cluster (docs/design/cluster.md): membership and liveness,
 * camera ownership with fencing, placement of cameras without a live owner, and the
 * cameras' shared config. NATS JetStream is the engine: three replicated KV buckets,
 *
 *   <prefix>-nodes    node id → heartbeat {node, session, http, cameras, bitsPerSecond?, …}; TTL 1 h
 *   <prefix>-owners   camera id → {node, session, at}; changed only by compare-and-set
 *   <prefix>-config   `camera.<id>` → the camera's config (every node mirrors it into LMDB)
 *
 * Every tick (`clusterTickMs`): put our heartbeat; read each camera's owner key and,
 * after a successful beat, each peer's heartbeat revision (cluster/liveness.ts counts
 * them); confirm the cameras we hold or drop the ones whose key names another owner;
 * claim by CAS what cluster/placement.ts gives us among the cameras without a live
 * owner, each camera weighed by its measured bitrate (Bitrates, below). Nothing is
 * claimed in a tick whose own heartbeat failed (then our view may be that of a
 * minority, and our writes would fail anyway).
 *
 * Fencing: the KV revision our CAS wrote is the camera's fence token. The segment
 * writer asks `fence(camera)` before it appends each GOP (storage/segment-writer.ts),
 * and stamps the token on the segment record. A confirmation older than FRESH is
 * re-read from the KV first, so a node that was frozen (SIGSTOP, a stalled VM) learns
 * it lost the camera before it writes a byte more; a node that cannot reach NATS at
 * all keeps recording under its old token (a partition: recording goes on, the
 * higher token wins on heal).
 *
 * Bitrates: each heartbeat reports the ingest bitrate of the cameras the node measured
 * (`ClusterOptions.bitrate`, the metrics' meter over the camera's newest segment): those
 * it holds, and those it gave up or lost until their new owner reports them itself.
 * An orphan's bitrate is read from its dead owner's last heartbeat: that record stays in
 * the nodes bucket (TTL 1 h) and no longer changes, and every node reads every peer's
 * heartbeat each tick anyway (liveness), so every node weighs the orphan alike at no
 * extra write or read; a shared per-camera record would cost a KV write per camera
 * and another read per camera per tick for the same answer.
 *
 * Requests between nodes (each node's own subjects, `ping` among them) are
 * cluster/peer-requests.ts; the nodes' sizes and weights as placement sees them,
 * cluster/node-sizes.ts.
 *
 * Errors: CLUSTER_UNAVAILABLE (503) for a config write the KV did not confirm,
 * CAMERA_FENCED (409) for a write of a camera this node no longer holds.
 */
import { randomBytes } from 'node:crypto';
import { Events, JSONCodec, type KV, type KvEntry, type NatsConnection } from 'nats';
import type { Supervisor } from '../actors/supervisor.ts';
import type { StorageSupervisor } from '../actors/storage-supervisor.ts';
import { SharedConfig } from './shared-config.ts';
import type { RecorderIndex } from '../index/db.ts';
import type { CameraConfig, FenceStamp } from '../index/records.ts';
import { sleepUnlessStopped } from '../lib/lifecycle.ts';
import { RecorderError } from '../lib/errors.ts';
import type { AlarmInput } from '../lib/alarms.ts';
import type { Logger } from '../lib/log.ts';
import type { RecorderConfig } from '../lib/config.ts';
import { GONE_TICKS, LivenessCounter } from './liveness.ts';
import { NodeSizes, type SizeBeat } from './node-sizes.ts';
import { PEER_TIMEOUT_MS, PeerRequests, type PeerHandler } from './peer-requests.ts';
import { bitrateView, placeOrphans, shouldGiveUp, type Bitrates, type NodeSize, type OwnerView } from './placement.ts';

/** Heartbeats of nodes gone for this long vanish from the nodes bucket. */
const NODES_TTL_MS = 3600_000;
/** One KV read or write waits this long at most (a stalled leader election answers 503 or nothing). */
const KV_TIMEOUT_MS = 2000;
/** Heartbeats failing this long raise `cluster-unavailable`: longer than a leader election (4-9 s). */
const UNAVAILABLE_ALARM_MS = 15_000;
/** How long a fence re-read may take before NATS is judged unreachable (recording goes on). */
const FENCE_READ_TIMEOUT_MS = 1000;

export interface ClusterOptions {
  nodeId: string;
  prefix: string;
  index: RecorderIndex;
  supervisor: Supervisor;
  log: Logger;
  tickMs: number;
  deadTicks: number;
  /** KV replicas: 3 on a JetStream cluster of three or more servers, else the servers there are. */
  replicas: number;
  /** Called when another node changed a user (the node's UserStore forgets cached logins). */
  usersChanged: () => void;
  /** The storage supervisor (pools and locks mirror through it); null before storage is up. */
  storage: () => StorageSupervisor | null;
  /** This node's HTTP base URL (peers proxy to it); known once HTTP listens. */
  httpUrl: () => string;
  /** A peer was judged dead by this node's count (once per death; cluster/copies.ts re-makes its copies). */
  peerDied?: (node: string) => void;
  /**
   * A peer joined while this node ran, or came back after it was judged dead, and has
   * beaten for K ticks since (once per arrival; cluster/copies.ts announces its share of
   * the copies to it). `awaySinceMs`: when this node judged it dead (null: a node not
   * seen before).
   */
  peerJoined?: (node: string, awaySinceMs: number | null) => void;
  /**
   * This node lost a camera it recorded under grant `rev`, which it last confirmed at
   * `lastConfirmedMs` (wall clock): cluster/overlap-heal.ts pulls what other nodes
   * recorded of it under later grants if this one went on recording after that (a
   * partition).
   */
  cameraLost?: (camera: string, rev: number, lastConfirmedMs: number) => void;
  /** This node's weight in placement as configured (RECORDER_CLUSTER_WEIGHT); absent: measured (`measureSize`). */
  weight?: number;
  /**
   * Measures this node's size (cores, bytes of the pools' filesystem) for placement
   * (cluster/placement.ts `nodeWeights`); read at start and every minute (cluster/node-sizes.ts), never
   * waited on by a tick. Absent (or failing): the heartbeat says no size.
   */
  measureSize?: () => Promise<NodeSize>;
  /** Why this node is under pressure now (its health alarms that hold), or null. */
  pressure?: () => string | null;
  /**
   * The camera's ingest bitrate (bits per second) over its newest segment in this node's
   * index, or null when it has none here (node.ts: ops/metrics.ts `bitrateOf`, the
   * meter of `recorder_camera_bitrate_bits_per_second`). A camera offline keeps its last
   * figure: it costs that again when it comes back. Absent: nothing is measured, every
   * camera weighs alike.
   */
  bitrate?: (camera: string) => number | null;
  /** `node-left` (a peer judged dead) and `cluster-unavailable` (heartbeats failing: no quorum). */
  raiseAlarm?: (alarm: AlarmInput) => void;
  signal: AbortSignal;
}

/** What the service asks of the cluster (services/recorder-service.ts). */
export interface CameraPlacement {
  /** Whether this node records the camera now. */
  runsHere(camera: string): boolean;
  /** Stores a camera's config in the shared KV (every node mirrors it); CLUSTER_UNAVAILABLE when not confirmed. */
  putCamera(camera: CameraConfig): Promise<void>;
  /** Deletes it there and gives up its ownership if held here. */
  deleteCamera(id: string): Promise<void>;
  /** Schedules, pools, locks, labels: written there first (cluster/shared-config.ts). */
  config(): SharedConfig;
  /** Resolves true once this node's mirror holds every change the shared config acknowledged (≤ 2 s; false: not confirmed). */
  barrier(): Promise<boolean>;
  /** This node's id. */
  readonly nodeId: string;
  /** Nodes that have held the camera (the holders catalog), this one included when it did. */
  holders(camera: string): string[];
  /** Asks one node (its own subject `<prefix>.v1.node.<node>.<what>`): its answer, or an error when it does not answer. */
  ask<T>(node: string, what: string, body: unknown, timeoutMs?: number): Promise<T>;
  /** A peer node's HTTP base URL as its heartbeat says (null: unknown). */
  peerHttp(node: string): string | null;
  /** The nodes, alive or not, with their cameras. */
  nodes(): ClusterNodeView[];
  /** Drains this node (or ends its drain). */
  drain(on: boolean): { node: string; draining: boolean; cameras: number };
}

interface Owner {
  node: string;
  session: string;
  at: string;
}

/** A node's heartbeat; its weight, size and pressure: cluster/node-sizes.ts. */
interface Heartbeat extends SizeBeat {
  node: string;
  session: string;
  http: string;
  cameras: number;
  /** Being drained: it takes no camera and gives up the ones it has, one per tick. */
  draining?: boolean;
  /**
   * Camera id → its ingest bitrate as this node last measured it (whole bits per
   * second): the cameras it holds that it has measured, and those it gave up or lost
   * whose new owner has not reported them yet. Absent: none measured.
   */
  bitsPerSecond?: Record<string, number>;
}

interface Held {
  /** The revision our CAS wrote: the fence token. */
  rev: number;
  /** performance.now() when a read that showed the key still ours was issued. */
  confirmedAt: number;
}

/** A node as `nodes()` shows it. */
export interface ClusterNodeView {
  node: string;
  http: string | null;
  alive: boolean;
  self: boolean;
  /** Cameras it owns per the owner keys read in the last tick. */
  cameras: string[];
  /** Ticks of ours since it last beat (null for this node). */
  missedTicks: number | null;
  /** Being drained: takes no camera, gives up the ones it has. */
  draining: boolean;
  /** Its weight in placement (cameras per weight are balanced): configured, else measured against the biggest live node. */
  weight: number;
  /** What it measured of itself (cores, bytes of its pools' filesystem), or null. */
  size: NodeSize | null;
  /** Why it is under pressure (it takes no camera and gives its own up), or null. */
  pressure: string | null;
  /** The sum of the measured bitrates of its cameras (bits per second; unmeasured ones count 0). */
  bitsPerSecond: number;
}

const json = JSONCodec();

function decode<T>(e: KvEntry | null | undefined): T | null {
  if (!e || e.operation !== 'PUT') return null;
  try {
    return json.decode(e.value) as T;
  } catch {
    return null;
  }
}

/** The bitrates of a heartbeat, keeping only whole positive numbers (a peer of another version may send anything). */
function bitratesOf(hb: Heartbeat | null): Map<string, number> {
  const out = new Map<string, number>();
  const raw: unknown = hb?.bitsPerSecond;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return out;
  for (const [camera, bps] of Object.entries(raw as Record<string, unknown>))
    if (typeof bps === 'number' && Number.isFinite(bps) && bps > 0) out.set(camera, Math.round(bps));
  return out;
}

function timeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

const now = (): number => performance.now();

export class ClusterNode implements CameraPlacement {
  readonly nodeId: string;
  /** Random per process start: a restarted node re-grants its cameras (a fresh fence). */
  readonly session = randomBytes(6).toString('hex');
  private readonly liveness: LivenessCounter;
  private readonly held = new Map<string, Held>();
  /** Owner of every camera as read in the last tick. */
  private owners = new Map<string, Owner>();
  private nodesKv: KV | null = null;
  private ownersKv: KV | null = null;
  private shared: SharedConfig | null = null;
  private holdersKv: KV | null = null;
  /** The holders catalog as watched: camera → nodes that held it. */
  private readonly holderMap = new Map<string, Set<string>>();
  /**
   * Stops for the KV watches running now. A watch can stay silent after its connection
   * came back (its consumer lost on the server): on every reconnect each is ended and
   * made again, which replays the bucket's current keys (idempotent for the maps).
   */
  private readonly watches = new Set<() => void>();
  /** Cameras whose holder entry this session wrote. */
  private readonly cataloged = new Set<string>();
  private readonly cataloging = new Set<string>();
  /** The config each held camera's actor was last given (JSON): a mirror echo of the same one changes nothing. */
  private readonly startedWith = new Map<string, string>();
  private readonly requests: PeerRequests;
  /** Node ids heard of (heartbeat watch, owner keys): whose heartbeats are counted. */
  private readonly peers = new Set<string>();
  private readonly httpOf = new Map<string, string>();
  private readonly stopped = new AbortController();
  private loopDone: Promise<void> = Promise.resolve();
  /** performance.now() of the last fence re-read that failed for want of NATS. */
  private unreachableAt = -Infinity;
  private beatFailing = false;
  private ownerReadsFailing = false;
  /** performance.now() of the first failed heartbeat of the current outage. */
  private beatFailingSince: number | null = null;
  private unavailableRaised = false;
  /** A camera is being given up (one at a time). */
  private releasing = false;
  /** This node is being drained (`drain()`): placement skips it and it gives its cameras up. */
  private draining = false;
  /** Peers whose last heartbeat said they are being drained. */
  private readonly drainingPeers = new Set<string>();
  /** The nodes' weights, sizes and pressure as placement sees them. */
  private readonly sizes: NodeSizes;
  /** The bitrates each peer's last heartbeat read reported (a dead peer's last ones stay). */
  private readonly peerBitrates = new Map<string, Bitrates>();
  /** What this node reports in its heartbeat (`Heartbeat.bitsPerSecond`), camera → bits per second. */
  private readonly measured = new Map<string, number>();
  /** Each camera's bitrate as the last tick's view made it (cluster/placement.ts `bitrateView`). */
  private bitrates: Bitrates = new Map();
  /** Peers judged dead, with when (Date.now() ms): peerDied is called once for each until it beats again. */
  private readonly deadPeers = new Map<string, number>();
  /** Peers seen beating steadily since they arrived (peerJoined was considered for each). */
  private readonly steadyPeers = new Set<string>();
  /** Peers first seen after this node's start-up: when they beat steadily, they joined. */
  private readonly lateArrivals = new Set<string>();
  private watchingNodes = false;
  private readonly freshMs: number;
  private nc: NatsConnection | null = null;
  /** Successful ticks so far (tests and the nodes view). */
  ticks = 0;

  constructor(private readonly o: ClusterOptions) {
    this.nodeId = o.nodeId;
    this.liveness = new LivenessCounter(o.nodeId, o.deadTicks);
    this.requests = new PeerRequests({ prefix: o.prefix, nodeId: o.nodeId, log: o.log });
    this.sizes = new NodeSizes({
      nodeId: o.nodeId,
      log: o.log,
      alive: (node) => this.liveness.alive(node),
      weight: o.weight,
      measureSize: o.measureSize,
      pressure: o.pressure,
    });
    // Younger than the ticks a peer waits before claiming (GONE_TICKS - 1 when NATS says
    // our connection is gone, else K - 1): a confirmation this fresh was issued before
    // any peer could have taken the camera.
    this.freshMs = Math.max(o.tickMs / 2, (Math.min(GONE_TICKS, o.deadTicks) - 1) * o.tickMs - o.tickMs / 2);
  }

  /**
   * Starts the node's cluster work on its NATS connection, in the background (buckets
   * are bound as JetStream becomes ready). Until then this node holds no camera and
   * config writes answer CLUSTER_UNAVAILABLE.
   */
  start(nc: NatsConnection): void {
    if (this.nc || this.halted) return;
    this.nc = nc;
    this.requests.listen(nc);
    void (async () => {
      for await (const s of nc.status()) if (s.type === Events.Reconnect) for (const stop of [...this.watches]) stop();
    })().catch(() => undefined);
    this.loopDone = this.loop();
    this.o.log.info(
      { node: this.nodeId, session: this.session, replicas: this.o.replicas, tickMs: this.o.tickMs, deadTicks: this.o.deadTicks },
      'cluster: joining',
    );
  }

  /** Registers what this node answers on `<prefix>.v1.node.<id>.<what>` (subscribed once NATS is there; cluster/peer-requests.ts). */
  serve(what: string, handler: PeerHandler): void {
    this.requests.serve(what, handler);
  }

  /** The nodes alive by this node's count, itself included, sorted. */
  liveNodes(): string[] {
    return this.liveness.aliveNodes();
  }

  holders(camera: string): string[] {
    return [...(this.holderMap.get(camera) ?? [])].sort();
  }

  peerHttp(node: string): string | null {
    return node === this.nodeId ? this.o.httpUrl() : (this.httpOf.get(node) ?? null);
  }

  /** Asks `node` on its own `<what>` subject (cluster/peer-requests.ts); a refusal stays typed. */
  ask<T>(node: string, what: string, body: unknown, timeoutMs = PEER_TIMEOUT_MS): Promise<T> {
    return this.requests.ask<T>(node, what, body, timeoutMs);
  }

  runsHere(camera: string): boolean {
    return this.held.has(camera);
  }

  /** Cameras this node holds, with their fence tokens. */
  heldCameras(): { camera: string; rev: number }[] {
    return [...this.held].map(([camera, h]) => ({ camera, rev: h.rev }));
  }

  /**
   * The fence token to stamp on the next bytes of `camera`, after making sure the
   * camera is still ours (module comment); CAMERA_FENCED when it is not.
   */
  async fence(camera: string): Promise<FenceStamp> {
    const h = this.held.get(camera);
    if (!h) throw new RecorderError('CAMERA_FENCED', `camera ${camera} is not held by node ${this.nodeId}`);
    const stamp = { node: this.nodeId, rev: h.rev };
    if (now() - h.confirmedAt <= this.freshMs || !this.ownersKv) return stamp;
    // NATS was unreachable a moment ago: do not make every GOP wait for it again.
    if (now() - this.unreachableAt < this.o.tickMs) return stamp;
    const issued = now();
    let entry: KvEntry | null;
    try {
      entry = await timeout(this.ownersKv.get(camera), FENCE_READ_TIMEOUT_MS, 'owner read');
    } catch (err) {
      this.unreachableAt = now();
      this.o.log.warn(
        { camera, err: (err as Error).message },
        'cluster: ownership cannot be confirmed (NATS unreachable); recording goes on under the last fence',
      );
      return stamp;
    }
    const owner = decode<Owner>(entry);
    if (this.held.get(camera) === h && owner?.node === this.nodeId && owner.session === this.session && entry?.revision === h.rev) {
      h.confirmedAt = issued;
      return stamp;
    }
    this.lose(camera, owner);
    throw new RecorderError('CAMERA_FENCED', `camera ${camera} is now held by ${owner?.node ?? 'nobody'}; node ${this.nodeId} stops writing it`);
  }

  async putCamera(camera: CameraConfig): Promise<void> {
    await this.config().put('camera', camera.id, camera);
  }

  async deleteCamera(id: string): Promise<void> {
    await this.config().remove('camera', id);
    await this.release(id);
  }

  /** The shared config (cluster/shared-config.ts); CLUSTER_UNAVAILABLE until it is mirrored. */
  config(): SharedConfig {
    if (!this.shared?.synced) throw new RecorderError('CLUSTER_UNAVAILABLE', 'the cluster config is not mirrored yet (JetStream not ready); try again');
    return this.shared;
  }

  /**
   * Before a retention pass deletes (actors/storage-supervisor.ts `syncLocks`): whether
   * this node's mirror holds every lock the cluster acknowledged (SharedConfig.barrier).
   */
  async barrier(): Promise<boolean> {
    return (await this.shared?.barrier()) ?? false;
  }

  /** Every node heard of, with its cameras as the last tick read them. */
  nodes(): ClusterNodeView[] {
    const all = new Set<string>([this.nodeId, ...this.peers]);
    const cams = new Map<string, string[]>();
    for (const [camera, o] of this.owners) cams.set(o.node, [...(cams.get(o.node) ?? []), camera]);
    const capacity = this.sizes.capacities();
    return [...all].sort().map((node) => ({
      node,
      http: node === this.nodeId ? this.o.httpUrl() : (this.httpOf.get(node) ?? null),
      alive: this.liveness.alive(node),
      self: node === this.nodeId,
      cameras: (cams.get(node) ?? []).sort(),
      missedTicks: node === this.nodeId ? null : (this.liveness.missed(node) ?? null),
      draining: node === this.nodeId ? this.draining : this.drainingPeers.has(node),
      weight: capacity.get(node)?.weight ?? 1,
      ...this.sizes.view(node),
      bitsPerSecond: (cams.get(node) ?? []).reduce((sum, camera) => sum + (this.bitrates.get(camera) ?? 0), 0),
    }));
  }

  /** The holders catalog (`<prefix>-holders`, key `<camera>.<node>`) kept as a map. */
  private async watchHolders(): Promise<void> {
    await this.watchKv(this.holdersKv!, 'holders', (e) => {
      const dot = e.key.lastIndexOf('.');
      const camera = e.key.slice(0, dot);
      const node = e.key.slice(dot + 1);
      const set = this.holderMap.get(camera) ?? new Set<string>();
      if (e.operation === 'PUT') set.add(node);
      else set.delete(node);
      this.holderMap.set(camera, set);
    });
  }

  /**
   * Applies every entry of a KV bucket, then every change, until the node stops. A
   * watch ends when its server dies (silent ~10 s, docs/design/cluster.md) or the stream moves:
   * it is opened again a tick later and replays the bucket, so `apply` is idempotent.
   */
  private async watchKv(kv: KV, what: string, apply: (e: KvEntry) => void): Promise<void> {
    while (!this.halted) {
      try {
        const it = await kv.watch({ key: '>' });
        const stop = (): void => it.stop();
        this.stopped.signal.addEventListener('abort', stop, { once: true });
        this.watches.add(stop);
        try {
          for await (const e of it) apply(e);
        } finally {
          this.watches.delete(stop);
          this.stopped.signal.removeEventListener('abort', stop);
        }
      } catch (err) {
        this.o.log.debug({ err: (err as Error).message }, `cluster: ${what} watch ended; again`);
      }
      await this.sleep(this.o.tickMs);
    }
  }

  /**
   * Leaves the cluster: stops recording the held cameras (their open segments closed),
   * then gives up their owner keys so survivors take them at their next tick, then
   * deletes the heartbeat (peers count this node gone at once).
   */
  async stop(): Promise<void> {
    if (this.stopped.signal.aborted) return;
    this.stopped.abort();
    this.shared?.stop();
    await this.loopDone;
    const cams = [...this.held.keys()];
    await Promise.allSettled(cams.map((c) => this.o.supervisor.remove(c)));
    await Promise.allSettled(cams.map((c) => this.release(c)));
    if (this.nodesKv) await timeout(this.nodesKv.delete(this.nodeId), KV_TIMEOUT_MS, 'heartbeat delete').catch(() => undefined);
    this.o.log.info({ node: this.nodeId, released: cams.length }, 'cluster: left');
  }

  // ---- the tick loop ----------------------------------------------------------

  private get halted(): boolean {
    return this.stopped.signal.aborted || this.o.signal.aborted;
  }

  private async loop(): Promise<void> {
    while (!this.halted) {
      const started = now();
      try {
        if (!this.ownersKv) await this.bind();
        else await this.tick();
      } catch (err) {
        this.o.log.warn({ err: (err as Error).message }, 'cluster: tick failed');
      }
      const wait = Math.max(0, this.o.tickMs - (now() - started));
      await this.sleep(wait);
    }
  }

  /** Waits `ms`, or less when the node leaves. */
  private sleep(ms: number): Promise<void> {
    return sleepUnlessStopped(ms, this.stopped.signal);
  }

  /** Binds (creating where missing) the three buckets; retried each tick until JetStream answers. */
  private async bind(): Promise<void> {
    const js = this.nc!.jetstream({ timeout: KV_TIMEOUT_MS });
    const opts = { replicas: this.o.replicas, history: 1, timeout: KV_TIMEOUT_MS };
    try {
      const nodes = await js.views.kv(`${this.o.prefix}-nodes`, { ...opts, ttl: NODES_TTL_MS });
      const owners = await js.views.kv(`${this.o.prefix}-owners`, opts);
      const config = await js.views.kv(`${this.o.prefix}-config`, opts);
      this.holdersKv ??= await js.views.kv(`${this.o.prefix}-holders`, opts);
      this.nodesKv = nodes;
      this.ownersKv = owners;
      this.shared = new SharedConfig(config, {
        index: this.o.index,
        supervisor: this.o.supervisor,
        storage: this.o.storage,
        log: this.o.log,
        holds: (camera) => this.held.has(camera),
        usersChanged: this.o.usersChanged,
        cameraChanged: (camera) => {
          // The same config put again (a retried write, the writer's own echo) must not restart its ingest.
          if (this.held.has(camera.id) && this.startedWith.get(camera.id) !== JSON.stringify(camera)) this.startCamera(camera);
        },
        cameraDeleted: async (camera) => {
          if (this.held.has(camera)) await this.o.supervisor.remove(camera);
          await this.release(camera);
        },
      });
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message }, 'cluster: JetStream KV not ready yet; retrying');
      return;
    }
    this.o.log.info({ node: this.nodeId }, 'cluster: buckets bound');
    if (!this.watchingNodes) {
      this.watchingNodes = true;
      void this.watchNodes();
      void this.watchHolders();
    }
    const shared = this.shared;
    try {
      await shared.start((err) => {
        // The watch ended by itself (its server died and it could not resume): bind afresh.
        if (this.halted || this.shared !== shared) return;
        this.o.log.warn({ err: err instanceof Error ? err.message : undefined }, 'cluster: config watch ended; binding again');
        this.shared = null;
        this.ownersKv = null;
      });
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message }, 'cluster: config mirror not started; retrying');
      this.shared = null;
      this.ownersKv = null;
    }
  }

  /** A peer to watch; one first seen after this node's start-up is a late arrival (a join). */
  private addPeer(node: string): void {
    if (this.peers.has(node)) return;
    this.peers.add(node);
    if (this.ticks > 2 * this.o.deadTicks) this.lateArrivals.add(node);
  }

  private async watchNodes(): Promise<void> {
    await this.watchKv(this.nodesKv!, 'nodes', (e) => {
      const hb = decode<Heartbeat>(e);
      if (e.key !== this.nodeId) this.addPeer(e.key);
      if (hb) this.httpOf.set(hb.node, hb.http);
    });
  }

  private async tick(): Promise<void> {
    const nodes = this.nodesKv!;
    const owners = this.ownersKv!;
    this.measure();
    const sized = this.sizes.beat();
    // What peers read of us this tick; our own view uses the same (not what pruning leaves below).
    const reported: Bitrates = new Map(this.measured);
    const beat: Heartbeat = {
      node: this.nodeId,
      session: this.session,
      http: this.o.httpUrl(),
      cameras: this.held.size,
      ...(this.draining ? { draining: true } : {}),
      ...sized,
      ...(reported.size > 0 ? { bitsPerSecond: Object.fromEntries([...reported].sort(([a], [b]) => (a < b ? -1 : 1))) } : {}),
    };
    const cameras = this.o.index.cameras.list().filter((c) => !c.transient);
    const issued = now();
    // The owner reads go out with the beat, not after it: a tick is one round trip, not
    // two, so it keeps its period on a loaded machine (detection counts ticks).
    const readsDone = Promise.all(
      cameras.map(async (c) => {
        try {
          return { camera: c.id, ok: true as const, entry: await timeout(owners.get(c.id), KV_TIMEOUT_MS, 'owner read') };
        } catch (err) {
          return { camera: c.id, ok: false as const, entry: null, err: (err as Error).message };
        }
      }),
    );
    let beatOk = false;
    try {
      await timeout(nodes.put(this.nodeId, json.encode(beat)), KV_TIMEOUT_MS, 'heartbeat');
      beatOk = true;
      if (this.beatFailing) this.o.log.info('cluster: heartbeats succeed again');
      this.beatFailing = false;
      this.beatFailingSince = null;
      this.unavailableRaised = false;
    } catch (err) {
      if (!this.beatFailing) this.o.log.warn({ err: (err as Error).message }, 'cluster: heartbeat failed (no tick counted, nothing claimed)');
      this.beatFailing = true;
      this.beatFailingSince ??= now();
      // Longer than any leader election (4-9 s): no quorum. Once per outage.
      if (!this.unavailableRaised && now() - this.beatFailingSince > UNAVAILABLE_ALARM_MS) {
        this.unavailableRaised = true;
        this.o.raiseAlarm?.({
          kind: 'cluster-unavailable',
          message: `cluster state unreachable for ${Math.round((now() - this.beatFailingSince) / 1000)} s (no JetStream quorum?): recording goes on, nothing moves, config changes are refused`,
          details: { error: (err as Error).message },
        });
      }
    }
    const reads = await readsDone;
    // Owner reads of held cameras failing while heartbeats go through would keep this node
    // recording a camera it lost: said once when they start failing, and when they stop.
    const heldFailing = reads.filter((r) => !r.ok && this.held.has(r.camera));
    if (heldFailing.length > 0 && !this.ownerReadsFailing) {
      this.ownerReadsFailing = true;
      this.o.log.warn(
        { cameras: heldFailing.map((r) => r.camera), err: 'err' in heldFailing[0]! ? heldFailing[0].err : undefined, beatOk },
        'cluster: owner reads of held cameras fail',
      );
    } else if (heldFailing.length === 0 && this.ownerReadsFailing) {
      this.ownerReadsFailing = false;
      this.o.log.info('cluster: owner reads of held cameras succeed again');
    }
    const current = new Map<string, Owner>();
    for (const r of reads) {
      const o = decode<Owner>(r.entry);
      if (o) current.set(r.camera, o);
      if (o && o.node !== this.nodeId) this.addPeer(o.node);
    }
    this.owners = current;
    if (beatOk) {
      const seen = new Map<string, number>();
      const gone = new Map<string, boolean>();
      await Promise.all([
        ...[...this.peers].map(async (peer) => {
          // Half a tick at most, so a hung peer's silence never stretches our tick (its K counts on).
          const g = await this.requests.pingGone(peer, this.o.tickMs / 2);
          if (g !== null) gone.set(peer, g);
        }),
        ...[...this.peers].map(async (peer) => {
          try {
            const e = await timeout(nodes.get(peer), KV_TIMEOUT_MS, 'heartbeat read');
            // A deleted heartbeat: the node left (cluster/liveness.ts counts it gone at once).
            seen.set(peer, e === null ? 0 : e.operation === 'PUT' ? e.revision : -1);
            const hb = decode<Heartbeat>(e);
            if (hb?.draining) this.drainingPeers.add(peer);
            else this.drainingPeers.delete(peer);
            if (hb) this.sizes.peerBeat(peer, hb);
            // A node that left cleanly released its cameras and deleted its beat: nothing of it is reported.
            if (hb) this.peerBitrates.set(peer, bitratesOf(hb));
            else this.peerBitrates.delete(peer);
          } catch {
            /* not counted this tick */
          }
        }),
      ]);
      this.liveness.tick(seen, gone);
      this.ticks++;
      for (const peer of this.peers) {
        const dead = this.liveness.dead(peer);
        if (dead && !this.deadPeers.has(peer)) {
          this.deadPeers.set(peer, Date.now());
          this.steadyPeers.delete(peer);
          this.o.raiseAlarm?.({ kind: 'node-left', message: `cluster node ${peer} stopped beating: judged dead, its cameras move`, details: { node: peer } });
          this.o.peerDied?.(peer);
        } else if (!dead && this.liveness.aliveTicks(peer) > this.o.deadTicks && !this.steadyPeers.has(peer)) {
          // Beating for K ticks in a row: not a stale heartbeat record of a node long gone.
          this.steadyPeers.add(peer);
          const deadAt = this.deadPeers.get(peer) ?? null;
          const back = this.deadPeers.delete(peer);
          if (back) this.o.log.info({ node: peer }, 'cluster: node alive again');
          if (back || this.lateArrivals.delete(peer)) this.o.peerJoined?.(peer, deadAt);
        }
      }
    }
    // Ours: confirmed, lost, or found (a claim whose answer timed out but that committed).
    const orphans: string[] = [];
    /** Ours from an earlier life of this node (a restart): taken back at once, by CAS. */
    const earlier: string[] = [];
    const live = new Map<string, OwnerView>();
    for (const r of reads) {
      if (!r.ok) continue;
      const o = decode<Owner>(r.entry);
      const h = this.held.get(r.camera);
      const mine = o?.node === this.nodeId && o.session === this.session;
      if (h) {
        if (mine && r.entry!.revision === h.rev) h.confirmedAt = issued;
        else if (mine) this.held.set(r.camera, { rev: r.entry!.revision, confirmedAt: issued });
        else this.lose(r.camera, o);
      } else if (mine) {
        this.adopt(r.camera, r.entry!.revision, issued);
      }
      if (o?.node === this.nodeId && !mine) earlier.push(r.camera);
      else if (o && this.liveness.alive(o.node)) live.set(r.camera, o);
      else if (!o || this.liveness.dead(o.node)) orphans.push(r.camera);
    }
    for (const camera of this.held.keys()) this.catalog(camera);
    const ownerOf = new Map([...current].map(([camera, o]) => [camera, o.node]));
    this.bitrates = bitrateView(
      cameras.map((c) => c.id),
      ownerOf,
      new Map([...this.peerBitrates, [this.nodeId, reported]]),
    );
    this.pruneMeasured(new Set(cameras.map((c) => c.id)), ownerOf);
    if (!beatOk || !this.shared?.synced || this.halted) return;
    for (const camera of earlier) live.set(camera, { node: this.nodeId });
    if (this.draining) return this.giveUpOne(null);
    // Placement skips nodes being drained.
    const eligible = this.liveness.aliveNodes().filter((n) => !this.drainingPeers.has(n));
    const plan = placeOrphans(orphans, live, eligible, this.sizes.capacities(), this.bitrates);
    if (plan.size === 0) this.rebalance(live, eligible);
    const entries = new Map(reads.map((r) => [r.camera, r.entry]));
    const mineToClaim = [...earlier, ...[...plan].filter(([, node]) => node === this.nodeId).map(([camera]) => camera)];
    await Promise.all(mineToClaim.map((camera) => this.claim(camera, entries.get(camera) ?? null)));
  }

  /**
   * Rebalancing (a node joined or came back, or bitrates changed): when moving one of
   * this node's cameras to the least-loaded steady node (alive for 2·K ticks in a row)
   * leaves that node no more loaded than this one, by measured bitrate (with equal
   * weights and nothing measured: two cameras more), it gives that camera up; one per
   * tick, placement hands it on at the next tick.
   */
  private rebalance(owners: ReadonlyMap<string, OwnerView>, eligible: readonly string[]): void {
    const steady = eligible.filter((n) => n === this.nodeId || this.liveness.aliveTicks(n) >= 2 * this.o.deadTicks);
    const give = shouldGiveUp(this.nodeId, owners, steady, this.sizes.capacities(), this.bitrates);
    if (give) this.giveUpOne(give.why, give.camera);
  }

  /** Measures the bitrate of each held camera (what the next heartbeat reports). */
  private measure(): void {
    const bitrate = this.o.bitrate;
    if (!bitrate) return;
    for (const camera of this.held.keys()) {
      let bps: number | null;
      try {
        bps = bitrate(camera);
      } catch (err) {
        this.o.log.debug({ camera, err: (err as Error).message }, 'cluster: bitrate not measured');
        continue;
      }
      if (bps !== null && Number.isFinite(bps) && bps > 0) this.measured.set(camera, Math.round(bps));
    }
  }

  /**
   * Forgets the bitrate of a camera this node no longer holds once its new owner reports
   * it (until then ours keeps the camera's weight in every node's view, so a camera that
   * just moved does not count as the median and draw a second move), or once it is
   * no longer configured.
   */
  private pruneMeasured(configured: ReadonlySet<string>, ownerOf: ReadonlyMap<string, string>): void {
    for (const camera of [...this.measured.keys()]) {
      if (this.held.has(camera)) continue;
      const owner = ownerOf.get(camera);
      const reportedByOwner = owner !== undefined && owner !== this.nodeId && this.peerBitrates.get(owner)?.has(camera) === true;
      if (!configured.has(camera) || reportedByOwner) this.measured.delete(camera);
    }
  }

  /**
   * Stops one held camera (`camera`, or the last by id) and releases its owner key;
   * `why` null: draining. One at a time: nothing while a give-up is under way.
   */
  private giveUpOne(why: string | null, camera = [...this.held.keys()].sort().pop()): void {
    if (camera === undefined || !this.held.has(camera) || this.releasing) return;
    this.releasing = true;
    this.o.log.info({ camera, why: why ?? 'draining' }, 'cluster: giving a camera up');
    void (async () => {
      try {
        await this.o.supervisor.remove(camera);
        await this.release(camera);
      } finally {
        this.releasing = false;
      }
    })();
  }

  /**
   * Drain (`POST /api/cluster/drain`, `rec.v1.cluster.drain`): this node takes no camera
   * and gives its cameras up one per tick, until undrained; said in its heartbeat.
   */
  drain(on: boolean): { node: string; draining: boolean; cameras: number } {
    this.draining = on;
    this.o.log.info({ node: this.nodeId, draining: on }, on ? 'cluster: draining' : 'cluster: drain ended');
    return { node: this.nodeId, draining: on, cameras: this.held.size };
  }

  private async claim(camera: string, entry: KvEntry | null): Promise<void> {
    const owners = this.ownersKv!;
    const previous = decode<Owner>(entry);
    const value = json.encode({ node: this.nodeId, session: this.session, at: new Date().toISOString() } satisfies Owner);
    const issued = now();
    let rev: number;
    try {
      rev = await timeout(entry ? owners.update(camera, value, entry.revision) : owners.create(camera, value), KV_TIMEOUT_MS, 'claim');
    } catch (err) {
      // Another node won the CAS, or no answer (it may still have committed: the next tick reads it).
      this.o.log.debug({ camera, err: (err as Error).message }, 'cluster: claim not granted');
      return;
    }
    this.o.log.info({ camera, fence: rev, from: previous?.node ?? null }, 'cluster: camera claimed');
    this.adopt(camera, rev, issued);
  }

  private adopt(camera: string, rev: number, confirmedAt: number): void {
    if (this.halted) return;
    this.held.set(camera, { rev, confirmedAt });
    this.catalog(camera);
    const config = this.o.index.cameras.get(camera);
    if (config) this.startCamera(config);
  }

  private startCamera(camera: CameraConfig): void {
    this.startedWith.set(camera.id, JSON.stringify(camera));
    try {
      this.o.supervisor.upsert(camera, this.o.index.schedules.get(camera.id));
    } catch (err) {
      this.o.log.warn({ camera: camera.id, err: (err as Error).message }, 'cluster: camera not started');
    }
  }

  /**
   * Search asks every node that ever held the camera: this node's entry in the holders
   * catalog, written once per session (a write that failed is tried again each tick;
   * a node that copied a segment of the camera writes it too: cluster/copies.ts).
   */
  catalog(camera: string): void {
    if (this.cataloged.has(camera) || this.cataloging.has(camera) || !this.holdersKv) return;
    this.cataloging.add(camera);
    const entry = json.encode({ node: this.nodeId, since: new Date().toISOString() });
    void timeout(this.holdersKv.put(`${camera}.${this.nodeId}`, entry), KV_TIMEOUT_MS, 'holders')
      .then(() => this.cataloged.add(camera))
      .catch((err: unknown) => this.o.log.debug({ camera, err: (err as Error).message }, 'cluster: holders catalog not written; again next tick'))
      .finally(() => this.cataloging.delete(camera));
  }

  /** Another node holds the camera now (or nobody): stop recording it at once. */
  private lose(camera: string, owner: Owner | null): void {
    const h = this.held.get(camera);
    if (!h || !this.held.delete(camera)) return;
    const lastConfirmedMs = Date.now() - (now() - h.confirmedAt);
    this.startedWith.delete(camera);
    this.o.log.warn({ camera, to: owner?.node ?? null }, 'cluster: camera lost to another node; recording it stops here');
    const stopped = this.o.supervisor.remove(camera).catch((err: unknown) => this.o.log.error({ camera, err }, 'cluster: stopping a lost camera failed'));
    // After the camera's last segment is closed here: that is where what we recorded ends.
    void stopped.then(() => {
      try {
        this.o.cameraLost?.(camera, h.rev, lastConfirmedMs);
      } catch (err) {
        this.o.log.error({ camera, err }, 'cluster: the partition overlap heal could not start');
      }
    });
  }

  /** Gives up the owner key of a camera we hold (CAS on our revision: never someone else's grant). */
  private async release(camera: string): Promise<void> {
    const h = this.held.get(camera);
    if (!h || !this.ownersKv) return;
    this.held.delete(camera);
    this.startedWith.delete(camera);
    await timeout(this.ownersKv.delete(camera, { previousSeq: h.rev }), KV_TIMEOUT_MS, 'release').catch((err: unknown) =>
      this.o.log.debug({ camera, err: (err as Error).message }, 'cluster: release not confirmed (survivors take it once we count dead)'),
    );
  }
}

/** The KV replicas for a cluster whose servers are these URLs: 3 when there are three or more. */
export function replicasFor(urls: readonly string[]): number {
  const hosts = new Set(
    urls
      .map((u) =>
        u
          .trim()
          .replace(/^\w+:\/\//, '')
          .replace(/^[^@]*@/, ''),
      )
      .filter(Boolean),
  );
  return Math.max(1, Math.min(3, hosts.size));
}

/** Whether the settings put this node in cluster mode (docs/cluster.md "Joining"). */
export function clusterMode(config: Pick<RecorderConfig, 'cluster' | 'natsUrl'>): boolean {
  if (config.cluster !== 'auto') return config.cluster === 'on';
  return (config.natsUrl ?? '').split(',').filter((u) => u.trim()).length > 1;
}
