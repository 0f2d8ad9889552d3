/**
 * The domain functions behind both interfaces. HTTP and NATS handlers validate with
 * schemas.ts, call exactly one of these, and map RecorderError to their wire shape.
 */
import type { Supervisor, CameraLiveState } from '../actors/supervisor.ts';
import type { CameraStatus, IngestMedia } from '../actors/deps.ts';
import type { RecorderIndex } from '../index/db.ts';
import type { CameraConfig, SchedulePlan } from '../index/records.ts';
import { clipSpans, intersectRanges, search, type RangeMs } from '../index/search.ts';
import type { LabelView, LockView, StorageService } from './storage-service.ts';
import { labelView, lockView } from './storage-service.ts';
import type { PictureService } from './picture-service.ts';
import { ClusterPictures } from './cluster-pictures.ts';
import type { PackRange } from '../pictures/copy-pack.ts';
import { CameraNotFoundError, RecorderError } from '../lib/errors.ts';
import { assertRunning } from '../lib/lifecycle.ts';
import { iso, parseRangeMs, type Clock } from '../lib/time.ts';
import type { Logger } from '../lib/log.ts';
import type { LiveSink, LiveViewer } from '../live/live-fanout.ts';
import {
  backfillSchema,
  clusterDrainSchema,
  cameraDeleteSchema,
  cameraIdSchema,
  cameraPutSchema,
  eventSchema,
  manualSchema,
  schedulePutSchema,
  searchSchema,
  validate,
} from './schemas.ts';
import type { BackfillManager } from '../backfill/manager.ts';
import type { CameraPlacement, ClusterNodeView } from '../cluster/cluster.ts';
import type { CopyStatus } from '../cluster/copies.ts';
import type { PictureCopyStatus } from '../cluster/picture-copies.ts';
import type { BackupStatus } from '../cluster/backup-sender.ts';
import type { PictureBackupStatus } from '../cluster/picture-backup.ts';
import { chooseMediaSource, pullMissing, type RemoteSegment } from './media-source.ts';
import { playbackWindow, searchBody, spanTimes, wholeRange, WINDOW_MS, type PlaybackWindow, type SessionRange } from './playback-windows.ts';

/** What the service uses of the node's copy work (cluster/copies.ts). */
export interface ClusterCopies {
  status(): CopyStatus;
  /** This node's backups of pools to another cluster (cluster/backup-sender.ts). */
  backups?(): BackupStatus[];
  /** This node's picture backups of pools to another cluster (cluster/picture-backup.ts). */
  pictureBackups?(): PictureBackupStatus[];
  /** This node's copy work on picture packs (cluster/picture-copies.ts). */
  pictures?(): PictureCopyStatus;
  /** Pulls one closed segment of `camera` from `node` and indexes it here (true: copied). */
  pull(node: string, camera: string, seg: RemoteSegment): Promise<boolean>;
  /** The token peers show each other over HTTP (null before the cluster's shared store gave one). */
  clusterToken(): string | null;
}
import { mergeSearch } from './search-merge.ts';
import { BadTimeError } from '../lib/errors.ts';
import { SmartService } from './smart-service.ts';
import { parseTimeMs } from '../lib/time.ts';
import { systemInfo, type SystemInfo } from '../ops/system.ts';
import { redactCamera, redactText, restoreRedacted } from '../security/redact.ts';

/** Events further than this from now are refused: a wrong clock, not an event. */
const EVENT_SKEW_MS = 24 * 3600_000;

export const VERSION = '0.1.0';

export interface CameraView extends CameraConfig {
  status: CameraLiveState['state'];
  manual: boolean;
  lastError: string | null;
  lastVideoAt: string | null;
  /** What the last attempt that recorded did with the camera's audio; null before one did. */
  audio: IngestMedia['audio'] | null;
  /** The RTSP transport of that attempt (`transport` is the setting). */
  transportInUse: IngestMedia['transportInUse'];
  /** Who read the camera in that attempt (ffmpeg, native, mp2p); null before one recorded. */
  ingest: IngestMedia['ingest'] | null;
}

/**
 * How a camera is shown: `credentials: true` (admins over HTTP) with the passwords of
 * its URLs, otherwise with them replaced by `***` (security/redact.ts). NATS replies
 * are never trusted with them (docs/design/security.md "Credentials").
 */
export interface ViewOptions {
  credentials?: boolean;
}

