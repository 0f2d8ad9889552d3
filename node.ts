/**
 * The composition root of one recorder node (docs/design/lifecycle.md). Components start
 * in this order, each through lib/lifecycle.ts, and stop in reverse:
 *
 *   data-dir lock → index (checked, compacted, compared with the config journal:
 *   index/startup.ts) → config journal → sample-table builder → storage (on a full disk
 *   the emergency overwrite first; crash replay; reconcile with the files) → cameras'
 *   supervisor → health sampler → retention → back-fill → cameras resumed → HTTP →
 *   S3 (buckets/, when an access key exists) → NATS (embedded server awaited; an
 *   external URL connects in the background and the service registers when it is
 *   reachable).
 *
 * Recording is thus independent of NATS (docs/design/architecture.md section 7). The
 * embedded server is authenticated and restarted when it dies (lib/nats-embedded.ts);
 * whichever server, alarms wait in lib/alarms.ts while the client is disconnected.
 *
 * Shutdown (`stop()`, or the `signal` given to start aborting): the lifecycle's one
 * AbortSignal aborts first, so from that instant HTTP and NATS answer every new
 * request 503 SHUTTING_DOWN and start nothing (a camera.put that arrived during a
 * shutdown used to start an actor and an ffmpeg that were never stopped and wrote into
 * the closed index), live viewers are told the recorder stops, back-fill pulls end.
 * Then NATS, HTTP (requests in flight get a grace), back-fill, the sampler, the
 * cameras (every open segment is closed before `stop()` resolves), storage with its
 * retention, the sample tables, the journal, the index and the lock, in that order.
 */
import os from 'node:os';
import { diskInfo } from './ops/system.ts';
import { poolsDir } from './storage/layout.ts';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Events, type NatsConnection } from 'nats';
import { Supervisor } from './actors/supervisor.ts';
import type { CameraStatus } from './actors/deps.ts';
import { buildHttp, registeredRoutes, type RegisteredRoute } from './api/http.ts';
import { connectNats, startNatsApi, type NatsApi } from './api/nats.ts';
import { RecorderService } from './services/recorder-service.ts';
import { lockDataDir } from './lib/data-dir-lock.ts';
import { reachableUrl } from './lib/advertise.ts';
import { RecorderIndex } from './index/db.ts';
import type { RecorderConfig } from './lib/config.ts';
import { assertAuthForBind, splitHostPort } from './lib/config.ts';
import type { Logger } from './lib/log.ts';
import { startEmbeddedNats, type EmbeddedNats } from './lib/nats-embedded.ts';
import { AlarmBus, type Alarm } from './lib/alarms.ts';
import { iso, systemClock, type Clock } from './lib/time.ts';
import { reconcile, type ReconcileReport } from './storage/reconcile.ts';
import { UserStore } from './security/users.ts';
import { bitrateOf, RecorderMetrics } from './ops/metrics.ts';
import { HealthSampler, machineReader } from './ops/health-sampler.ts';
import { RecorderError } from './lib/errors.ts';
import { Lifecycle } from './lib/lifecycle.ts';
import { StorageSupervisor } from './actors/storage-supervisor.ts';
import { StorageService } from './services/storage-service.ts';
import { deleteSmartWithVideo } from './smart/smart-follows-video.ts';
import { BackfillManager } from './backfill/manager.ts';
import { SegmentTableStore } from './storage/segment-tables.ts';
import { createReadCaches, type ReadCaches } from './playback/read-caches.ts';
import { FrameGrabber } from './playback/frame-grab.ts';
import type { SegmentRecord } from './index/records.ts';
import { openCheckedIndex } from './index/startup.ts';
import { JournalWriter } from './index/journal.ts';
import { IndexReserve } from './storage/index-reserve.ts';
import type { BackupDeps } from './cluster/backup-rounds.ts';
import { BackupSender } from './cluster/backup-sender.ts';
import type { AlarmInput } from './lib/alarms.ts';
import { PictureStorage } from './pictures/picture-storage.ts';
import { PreviewCache } from './pictures/preview.ts';
import { PictureService } from './services/picture-service.ts';
import {
  PEER_PICTURE_SUBJECTS,
  type PeerLockOneRequest,
  type PeerLockRequest,
  type PeerSimilarRequest,
  type PeerZipListing,
} from './services/cluster-pictures.ts';
import { ClusterNode, clusterMode, replicasFor } from './cluster/cluster.ts';
import { loadOrCreateNodeId } from './cluster/node-id.ts';
import { CopyService } from './cluster/copies.ts';
import { PictureCopyService } from './cluster/picture-copies.ts';
import { PictureBackupSender } from './cluster/picture-backup.ts';
import { seqSlotOf } from './pictures/seq-slot.ts';
import { KEEP_SUBJECT } from './cluster/copy-trim.ts';
import { OverlapHeal } from './cluster/overlap-heal.ts';
import type { RemoteSegment } from './services/media-source.ts';
import { rootCredential, startS3Listener } from './buckets/listener.ts';
import { S3Presigner, isRecorderUi } from './buckets/presign.ts';
import { S3Keys } from './buckets/keys.ts';
import { SecretBox } from './lib/secret-box.ts';
import { bucketCluster, S3_URL_SUBJECT } from './cluster/bucket-cluster.ts';
import { OBJECT_PULL_SUBJECT, ObjectCopies } from './cluster/object-copies.ts';
import { ObjectLog } from './cluster/object-log.ts';
import type { S3Server } from './buckets/s3-server.ts';