export interface SearchView {
  spans: { from: string; to: string; types: { type: string; from: string; to: string }[]; locks: LockView[]; labels: LabelView[] }[];
  gaps: { from: string; to: string; state: string; reason: string; attempts: number; error?: { code: string; message: string } }[];
  /** In a cluster: true when a node that held the camera did not answer (its video may be missing here). */
  partial?: boolean;
  /** Those nodes' ids. */
  unreachable?: string[];
}

export class RecorderService {
  /** Cameras that live only in memory (the demo camera). */
  private readonly transient = new Map<string, CameraConfig>();
  private storageService: StorageService | null = null;
  private backfillManager: BackfillManager | null = null;
  /** In a cluster (cluster/cluster.ts): cameras are shared through its KV and run where it places them. */
  private cluster: CameraPlacement | null = null;
  private picturesAcross: ClusterPictures | null = null;
  /** This node's copy work (cluster/copies.ts): shown with the nodes, and the pulls that stitch a split range. */
  private copies: ClusterCopies | null = null;
  /** Recording time a playback session pulls from other nodes at a time (services/playback-windows.ts). */
  private playbackWindowMs = WINDOW_MS;
  /** Audio handling and transport of each camera's recording attempt, from its published statuses. */
  private readonly media = new Map<string, IngestMedia>();

  constructor(
    private readonly index: RecorderIndex,
    private readonly supervisor: Supervisor,
    private readonly clock: Clock,
    private readonly dataDir: string,
    private readonly log: Logger,
    /** The node's shutdown signal (lib/lifecycle.ts): once aborted, no camera is started. */
    private readonly signal?: AbortSignal,
  ) {}

  /** Back-fill from edge storage (wired by the node). */
  attachBackfill(manager: BackfillManager): void {
    this.backfillManager = manager;
  }

  /** `rec.v1.backfill`: fetch [from, to) from the camera's edge storage (async; progress on NATS and in search). */
  async backfill(body: unknown): Promise<{ camera: string; from: string; to: string; gaps: { from: string; to: string; state: string }[] }> {
    const q = validate(backfillSchema, body);
    this.requireConfiguredCamera(q.camera);
    const { fromMs, toMs } = parseRangeMs(q.from, q.to);
    if (!this.backfillManager) throw new Error('back-fill not attached');
    const gaps = await this.backfillManager.request(q.camera, fromMs, toMs);
    return { camera: q.camera, from: iso(fromMs), to: iso(toMs), gaps: gaps.map((g) => ({ from: iso(g.startMs), to: iso(g.endMs ?? toMs), state: g.state })) };
  }

  /**
   * Cluster mode (wired by the node before the cameras resume): camera configs go to the
   * shared KV before the local index, and a camera runs only on the node that holds it.
   */
  attachCluster(cluster: CameraPlacement, copies?: ClusterCopies, playbackWindowMs = WINDOW_MS): void {
    this.cluster = cluster;
    this.playbackWindowMs = playbackWindowMs;
    if (copies) this.copies = copies;
    this.storageService?.attachCluster(cluster);
  }

  /** Pools, locks and labels (wired by the node once storage is up). */
  attachStorage(storage: StorageService): void {
    this.storageService = storage;
  }

  get storage(): StorageService {
    if (!this.storageService) throw new Error('storage service not attached');
    return this.storageService;
  }

  /** Pictures (services/picture-service.ts; wired by the node before HTTP and NATS). */
  pictures!: PictureService;

  /** Starts an actor for every camera persisted in the index (restart without the VMS). */
  resume(): number {
    const cameras = this.index.cameras.list();
    // In a cluster a camera starts once this node holds it (cluster/cluster.ts claims it).
    if (this.cluster) return 0;
    for (const camera of cameras) this.supervisor.upsert(camera, this.index.schedules.get(camera.id));
    return cameras.length;
  }

  /**
   * A URL sent back with the password `***` (what a client was shown) keeps the stored
   * password of the same user at the same host, or is refused (security/redact.ts).
   */
  async putCamera(body: unknown, opts: { transient?: boolean } & ViewOptions = {}): Promise<CameraView> {
    assertRunning(this.signal, 'camera.put');
    const valid = validate(cameraPutSchema, body);
    const parsed = restoreRedacted(valid, this.transient.get(valid.id) ?? this.index.cameras.get(valid.id));
    // A pool just put on another node may not be mirrored here yet: wait for the mirror to
    // reach the bucket's last change (≤ 2 s) before calling it unknown.
    if (this.cluster && !this.index.pools.get(parsed.pool) && !(await this.cluster.barrier().catch(() => false))) {
      throw new RecorderError(
        'CLUSTER_UNAVAILABLE',
        `pool ${JSON.stringify(parsed.pool)} is not here and the cluster config could not be confirmed mirrored; try again`,
      );
    }
    this.storage.requirePool(parsed.pool);
    const camera: CameraConfig = { ...parsed, ...(opts.transient ? { transient: true } : {}) };
    if (opts.transient) this.transient.set(camera.id, camera);
    else {
      // Shared first: a change the cluster did not confirm is refused (CLUSTER_UNAVAILABLE), not kept here alone.
      await this.cluster?.putCamera(camera);
      await this.index.cameras.put(camera.id, camera);
    }
    if (this.signal?.aborted) {
      // Stored while the shutdown began: it starts with the next start, like every camera.
      this.log.info({ camera: camera.id }, 'camera configured during shutdown: not started');
      return this.view(camera, opts);
    }
    // In a cluster the holder's mirror of the shared config reconfigures its actor (cluster/cluster.ts), once.
    if (!this.cluster || camera.transient) this.supervisor.upsert(camera, this.index.schedules.get(camera.id));
    this.log.info({ camera: camera.id }, 'camera configured');
    return this.view(camera, opts);
  }

  async deleteCamera(body: unknown): Promise<{ id: string; purged: number }> {
    const { id, purge } = validate(cameraDeleteSchema, body);
    const camera = this.requireConfiguredCamera(id);
    if (!camera.transient) await this.cluster?.deleteCamera(id);
    await this.supervisor.remove(id);
    this.transient.delete(id);
    let purged = 0;
    // A purge deletes as retention does: crash-safe, backup copies too, under the storage mutex.
    if (purge) purged = await this.storage.purgeCamera(id);
    else await this.index.cameras.remove(id);
    this.log.info({ camera: id, purge, purged }, 'camera deleted');
    return { id, purged };
  }

  listCameras(opts: ViewOptions = {}): CameraView[] {
    return [...this.index.cameras.list(), ...this.transient.values()].map((c) => this.view(c, opts));
  }

  getCamera(body: unknown, opts: ViewOptions = {}): CameraView {
    const { id } = validate(cameraIdSchema, body);
    return this.view(this.requireConfiguredCamera(id), opts);
  }

  async putSchedule(body: unknown): Promise<SchedulePlan> {
    const parsed = validate(schedulePutSchema, body);
    const camera = this.requireConfiguredCamera(parsed.camera);
    const plan: SchedulePlan = parsed;
    if (!camera.transient) {
      await this.cluster?.config().put('schedule', plan.camera, plan);
      await this.index.schedules.put(plan.camera, plan);
    }
    this.supervisor.setPlan(plan);
    return plan;
  }

  /** An NVR-style event (docs/api/nats.md `rec.v1.event.<camera>`). */
  event(cameraId: string, body: unknown): { camera: string; type: string; action: string; at: string; recording: boolean } {
    const e = validate(eventSchema, body);
    this.requireConfiguredCamera(cameraId);
    const now = this.clock.nowMs();
    const atMs = e.at === undefined ? now : parseTimeMs(e.at, 'at');
    if (Math.abs(atMs - now) > EVENT_SKEW_MS) throw new BadTimeError(`event time ${iso(atMs)} is more than 24 h from now`);
    const recording = this.supervisor.event(cameraId, { type: e.type, action: e.action, atMs, ...(e.seconds !== undefined ? { seconds: e.seconds } : {}) });
    // The event's I-frame as a picture typed with it (services/picture-service.ts), once recorded.
    if (recording && e.action !== 'stop') this.pictures?.eventSnapshot(cameraId, e.type, atMs);
    return { camera: cameraId, type: e.type, action: e.action, at: iso(atMs), recording };
  }

  /** Manual recording on or off (type `manual`; events during it still change the type). */
  manual(body: unknown, on: boolean): { camera: string; manual: boolean } {
    const { camera } = validate(manualSchema, body);
    this.requireConfiguredCamera(camera);
    this.supervisor.manual(camera, on);
    return { camera, manual: on };
  }