/** A camera's write error that says the disk is full. */
function diskFullAlarm(alarm: AlarmInput): boolean {
  return alarm.kind === 'write-error' && /\b(ENOSPC|EDQUOT)\b/.test(alarm.message);
}

/** At most one `write-error` alarm per this long for index commits failing other than by a full disk. */
const INDEX_ALARM_EVERY_MS = 60_000;

export interface RecorderNodeOptions {
  config: RecorderConfig;
  log: Logger;
  clock?: Clock;
  /** Aborting it stops the node (the CLI's SIGTERM), also while it starts: start() then rejects with SHUTTING_DOWN. */
  signal?: AbortSignal;
}

/**
 * After a NATS reconnect, how long held alarms wait before they are sent: longer than a
 * NATS client's default reconnect wait (2 s plus jitter), so a VMS whose connection
 * broke with ours is subscribed again when they arrive.
 */
const NATS_RECONNECT_GRACE_MS = 3000;

/** How long a shutdown lets HTTP requests in flight finish before cutting them. */
const HTTP_CLOSE_GRACE_MS = 2000;

export class RecorderNode {
  natsUrl: string | null = null;
  httpUrl = '';
  /** The S3 listener (buckets/), null when off or no access key exists; its URL, '' then. */
  s3: S3Server | null = null;
  s3Url = '';
  /** Users' S3 access keys, their secrets sealed under the secret key file (buckets/keys.ts, lib/secret-box.ts). */
  s3Keys!: S3Keys;
  reconcileReport: ReconcileReport | null = null;
  storage: StorageSupervisor | null = null;
  /** Sample tables persisted at segment close (storage/segment-tables.ts). */
  tables: SegmentTableStore | null = null;
  /** The read path's caches (playback/read-caches.ts), built here and handed to the HTTP routes. */
  caches!: ReadCaches;
  frames!: FrameGrabber;
  backfill: BackfillManager | null = null;
  /** Picture packs (pictures/picture-storage.ts). */
  pictures: PictureStorage | null = null;
  /** The config journal beside the data (index/journal.ts). */
  journal: JournalWriter | null = null;
  private embedded: EmbeddedNats | null = null;
  private natsGraceTimer: NodeJS.Timeout | null = null;
  /** Each camera's last published status, sent again after a NATS reconnect. */
  private readonly lastStatus = new Map<string, CameraStatus>();
  private natsApi: NatsApi | null = null;
  private natsConnecting: Promise<void> | null = null;
  private http: FastifyInstance | null = null;
  private sampler: HealthSampler | null = null;
  /** Users of the HTTP interface (security/users.ts), in the index. */
  users!: UserStore;
  /** Prometheus metrics; retention reports deletions and pool figures through it. */
  metrics!: RecorderMetrics;
  /** This node's part in a cluster (cluster/cluster.ts); null outside cluster mode. */
  cluster: ClusterNode | null = null;
  /** Copies of closed segments on other nodes (cluster/copies.ts); null outside cluster mode. */
  copies: CopyService | null = null;
  /** Copies of picture packs on other nodes (cluster/picture-copies.ts); null outside cluster mode. */
  pictureCopies: PictureCopyService | null = null;
  /** In a cluster: the S3 catalog's changes in one replicated order, and the copies of objects (cluster/object-log.ts, object-copies.ts). */
  objectLog: ObjectLog | null = null;
  objectCopies: ObjectCopies | null = null;
  /** Pulls what another node recorded of a camera this node also recorded during a partition. */
  overlapHeal: OverlapHeal | null = null;
  /** Backup of pools to another cluster (cluster/backup-sender.ts; cluster mode only). */
  backups: BackupSender | null = null;
  pictureBackups: PictureBackupSender | null = null;

  private constructor(
    readonly config: RecorderConfig,
    readonly log: Logger,
    readonly clock: Clock,
    readonly index: RecorderIndex,
    readonly supervisor: Supervisor,
    readonly service: RecorderService,
    private readonly alarms: AlarmBus,
    /** Start order, stop in reverse, and the one AbortSignal every component gets. */
    readonly lifecycle: Lifecycle,
  ) {}

  static async start(opts: RecorderNodeOptions): Promise<RecorderNode> {
    const { config, log } = opts;
    const clock = opts.clock ?? systemClock;
    const life = new Lifecycle(log, opts.signal, 'recorder stopped');
    const { signal } = life;
    let node: RecorderNode | null = null;
    try {
      // Before anything touches the dir: a second recorder on it exits here (issue 13).
      await life.start(
        'data-dir lock',
        () => lockDataDir(config.dataDir),
        (lock) => lock.release(),
      );
      // A corrupt file is refused before LMDB maps it; an index that lost what the journal lists, too.
      const { index } = await life.start(
        'index',
        () => openCheckedIndex(config.dataDir, log, { compact: true }),
        (opened) => opened.index.close(),
      );
      const alarms = new AlarmBus(log, clock);
      const journal = await life.start(
        'config journal',
        () =>
          new JournalWriter(index, config.dataDir, log, (err) =>
            alarms.raise({ kind: 'write-error', message: `config journal could not be written (retrying): ${err.message}` }),
          ),
        (j) => j.stop(),
      );
      let storage: StorageSupervisor | null = null;
      // Segments closed by the cameras' stop are not waited for: their tables are built when next read.
      const tables = await life.start(
        'sample tables',
        () => new SegmentTableStore({ index, dataDir: config.dataDir, log, signal }),
        (t) => t.stop(),
      );
      // Every closed segment (live or back-filled): retention and backup, and its sample tables.
      const segmentClosed = (seg: SegmentRecord): void => {
        storage?.segmentClosed(seg);
        tables.segmentClosed(seg);
        node?.copies?.announce(seg);
        node?.backups?.kick(seg);
      };
      // Camera alarms: a write that failed on a full disk also starts the emergency overwrite.
      const cameraAlarm = (alarm: AlarmInput): void => {
        alarms.raise(alarm);
        if (diskFullAlarm(alarm)) void storage?.diskFull(`${alarm.camera ?? 'a camera'}: ${alarm.message}`);
      };
      let lastIndexAlarmMs = -Infinity;
      index.onWriteFailure((cause) => {
        log.error({ errno: cause.errno }, `index commit failed: ${cause.errno} (${cause.message})`);
        if (cause.full) return void storage?.diskFull(`index commit failed: ${cause.errno}`);
        if (clock.nowMs() - lastIndexAlarmMs < INDEX_ALARM_EVERY_MS) return;
        lastIndexAlarmMs = clock.nowMs();
        alarms.raise({
          kind: 'write-error',
          message: `index commit failed: ${cause.errno} (${cause.message}); writers retry`,
          details: { errno: cause.errno },
        });
      });
      const store = await life.start(
        'storage',
        () =>
          new StorageSupervisor({
            index,
            dataDir: config.dataDir,
            clock,
            log,
            reserve: new IndexReserve(config.dataDir, config.indexReserveBytes, log),
            raiseAlarm: (alarm) => alarms.raise(alarm),
            onPoolBlocked: (pool, reason) => node?.supervisor.setStorageBlocked(pool, reason),
            onSegmentDeleted: async (seg) => {
              node?.metrics.recordDeletion(seg.pool, 1, seg.bytes);
              await deleteSmartWithVideo(index, config.dataDir, seg);
            },
            tickMs: config.retentionTickMs,
            minFreeBytes: config.minFreeBytes,
            minFreeRatio: config.minFreeRatio,
            backupAuditMs: config.backupAuditMs,
            // In a cluster a pass deletes only once this node mirrors every acknowledged lock.
            ...(clusterMode(config) ? { syncLocks: () => node?.cluster?.barrier() ?? Promise.resolve(false) } : {}),
            signal,
          }),
        (s) => s.stop(),
      );
      storage = store;
      const report = await life.start('storage recovery', async () => {
        // A disk too full for the index to commit: overwrite before anything else writes.
        await store.startOnFullDisk();
        // Crash replay first: an interrupted deletion must not be re-indexed by reconcile,
        // and a primary copy lost while its backup survives must not be dropped by it.
        const finished = await store.finishIntents();
        const restored = await store.restoreFromBackups();
        if (finished || restored) log.warn({ finished, restored }, 'storage work finished after a crash');
        return reconcile(index, config.dataDir, { mode: 'repair', log });
      });
      if (report.failedWrites.length > 0) void store.diskFull(`${report.failedWrites.length} index writes of reconcile failed`);
      for (const d of report.droppedEntries) {
        alarms.raise({
          kind: 'index',
          camera: d.camera,
          message: `segment file ${d.file} vanished; its index entry was dropped`,
          details: { file: d.file, startMs: d.startMs },
        });
      }
      // Picture packs reconciled with the index (a synced tail indexed, a torn one cut) before any write.
      const pictures = await life.start(
        'pictures',
        () => PictureStorage.open({ index, dataDir: config.dataDir, clock, log, config, raiseAlarm: (a) => alarms.raise(a) }),
        (p) => p.stop(),
      );
      // Stopped after back-fill and before storage: the segments its cameras close at
      // the stop still reach retention, backup and the sample tables.
      const supervisor = await life.start(
        'cameras',
        () =>
          new Supervisor(
            {
              config,
              index,
              clock,
              log,
              publishStatus: (status) => node?.publishStatus(status),
              raiseAlarm: cameraAlarm,
              onSegmentClosed: segmentClosed,
              ...(clusterMode(config) ? { fence: (id: string) => node!.cluster!.fence(id) } : {}),
            },
            signal,
          ),
        (s) => s.shutdown(),
      );
      const service = new RecorderService(index, supervisor, clock, config.dataDir, log, signal);
      service.attachStorage(new StorageService(index, store, clock, config.dataDir, log, (id) => service.requireCamera(id)));
      service.pictures = new PictureService(
        pictures,
        (id) => service.requireCamera(id),
        clock,
        log,
        config.pictureMaxBytes,
        new PreviewCache(config.picturePreviewCacheBytes),
        (work) => store.exclusive(work),
      );
      const self = new RecorderNode(config, log, clock, index, supervisor, service, alarms, life);
      node = self;
      self.pictures = pictures;
      store.attachPictures({
        cover: (pools, nowMs) => pictures.cover(pools, nowMs),
        oldestPackMs: () => pictures.oldestPackMs(),
        coverOldest: (nowMs) => pictures.coverOldest(nowMs),
        poolBytes: (pool) => index.pictures.poolBytes(pool),
      });
      if (clusterMode(config)) {
        self.cluster = new ClusterNode({
          nodeId: loadOrCreateNodeId(config.dataDir),
          prefix: config.subjectPrefix,
          index,
          supervisor,
          log,
          tickMs: config.clusterTickMs,
          deadTicks: config.clusterDeadTicks,
          replicas: replicasFor(config.natsUrl?.split(',') ?? []),
          // What peers fetch from: reachable from them, also when HTTP listens on every interface.
          httpUrl: () => (self.httpUrl ? reachableUrl(self.httpUrl, config.advertiseHost) : ''),
          storage: () => self.storage,
          usersChanged: () => self.users.forget(),
          raiseAlarm: (alarm) => alarms.raise(alarm),
          ...(config.clusterWeight !== undefined ? { weight: config.clusterWeight } : {}),
          // Unless configured, a node weighs its cores and its pools' disk against the biggest node's.
          measureSize: async () => ({ cores: os.availableParallelism(), diskBytes: (await diskInfo(poolsDir(config.dataDir))).totalBytes }),
          // Cameras move off a node whose CPU, memory or disk alarm holds.
          pressure: () => self.sampler?.pressure() ?? null,
          // Placement weighs each camera by its bitrate, as the metrics measure it (one meter, ops/metrics.ts).
          bitrate: (camera) => {
            const last = index.segments.last(camera);
            return last ? bitrateOf(last) : null;
          },
          peerDied: (dead) => {
            void self.copies?.peerDied(dead).catch((err: unknown) => log.warn({ dead, err: (err as Error).message }, 'copies: re-announcing failed'));
            void self.pictureCopies
              ?.peerDied(dead)
              .catch((err: unknown) => log.warn({ dead, err: (err as Error).message }, 'picture copies: re-announcing failed'));
            self.objectCopies?.membershipChanged();
            // Its segments reach the backup cluster from the copies until it beats again.
            self.backups?.writerDied(dead);
          },
          peerJoined: (joined, awaySinceMs) => {
            self.objectCopies?.membershipChanged();
            void self.copies
              ?.peerJoined(joined, awaySinceMs)
              .catch((err: unknown) => log.warn({ joined, err: (err as Error).message }, 'copies: announcing to the node that joined failed'));
            void self.pictureCopies
              ?.peerJoined(joined, awaySinceMs)
              .catch((err: unknown) => log.warn({ joined, err: (err as Error).message }, 'picture copies: announcing to the node that joined failed'));
          },
          cameraLost: (camera, rev, lastConfirmedMs) => self.overlapHeal?.lost(camera, rev, lastConfirmedMs),
          signal,
        });
        const cluster = self.cluster;
        // Its pictures' seqs in its own slot: keys that never clash with the copies of other nodes' pictures it holds.
        pictures.useSeqSlot(seqSlotOf(cluster.nodeId));
        const copies = new CopyService({
          nodeId: cluster.nodeId,
          prefix: config.subjectPrefix,
          replicas: replicasFor(config.natsUrl?.split(',') ?? []),
          index,
          dataDir: config.dataDir,
          log,
          signal,
          liveNodes: () => cluster.liveNodes(),
          peerHttp: (n) => cluster.peerHttp(n),
          catalog: (camera) => cluster.catalog(camera),
          raiseAlarm: (alarm) => alarms.raise(alarm),
          // A copy is a closed segment here: retention, a local backup and its sample tables.
          copied: (seg) => {
            store.segmentClosed(seg);
            tables.segmentClosed(seg);
          },
          // Surplus copies after a join or a return go once membership held still for twice
          // the time that judges a node dead (a flapping node resets it), and their holders confirm.
          trim: {
            ask: (n, what, body) => cluster.ask(n, what, body),
            drop: (segs, stillSurplus) => store.dropSurplusCopies(segs, stillSurplus),
            settleMs: 2 * config.clusterTickMs * config.clusterDeadTicks,
          },
        });
        self.copies = copies;
        // Pictures of pools with copies: packs' synced extents announced, pulled by their holders.
        const pictureCopies = new PictureCopyService({
          nodeId: cluster.nodeId,
          prefix: config.subjectPrefix,
          replicas: replicasFor(config.natsUrl?.split(',') ?? []),
          index,
          storage: pictures,
          log,
          signal,
          liveNodes: () => cluster.liveNodes(),
          peerHttp: (n) => cluster.peerHttp(n),
          token: () => copies.clusterToken(),
          catalog: (camera) => cluster.catalog(camera),
          raiseAlarm: (alarm) => alarms.raise(alarm),
        });
        self.pictureCopies = pictureCopies;
        // S3 buckets: the catalog through the object log on every node, objects' bytes on their holders.
        const objectCopies = new ObjectCopies({
          nodeId: cluster.nodeId,
          catalog: index.buckets,
          copiesOf: (pool) => index.pools.get(pool)?.copies ?? 1,
          liveNodes: () => cluster.liveNodes(),
          peerHttp: (n) => cluster.peerHttp(n),
          token: () => copies.clusterToken(),
          files: () => self.s3?.objects ?? null,
          ask: (n, what, body, timeoutMs) => cluster.ask(n, what, body, timeoutMs),
          caughtUp: () => self.objectLog!.caughtUp(),
          settleMs: 2 * config.clusterTickMs * config.clusterDeadTicks,
          log,
          signal,
        });
        self.objectCopies = objectCopies;
        self.objectLog = new ObjectLog({
          nodeId: cluster.nodeId,
          prefix: config.subjectPrefix,
          replicas: replicasFor(config.natsUrl?.split(',') ?? []),
          catalog: index.buckets,
          log,
          signal,
          files: () => self.s3?.objects ?? null,
          applied: (a) => objectCopies.applied(a),
          raiseAlarm: (alarm) => alarms.raise(alarm),
        });
        /** One closed segment another node has, pulled here as a copy (stitching, playback windows, the overlap heal); false: gone there. */
        const pullFrom = async (source: string, camera: string, seg: RemoteSegment): Promise<boolean> =>
          (await copies.pull({ camera, startMs: seg.startMs, bytes: seg.bytes, pool: seg.pool, source, holders: [] })) !== null;
        self.overlapHeal = new OverlapHeal({
          nodeId: cluster.nodeId,
          segments: index.segments,
          // Every live node too: the catalog a node cut off just came back from may not
          // show yet who recorded the camera meanwhile (its watch catches up after the heal starts).
          holders: (camera) => [...new Set([...cluster.holders(camera), ...cluster.liveNodes()])],
          ownerSegments: async (owner, camera, fromMs, toMs) =>
            (await cluster.ask<{ segments: RemoteSegment[] }>(owner, 'segments', { camera, from: iso(fromMs), to: iso(toMs) })).segments,
          pull: pullFrom,
          // Our own segment of the overlap that a later grant's starts at the same instant as: it goes, theirs takes its key.
          dropOwn: async (ours) =>
            (await store.dropSurplusCopies([ours], (fresh) => fresh.fence?.node === ours.fence?.node && fresh.fence?.rev === ours.fence?.rev)) === 1,
          log,
          signal,
        });
        // Segments and pictures of a pool with a backup cluster: announced there by the same rounds (cluster/backup-rounds.ts).
        const backupDeps: BackupDeps = {
          nodeId: cluster.nodeId,
          prefix: config.subjectPrefix,
          replicas: replicasFor(config.natsUrl?.split(',') ?? []),
          index,
          log,
          signal,
          httpUrl: () => (self.httpUrl ? reachableUrl(self.httpUrl, config.advertiseHost) : null),
          clusterToken: () => copies.clusterToken(),
          raiseAlarm: (alarm) => alarms.raise(alarm),
        };
        self.backups = new BackupSender({
          ...backupDeps,
          standIn: {
            liveNodes: () => cluster.liveNodes(),
            holders: (camera) => cluster.holders(camera),
            peerHttp: (n) => cluster.peerHttp(n),
            // A peer without the camera's config (deleted) answers for none of its segments.
            peerSegments: (n, camera, fromMs, toMs) =>
              cluster.ask<{ segments: RemoteSegment[] }>(n, 'segments', { camera, from: iso(fromMs), to: iso(toMs) }).then(
                (r) => r.segments,
                (err: unknown) => {
                  if (err instanceof RecorderError && err.code === 'CAMERA_NOT_FOUND') return [];
                  throw err;
                },
              ),
          },
        });
        self.pictureBackups = new PictureBackupSender(backupDeps);
        service.attachCluster(
          cluster,
          {
            status: () => copies.status(),
            pictures: () => pictureCopies.status(),
            backups: () => self.backups?.statuses() ?? [],
            pictureBackups: () => self.pictureBackups?.statuses() ?? [],
            pull: pullFrom,
            clusterToken: () => copies.clusterToken(),
          },
          config.clusterPlaybackWindowMs,
        );
        // What peers ask this node on its own subject: its own index's spans (services/recorder-service.ts search).
        self.cluster.serve('search', (b) => service.localSearch(b));
        self.cluster.serve('segments', (b) => service.localSegments(b));
        self.cluster.serve(KEEP_SUBJECT, (b) => copies.answerKeep(b));
        // Pictures: whether this node stores one, and its own search (merged by the node asked).
        self.cluster.serve(PEER_PICTURE_SUBJECTS.zip, (b): Promise<PeerZipListing> =>
          service.clusterPictures.answerZipList(b as Record<string, unknown>, config.clusterZipPageEntries),
        );
        // Here only; a picture not here yet (a copy in flight) gets the change when its copy is indexed.
        self.cluster.serve(PEER_PICTURE_SUBJECTS.lockOne, (b) => service.pictures.lockForPeer(b as PeerLockOneRequest));
        self.cluster.serve(PEER_PICTURE_SUBJECTS.has, (b) => {
          const id = (b as { id?: unknown }).id;
          return { has: typeof id === 'string' && service.pictures.has(id) };
        });
        self.cluster.serve(PEER_PICTURE_SUBJECTS.search, (b) => service.pictures.search(b as Record<string, unknown>, () => true));
        self.cluster.serve(PEER_PICTURE_SUBJECTS.similar, (b) => {
          const r = b as PeerSimilarRequest;
          return service.pictures.similarTo(r.query ?? {}, Buffer.from(typeof r.signature === 'string' ? r.signature : '', 'base64'), () => true);
        });
        self.cluster.serve(PEER_PICTURE_SUBJECTS.locks, (b) => {
          const r = b as PeerLockRequest;
          return service.pictures.lockBatch(r.body, () => true, r.unlock === true);
        });
        service.pictures.onStored((camera) => cluster.catalog(camera));
        self.cluster.serve('drain', (b) => service.clusterDrain({ ...(b as object), node: self.cluster!.nodeId }));
        // Where this node's S3 listener is: a node asked for a part of an upload this node created passes it here.
        self.cluster.serve(S3_URL_SUBJECT, () => ({ url: self.s3Url ? reachableUrl(self.s3Url, config.advertiseHost) : null }));
        self.cluster.serve(OBJECT_PULL_SUBJECT, (b) => objectCopies.answerPull(b));
      }
      self.storage = store;
      self.tables = tables;
      // Sample tables (backed by the persisted ones), PS views, progressive heads, frames.
      self.caches = createReadCaches({ persisted: tables });
      // One bounded frame decoder for frame.jpg and picture snapshots (playback/frame-grab.ts).
      self.frames = new FrameGrabber({ index, dataDir: config.dataDir, caches: self.caches, ffmpegPath: config.ffmpegPath });
      service.pictures.attachFrames(self.frames, { eventSnapshots: config.eventSnapshots === 'on' });
      // A snapshot waiting for its event's video stops waiting when the node stops.
      signal.addEventListener('abort', () => service.pictures.stop(), { once: true });
      self.journal = journal;
      self.reconcileReport = report;
      self.users = new UserStore(index.users, clock);
      const shared = self.cluster;
      // In a cluster users are shared config too (cluster/shared-config.ts): written there first.
      if (shared) {
        self.users.shareWith(async (name, record) => {
          if (record) await shared.config().put('user', name, record);
          else await shared.config().remove('user', name);
        });
      }
      self.assertHttpAuth();
      const metrics = new RecorderMetrics({
        index,
        nowMs: () => clock.nowMs(),
        cameras: () => service.listCameras().map((c) => ({ id: c.id, pool: c.pool, status: c.status })),
      });
      self.metrics = metrics;
      alarms.observe((alarm) => metrics.onAlarm(alarm));
      self.sampler = await life.start(
        'health sampler',
        () => {
          const sampler = new HealthSampler(
            machineReader(config.dataDir),
            {
              cpuFraction: config.alarmCpuPercent / 100,
              memoryFraction: config.alarmMemoryPercent / 100,
              diskFraction: config.alarmDiskPercent / 100,
              sustain: 3,
            },
            (alarm) => alarms.raise(alarm),
          );
          sampler.start(config.healthSampleSeconds * 1000);
          return sampler;
        },
        (sampler) => sampler.stop(),
      );
      // Retention, once a blocked pool can reach the cameras' supervisor (it stops with storage).
      await life.start('retention', () => store.start());
      // The journal as the index is now (the first start after an upgrade writes the first one).
      journal.changed(0);
      // Before the camera actors: recorder-down gaps go into the ledger first.
      self.backfill = await life.start(
        'back-fill',
        async () => {
          const manager = new BackfillManager({
            index,
            config,
            clock,
            log,
            signal,
            ...(self.cluster ? { nodeId: self.cluster.nodeId } : {}),
            camera: (id) => {
              try {
                return service.requireCamera(id);
              } catch {
                return undefined;
              }
            },
            // In a cluster: only the cameras this node records.
            cameras: () => index.cameras.list().filter((c) => self.cluster?.runsHere(c.id) ?? true),
            raiseAlarm: cameraAlarm,
            publish: (progress) => self.natsApi?.publishBackfill(progress),
            onSegmentClosed: segmentClosed,
          });
          service.attachBackfill(manager);
          await manager.start();
          return manager;
        },
        (manager) => manager.stop(),
      );
      const resumed = await life.start('camera resume', () => service.resume());
      log.info({ cameras: resumed }, 'cameras resumed from the index');
      // Before HTTP and S3 (both use users' keys): secrets stored in clear by an older version are sealed now.
      self.s3Keys = new S3Keys(index, await SecretBox.open(config.secretKeyFile ?? join(config.dataDir, 'secret.key')));
      // In a cluster, users' keys go through the object log, sealed under a key derived from the cluster token.
      if (self.objectLog) self.s3Keys.useCluster({ writes: self.objectLog, box: clusterKeyBox(() => self.copies?.clusterToken() ?? null) });
      const keys = await self.s3Keys.sealLegacy();
      if (keys.sealed > 0) log.info({ keys: keys.sealed }, 's3: access key secrets stored in clear were sealed');
      if (keys.unreadable.length > 0) {
        log.error({ keys: keys.unreadable }, 's3: these access keys were sealed under another secret key file and are refused until issued again');
      }
      await life.start(
        'http',
        () => self.startHttp(),
        () => self.closeHttp(),
      );
      self.s3 = await life.start(
        's3',
        () =>
          startS3Listener({
            config,
            index,
            keys: self.s3Keys,
            log,
            clock,
            signal,
            raiseAlarm: (a) => self.alarms.raise(a),
            corsOrigin: (origin) => isRecorderUi(origin, self.httpUrl),
            ...(self.objectLog && self.cluster ? { cluster: bucketCluster(self.objectLog, self.objectCopies!, self.cluster) } : {}),
          }),
        (s3) => s3?.stop(),
      );
      self.s3Url = self.s3?.url ?? '';
      await self.startNats();
      return self;
    } catch (err) {
      await life.stop();
      throw err;
    }
  }