  /**
   * Search. In a cluster it merges what every node that held the camera has
   * (services/search-merge.ts), asked over each node's own subject in parallel; a node
   * that does not answer makes the answer `partial`, never silently shorter.
   */
  async search(body: unknown): Promise<SearchView> {
    const local = this.localSearch(body);
    const cluster = this.cluster;
    if (!cluster) return local;
    const { camera } = validate(searchSchema, body);
    const peers = cluster.holders(camera).filter((n) => n !== cluster.nodeId);
    if (peers.length === 0) return local;
    const answers = await Promise.all(
      peers.map((node) =>
        cluster.ask<SearchView>(node, 'search', body).then(
          (v) => ({ node, view: { spans: v.spans, gaps: v.gaps } }),
          () => ({ node, view: null }),
        ),
      ),
    );
    const merged = mergeSearch([local, ...answers.flatMap((a) => (a.view ? [a.view] : []))]);
    const unreachable = answers.filter((a) => !a.view).map((a) => a.node);
    return unreachable.length > 0 ? { ...merged, partial: true, unreachable } : { ...merged, partial: false };
  }

  /**
   * In a cluster, where a media request for [fromMs, toMs) of a camera is best served:
   * null here (this node has the most of the range, or no node has more), else the HTTP
   * base URL of the node that holds the most of it (api/cluster-routes.ts proxies there).
   */
  async mediaSource(camera: string, fromMs: number, toMs: number): Promise<{ node: string; http: string } | null> {
    if (!this.cluster) return null;
    const copies = this.copies;
    return chooseMediaSource(
      {
        cluster: this.cluster,
        localSearch: (q) => this.localSearch(q),
        hasSegment: (c, startMs) => this.index.segments.get(c, startMs) !== undefined,
        ...(copies ? { pull: (node: string, c: string, seg: RemoteSegment) => copies.pull(node, c, seg) } : {}),
        log: this.log,
      },
      camera,
      fromMs,
      toMs,
    );
  }

  /**
   * The window a playback session plays next (services/playback-windows.ts): in a
   * cluster, what other nodes hold of it is pulled here first; alone, the whole range.
   */
  async playbackWindow(camera: string, r: SessionRange, signal?: AbortSignal): Promise<PlaybackWindow> {
    const cluster = this.cluster;
    if (!cluster) return wholeRange(r);
    const copies = this.copies;
    const hasSegment = (c: string, startMs: number): boolean => this.index.segments.get(c, startMs) !== undefined;
    return playbackWindow(
      {
        cluster,
        segments: this.index.segments,
        spans: async (c, from, to) => spanTimes(await this.search(searchBody(c, from, to))),
        pullMissing: (c, from, to, sig) =>
          pullMissing(
            { cluster, hasSegment, ...(copies ? { pull: (node: string, cam: string, seg: RemoteSegment) => copies.pull(node, cam, seg) } : {}) },
            c,
            from,
            to,
            undefined,
            sig,
          ),
        nowMs: () => this.clock.nowMs(),
        windowMs: this.playbackWindowMs,
      },
      camera,
      r,
      signal,
    );
  }

  /** In a cluster: the live node that records `camera` when this one does not (live view is relayed from it), or null. */
  liveSource(camera: string): { node: string; http: string } | null {
    const cluster = this.cluster;
    if (!cluster || cluster.runsHere(camera)) return null;
    const owner = cluster.nodes().find((n) => !n.self && n.alive && n.cameras.includes(camera));
    return owner?.http ? { node: owner.node, http: owner.http } : null;
  }

  /**
   * In a cluster: the node that stores picture `id` when this one does not (asked on each
   * holder of its camera's `picture` subject), or null: here, or nowhere (the route
   * answers PICTURE_NOT_FOUND).
   */
  async pictureSource(id: string): Promise<{ node: string; http: string } | null> {
    const node = await this.clusterPictures.holderOf(id);
    const http = node === null ? null : (this.cluster?.peerHttp(node) ?? null);
    return node !== null && http ? { node, http } : null;
  }

  /**
   * A peer copying pictures (cluster/picture-copies.ts): the durable bytes of `origin`'s
   * pack `pack` this node holds from origin offset `from` (0: its first record), with
   * the locks of their pictures. NOT_FOUND outside a cluster or when none of it is here.
   */
  async picturePackRange(origin: string, pack: number, from: number): Promise<PackRange> {
    const cluster = this.cluster;
    if (!cluster) throw new RecorderError('NOT_FOUND', 'this node is not in a cluster');
    const r = await this.pictures.storage.copies.range(cluster.nodeId, origin, pack, from);
    if (!r) throw new RecorderError('NOT_FOUND', `no picture pack ${origin}/${pack} from offset ${from} on this node`);
    return r;
  }