  /**
   * docs/security.md: no HTTP beyond loopback without authentication. The settings were
   * checked when parsed; here auth=required also needs someone who can log in.
   */
  private assertHttpAuth(): void {
    assertAuthForBind(this.config);
    if (this.config.auth === 'required' && !this.config.authToken && !this.users.list().some((u) => u.role === 'admin')) {
      throw new RecorderError(
        'CONFIG_INVALID',
        'auth=required but no RECORDER_AUTH_TOKEN and no admin user: create one with `recorder user add NAME --role admin --password-stdin`',
      );
    }
  }

  private republishStatuses(api: NatsApi): void {
    const known = new Set(this.service.listCameras().map((c) => c.id));
    for (const [camera, status] of this.lastStatus) {
      if (known.has(camera)) api.publishStatus(status);
      else this.lastStatus.delete(camera);
    }
  }

  private publishStatus(status: CameraStatus): void {
    this.lastStatus.set(status.camera, status);
    this.metrics?.onStatus(status);
    this.service.noteStatus(status);
    this.log.info({ camera: status.camera, state: status.state, detail: status.detail }, 'camera state');
    this.natsApi?.publishStatus(status);
    if (status.state === 'recording') this.backfill?.cameraRecording(status.camera);
  }

  private async startHttp(): Promise<void> {
    this.http = buildHttp({
      service: this.service,
      index: this.index,
      dataDir: this.config.dataDir,
      log: this.log,
      authToken: this.config.authToken,
      ffmpegPath: this.config.ffmpegPath,
      users: this.users,
      authRequired: this.config.auth === 'required',
      metrics: this.metrics,
      maxStreams: this.config.maxStreams,
      signal: this.lifecycle.signal,
      caches: this.caches,
      frames: this.frames,
      clusterToken: () => this.copies?.clusterToken() ?? null,
      s3Presigner: new S3Presigner({
        index: this.index,
        keys: this.s3Keys,
        clock: this.clock,
        root: rootCredential(this.config),
        listenerUrl: () => this.s3Url,
      }),
      s3Keys: this.s3Keys,
      objectFile: (bucket, fileId) => this.s3?.localFile(bucket, fileId) ?? null,
    });
    const { host, port } = splitHostPort(this.config.http);
    await this.http.listen({ host, port });
    const addr = this.http.server.address();
    // The address a name resolved to is what is exposed: judge that, not the name.
    if (typeof addr === 'object' && addr) {
      try {
        assertAuthForBind(this.config, addr.address);
      } catch (err) {
        await this.http.close();
        throw err;
      }
    }
    const boundPort = typeof addr === 'object' && addr ? addr.port : port;
    this.httpUrl = `http://${host.includes(':') ? `[${host}]` : host}:${boundPort}`;
    this.log.info({ url: this.httpUrl }, 'http listening');
  }

  private async startNats(): Promise<void> {
    if (!this.config.natsUrl) {
      const { natsUser, natsToken, natsNkeySeedFile, natsTlsCa, natsTlsCert } = this.config;
      if (natsUser || natsToken || natsNkeySeedFile || natsTlsCa || natsTlsCert) {
        this.log.warn(
          'NATS client credentials are set but no RECORDER_NATS_URL: they apply to an external server only; the embedded one uses its own (<data>/nats/credentials.json)',
        );
      }
      const embedded = await this.lifecycle.start(
        'embedded nats-server',
        () => startEmbeddedNats({ dataDir: this.config.dataDir, binary: this.config.natsServerPath, log: this.log, subjectPrefix: this.config.subjectPrefix }),
        (e) => e.stop(),
      );
      this.embedded = embedded;
      this.natsUrl = embedded.url;
      await this.lifecycle.start(
        'nats',
        async () => this.attachNats(await connectNats(embedded.url, this.log, embedded.auth)),
        () => this.stopNats(),
      );
      return;
    }
    const url = this.config.natsUrl;
    this.natsUrl = url;
    // Never wait for an external server: recording and HTTP are already running.
    await this.lifecycle.start(
      'nats',
      () => {
        this.natsConnecting = connectNats(url, this.log, this.config)
          .then((nc) => this.attachNats(nc))
          .catch((err: unknown) => this.log.error({ err }, 'nats connection failed'));
      },
      () => this.stopNats(),
    );
  }