  /** Pictures through every node of the cluster (search, search by image, batch locks; services/cluster-pictures.ts). */
  get clusterPictures(): ClusterPictures {
    this.picturesAcross ??= new ClusterPictures(
      this.pictures,
      () => this.cluster,
      () => this.copies?.clusterToken() ?? null,
    );
    return this.picturesAcross;
  }

  /** This node's closed segments of a camera in a range (what a peer stitching a split range asks: `<prefix>.v1.node.<id>.segments`). */
  localSegments(body: unknown): { segments: RemoteSegment[] } {
    const q = validate(searchSchema, body);
    this.requireCamera(q.camera);
    const { fromMs, toMs } = parseRangeMs(q.from, q.to);
    const segments = this.index.segments
      .overlapping(q.camera, fromMs, toMs)
      .filter((s) => !s.open)
      .map((s) => ({ startMs: s.startMs, endMs: s.endMs, bytes: s.bytes, pool: s.pool, ...(s.fence ? { fence: s.fence } : {}) }));
    return { segments };
  }

  /** This node's own index only (what a peer asks for: `<prefix>.v1.node.<id>.search`). */
  localSearch(body: unknown): SearchView {
    const q = validate(searchSchema, body);
    this.requireCamera(q.camera);
    const { fromMs, toMs } = parseRangeMs(q.from, q.to);
    const result = search(this.index, { camera: q.camera, fromMs, toMs, types: q.types, nowMs: this.clock.nowMs() });
    const locks = this.storage.locksIn(q.camera, fromMs, toMs);
    const labels = this.storage.labelsIn([q.camera], fromMs, toMs);
    let spans = result.spans;
    let within: RangeMs[] | null = null;
    if (q.locked) within = locks.map((l) => ({ fromMs: l.startMs, toMs: l.endMs }));
    if (q.label !== undefined) {
      const needle = q.label.toLowerCase();
      const labelled = labels.filter((l) => l.text.toLowerCase().includes(needle)).map((l) => ({ fromMs: l.startMs, toMs: l.endMs }));
      within = within === null ? labelled : intersectRanges(within, labelled);
    }
    if (within !== null) spans = clipSpans(spans, within);
    const overlapping = <T extends { startMs: number; endMs: number }>(items: T[], s: { fromMs: number; toMs: number }): T[] =>
      items.filter((i) => i.startMs < s.toMs && i.endMs > s.fromMs);
    return {
      spans: spans.map((s) => ({
        from: iso(s.fromMs),
        to: iso(s.toMs),
        types: s.types.map((t) => ({ type: t.type, from: iso(t.fromMs), to: iso(t.toMs) })),
        locks: overlapping(locks, s).map(lockView),
        labels: overlapping(labels, s).map(labelView),
      })),
      // Reasons and errors quote ffmpeg, which quotes the camera URL: never its password.
      gaps: result.gaps.map((g) => ({
        from: iso(g.fromMs),
        to: iso(g.toMs),
        state: g.state,
        reason: redactText(g.reason),
        attempts: g.attempts,
        ...(g.error ? { error: { ...g.error, message: redactText(g.error.message) } } : {}),
      })),
    };
  }

  /**
   * Every published camera status passes here (node.ts): the camera view shows what the
   * last attempt that recorded does with audio and transport, as NATS status said it.
   */
  noteStatus(status: CameraStatus): void {
    if (status.state === 'recording' && status.audio)
      this.media.set(status.camera, { audio: status.audio, transportInUse: status.transportInUse ?? null, ingest: status.ingest ?? 'ffmpeg' });
    else if (status.state === 'stopped') this.media.delete(status.camera);
  }

  /** A live viewer of the camera's running ingest (api/live.ts); the caller closes it. */
  subscribeLive(cameraId: string, sink: LiveSink, opts: { preview: boolean }): LiveViewer {
    this.requireConfiguredCamera(cameraId);
    return this.supervisor.subscribeLive(cameraId, sink, opts);
  }

  /** The camera's state and the MIME type of its live stream (null while not ingesting). */
  liveState(cameraId: string): { status: CameraLiveState['state']; mimeType: string | null } {
    this.requireConfiguredCamera(cameraId);
    return { status: this.supervisor.live(cameraId)?.state ?? 'stopped', mimeType: this.supervisor.liveStats(cameraId).mimeType };
  }