  private async attachNats(nc: NatsConnection): Promise<void> {
    const { signal } = this.lifecycle;
    if (signal.aborted) {
      await nc.close();
      return;
    }
    let api: NatsApi;
    try {
      api = await startNatsApi(nc, this.service, this.config.subjectPrefix, this.log, signal);
    } catch (err) {
      await nc.close().catch(() => undefined);
      throw err;
    }
    // Stopped while the service registered: stopNats() ran before there was an api to close.
    if (signal.aborted) {
      await api.close().catch(() => undefined);
      return;
    }
    this.natsApi = api;
    this.cluster?.start(nc);
    this.copies?.start(nc);
    this.pictureCopies?.start(nc);
    this.objectLog?.start(nc);
    this.objectCopies?.start();
    this.backups?.start(nc);
    this.pictureBackups?.start(nc);
    const sink = (alarms: Alarm[]): Promise<void> => api.deliverAlarms(alarms);
    this.alarms.attach(sink);
    // Disconnected (the embedded server died, an external one went away): alarms are
    // held. Reconnected: after a grace that lets the VMS's own client reconnect too (a
    // NATS client retries every 2 s by default, and core NATS delivers to whoever is
    // subscribed at that instant), the held alarms go out in order and every camera's
    // last status is sent again: nats.js drops what was published while disconnected.
    void (async () => {
      for await (const s of nc.status()) {
        if (signal.aborted) break;
        if (s.type === Events.Disconnect) {
          this.alarms.detach();
          if (this.natsGraceTimer) clearTimeout(this.natsGraceTimer);
          this.natsGraceTimer = null;
        } else if (s.type === Events.Reconnect) {
          if (this.natsGraceTimer) clearTimeout(this.natsGraceTimer);
          this.natsGraceTimer = setTimeout(() => {
            this.natsGraceTimer = null;
            if (signal.aborted) return;
            this.alarms.attach(sink);
            this.republishStatuses(api);
            this.log.info({ queuedAlarms: this.alarms.queued() }, 'nats reconnected: held alarms and current statuses sent');
          }, NATS_RECONNECT_GRACE_MS);
          this.natsGraceTimer.unref();
        }
      }
    })();
    this.log.info({ url: this.natsUrl, prefix: this.config.subjectPrefix }, 'nats service registered');
  }

  /** The embedded nats-server (pid, restarts, credentials file); null with an external NATS. */
  get embeddedNats(): EmbeddedNats | null {
    return this.embedded;
  }

  /** The HTTP routes as registered, with their declared access (test/docs.test.ts checks docs/api/ against them). */
  httpRoutes(): RegisteredRoute[] {
    return this.http ? registeredRoutes(this.http) : [];
  }

  /** Resolves once the NATS service is registered (tests and the demo wait on it). */
  async natsReady(): Promise<void> {
    await this.natsConnecting;
  }

  /**
   * Stops the HTTP server: new connections are refused at once, requests in flight get
   * HTTP_CLOSE_GRACE_MS to finish, then every connection still open is cut (a client
   * that sends its body slowly, or reads a download slowly, never holds a shutdown).
   */
  private async closeHttp(): Promise<void> {
    const http = this.http;
    if (!http) return;
    const cut = setTimeout(() => {
      this.log.warn('http: requests still open after the shutdown grace are cut');
      http.server.closeAllConnections();
    }, HTTP_CLOSE_GRACE_MS);
    try {
      await http.close();
    } catch (err) {
      this.log.warn({ err }, 'http close');
    } finally {
      clearTimeout(cut);
    }
  }

  /** NATS's stop: alarms held, the service and its connection closed (the embedded server stops next). */
  private async stopNats(): Promise<void> {
    // Its cameras stopped and given up first, while NATS still carries the release.
    await this.cluster?.stop();
    // A pull in flight is cut (its .pull file resumes at the next start).
    await this.copies?.close();
    await this.pictureCopies?.close();
    this.objectCopies?.stop();
    await this.objectLog?.stop();
    await this.backups?.close();
    await this.pictureBackups?.close();
    this.alarms.detach();
    if (this.natsGraceTimer) clearTimeout(this.natsGraceTimer);
    // An external server still connecting: attachNats() sees the signal and closes it.
    await this.natsApi?.close().catch(() => undefined);
  }

  /** Stops every component in reverse start order (see the module comment); idempotent. */
  async stop(): Promise<void> {
    await this.lifecycle.stop();
  }
}

/** The box of the cluster's key for users' S3 secrets, made again when the cluster token is first known (or changes). */
function clusterKeyBox(token: () => string | null): () => SecretBox | null {
  let made: { token: string; box: SecretBox } | null = null;
  return () => {
    const t = token();
    if (t === null) return null;
    if (made?.token !== t) made = { token: t, box: SecretBox.derived(t, 's3-access-keys') };
    return made.box;
  };
}