  /**
   * The cluster's nodes, their cameras and load (`GET /api/cluster/nodes`,
   * `rec.v1.cluster.nodes`); a single node shows itself alone.
   */
  clusterNodes(): {
    cluster: boolean;
    nodes: (ClusterNodeView | { node: string; self: true; alive: true; cameras: string[] })[];
    copies?: CopyStatus;
    pictureCopies?: PictureCopyStatus;
    backups?: BackupStatus[];
    pictureBackups?: PictureBackupStatus[];
  } {
    if (!this.cluster) {
      const cameras = this.listCameras()
        .filter((c) => c.status !== 'stopped')
        .map((c) => c.id);
      return { cluster: false, nodes: [{ node: 'local', self: true, alive: true, cameras }] };
    }
    const backups = this.copies?.backups?.() ?? [];
    const pictureBackups = this.copies?.pictureBackups?.() ?? [];
    return {
      cluster: true,
      nodes: this.cluster.nodes(),
      ...(this.copies ? { copies: this.copies.status() } : {}),
      ...(this.copies?.pictures ? { pictureCopies: this.copies.pictures() } : {}),
      ...(backups.length > 0 ? { backups } : {}),
      ...(pictureBackups.length > 0 ? { pictureBackups } : {}),
    };
  }

  /**
   * Drains a node (it takes no camera and gives its cameras up one per tick) or ends its
   * drain; another node is asked on its own subject. Outside a cluster: NOT_FOUND.
   */
  async clusterDrain(body: unknown): Promise<{ node: string; draining: boolean; cameras: number }> {
    const q = validate(clusterDrainSchema, body);
    const cluster = this.cluster;
    if (!cluster) throw new RecorderError('NOT_FOUND', 'this recorder is not in a cluster');
    if (q.node === undefined || q.node === cluster.nodeId) return cluster.drain(q.drain);
    try {
      return await cluster.ask<{ node: string; draining: boolean; cameras: number }>(q.node, 'drain', { drain: q.drain });
    } catch (err) {
      throw new RecorderError('CLUSTER_UNAVAILABLE', `node ${q.node} did not answer: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Version, CPU, memory and the data disk (issue 8 "Operations"). */
  systemInfo(): Promise<SystemInfo> {
    return systemInfo(VERSION, this.dataDir);
  }

  /** Smart-stream search, jump and raw download (services/smart-service.ts). */
  get smart(): SmartService {
    this.smartService ??= new SmartService(this.index, this.dataDir, (id) => this.requireCamera(id));
    return this.smartService;
  }
  private smartService: SmartService | undefined;

  /**
   * A camera whose video can be read here: a configured one, or one known here only by
   * its video (`videoOnlyCamera`). What records, streams live or is configured asks
   * `requireConfiguredCamera`.
   */
  requireCamera(id: string): CameraConfig {
    const camera = this.transient.get(id) ?? this.index.cameras.get(id) ?? this.videoOnlyCamera(id);
    if (!camera) throw new CameraNotFoundError(id);
    return camera;
  }

  /** A camera configured on this node (its view, schedule, events, live view, deletion). */
  requireConfiguredCamera(id: string): CameraConfig {
    const camera = this.transient.get(id) ?? this.index.cameras.get(id);
    if (!camera) throw new CameraNotFoundError(id);
    return camera;
  }

  /**
   * A camera with no config here whose video or pictures are stored here: a backup
   * cluster's copies of another cluster's camera (cluster/backup-sender.ts,
   * cluster/picture-backup.ts), or the data of a camera deleted without purge. Its video
   * can be searched, played, downloaded, locked and labelled, its pictures searched and
   * zipped; it records nothing (actors start from configs only) and is not listed.
   */
  private videoOnlyCamera(id: string): CameraConfig | undefined {
    const pool = this.index.segments.last(id)?.pool ?? this.index.pictures.poolOfCamera(id);
    return pool !== undefined ? { id, pool, streams: { main: '' }, record: { stream: 'main' } } : undefined;
  }

  private view(camera: CameraConfig, opts: ViewOptions): CameraView {
    const live = this.supervisor.live(camera.id);
    const lastEndMs = this.index.segments.last(camera.id)?.endMs ?? null;
    return {
      ...(opts.credentials ? camera : redactCamera(camera)),
      status: live?.state ?? 'stopped',
      manual: live?.manual ?? false,
      // ffmpeg's errors quote the URL: redacted for everyone (admins have the config).
      lastError: live?.lastError ? redactText(live.lastError) : null,
      lastVideoAt: lastEndMs === null ? null : iso(lastEndMs),
      audio: this.media.get(camera.id)?.audio ?? null,
      transportInUse: this.media.get(camera.id)?.transportInUse ?? null,
      ingest: this.media.get(camera.id)?.ingest ?? null,
    };
  }
}
