/**
 * The composition root of one recorder node. Start order keeps recording independent
 * of NATS (docs/design/architecture.md section 7): index (checked, compacted, compared with the config
 * journal: index/startup.ts) → on a full disk the emergency overwrite first →
 * reconcile with the files → camera actors →
 * HTTP → NATS (embedded server awaited; an external URL connects in the background
 * and the service registers when it is reachable). The embedded server is
 * authenticated and restarted when it dies (lib/nats-embedded.ts); whichever server,
 * alarms wait in lib/alarms.ts while the client is disconnected. Stop order is the
 * reverse, and every open segment is closed before `stop()` resolves.
 */
import type { FastifyInstance } from 'fastify';
import type { NatsConnection } from 'nats';
import { Supervisor } from './actors/supervisor.ts';
import type { CameraStatus } from './actors/deps.ts';
import { buildHttp, registeredRoutes, type RegisteredRoute } from './api/http.ts';
import { connectNats, startNatsApi, type NatsApi } from './api/nats.ts';
import { RecorderService } from './services/recorder-service.ts';
import { lockDataDir, type DataDirLock } from './lib/data-dir-lock.ts';
import { RecorderIndex } from './index/db.ts';
import type { RecorderConfig } from './lib/config.ts';
import { assertAuthForBind, splitHostPort } from './lib/config.ts';
import type { Logger } from './lib/log.ts';
import { startEmbeddedNats, type EmbeddedNats } from './lib/nats-embedded.ts';
import { AlarmBus, type Alarm } from './lib/alarms.ts';
import { systemClock, type Clock } from './lib/time.ts';
import { reconcile, type ReconcileReport } from './storage/reconcile.ts';
import { UserStore } from './security/users.ts';
import { RecorderMetrics } from './ops/metrics.ts';
import { HealthSampler, machineReader } from './ops/health-sampler.ts';
import { RecorderError } from './lib/errors.ts';
import { StorageSupervisor } from './actors/storage-supervisor.ts';
import { StorageService } from './services/storage-service.ts';
import { deleteSmartWithVideo } from './smart/smart-follows-video.ts';
import { BackfillManager } from './backfill/manager.ts';
import { SegmentTableStore } from './storage/segment-tables.ts';
import type { SegmentRecord } from './index/records.ts';
import { openCheckedIndex } from './index/startup.ts';
import { JournalWriter } from './index/journal.ts';
import { IndexReserve } from './storage/index-reserve.ts';
import type { AlarmInput } from './lib/alarms.ts';

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
  reconcileReport: ReconcileReport | null = null;
  storage: StorageSupervisor | null = null;
  /** Sample tables persisted at segment close (storage/segment-tables.ts). */
  tables: SegmentTableStore | null = null;
  backfill: BackfillManager | null = null;
  /** The config journal beside the data (index/journal.ts). */
  journal: JournalWriter | null = null;
  private embedded: EmbeddedNats | null = null;
  private natsGraceTimer: NodeJS.Timeout | null = null;
  /** Each camera's last published status, sent again after a NATS reconnect. */
  private readonly lastStatus = new Map<string, CameraStatus>();
  private natsApi: NatsApi | null = null;
  private natsConnecting: Promise<void> | null = null;
  private http: FastifyInstance | null = null;
  private stopping = false;
  private sampler: HealthSampler | null = null;
  /** Users of the HTTP interface (security/users.ts), in the index. */
  users!: UserStore;
  /** Prometheus metrics; retention reports deletions and pool figures through it. */
  metrics!: RecorderMetrics;

  private constructor(
    readonly config: RecorderConfig,
    readonly log: Logger,
    readonly clock: Clock,
    readonly index: RecorderIndex,
    readonly supervisor: Supervisor,
    readonly service: RecorderService,
    private readonly alarms: AlarmBus,
    private readonly dirLock: DataDirLock,
  ) {}

  static async start(opts: RecorderNodeOptions): Promise<RecorderNode> {
    const { config, log } = opts;
    const clock = opts.clock ?? systemClock;
    // Before anything touches the dir: a second recorder on it exits here (issue 13).
    const dirLock = await lockDataDir(config.dataDir);
    let index: RecorderIndex;
    try {
      // A corrupt file is refused before LMDB maps it; an index that lost what the journal lists, too.
      ({ index } = await openCheckedIndex(config.dataDir, log, { compact: true }));
    } catch (err) {
      await dirLock.release();
      throw err;
    }
    const alarms = new AlarmBus(log, clock);
    const journal = new JournalWriter(index, config.dataDir, log, (err) => alarms.raise({ kind: 'write-error', message: `config journal could not be written (retrying): ${err.message}` }));
    let node: RecorderNode | null = null;
    let storage: StorageSupervisor | null = null;
    const tables = new SegmentTableStore({ index, dataDir: config.dataDir, log });
    // Every closed segment (live or back-filled): retention and backup, and its sample tables.
    const segmentClosed = (seg: SegmentRecord): void => {
      storage?.segmentClosed(seg);
      tables.segmentClosed(seg);
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
      alarms.raise({ kind: 'write-error', message: `index commit failed: ${cause.errno} (${cause.message}); writers retry`, details: { errno: cause.errno } });
    });
    try {
      storage = new StorageSupervisor({
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
      });
      // A disk too full for the index to commit: overwrite before anything else writes.
      await storage.startOnFullDisk();
      // Crash replay first: an interrupted deletion must not be re-indexed by reconcile,
      // and a primary copy lost while its backup survives must not be dropped by it.
      const finished = await storage.finishIntents();
      const restored = await storage.restoreFromBackups();
      if (finished || restored) log.warn({ finished, restored }, 'storage work finished after a crash');
      const report = await reconcile(index, config.dataDir, { mode: 'repair', log });
      if (report.failedWrites.length > 0) void storage.diskFull(`${report.failedWrites.length} index writes of reconcile failed`);
      for (const d of report.droppedEntries) {
        alarms.raise({ kind: 'index', camera: d.camera, message: `segment file ${d.file} vanished; its index entry was dropped`, details: { file: d.file, startMs: d.startMs } });
      }
      const supervisor = new Supervisor({
        config,
        index,
        clock,
        log,
        publishStatus: (status) => node?.publishStatus(status),
        raiseAlarm: cameraAlarm,
        onSegmentClosed: segmentClosed,
      });
      const service = new RecorderService(index, supervisor, clock, config.dataDir, log);
      const storageSupervisor = storage;
      service.attachStorage(new StorageService(index, storageSupervisor, clock, config.dataDir, log, (id) => service.requireCamera(id)));
      node = new RecorderNode(config, log, clock, index, supervisor, service, alarms, dirLock);
      node.storage = storage;
      node.tables = tables;
      node.journal = journal;
      node.reconcileReport = report;
      node.users = new UserStore(index.root, clock);
      node.assertHttpAuth();
      node.metrics = new RecorderMetrics({
        index,
        nowMs: () => clock.nowMs(),
        cameras: () => service.listCameras().map((c) => ({ id: c.id, pool: c.pool, status: c.status })),
      });
      const metrics = node.metrics;
      alarms.observe((alarm) => metrics.onAlarm(alarm));
      node.sampler = new HealthSampler(
        machineReader(config.dataDir),
        { cpuFraction: config.alarmCpuPercent / 100, memoryFraction: config.alarmMemoryPercent / 100, diskFraction: config.alarmDiskPercent / 100, sustain: 3 },
        (alarm) => alarms.raise(alarm),
      );
      node.sampler.start(config.healthSampleSeconds * 1000);
      await storage.start();
      // The journal as the index is now (the first start after an upgrade writes the first one).
      journal.changed(0);
      // Before the camera actors: recorder-down gaps go into the ledger first.
      node.backfill = new BackfillManager({
        index,
        config,
        clock,
        log,
        camera: (id) => {
          try {
            return service.requireCamera(id);
          } catch {
            return undefined;
          }
        },
        cameras: () => index.listCameras(),
        raiseAlarm: cameraAlarm,
        publish: (progress) => node?.natsApi?.publishBackfill(progress),
        onSegmentClosed: segmentClosed,
      });
      service.attachBackfill(node.backfill);
      await node.backfill.start();
      const resumed = service.resume();
      log.info({ cameras: resumed }, 'cameras resumed from the index');
      await node.startHttp();
      await node.startNats();
      return node;
    } catch (err) {
      if (node) await node.stop().catch(() => undefined);
      else {
        await tables.stop();
        await storage?.stop().catch(() => undefined);
        await journal.stop();
        await index.close().catch(() => undefined);
        await dirLock.release();
      }
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
      throw new RecorderError('CONFIG_INVALID', 'auth=required but no RECORDER_AUTH_TOKEN and no admin user: create one with `recorder user add NAME --role admin --password-stdin`');
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
    this.http = buildHttp({ service: this.service, index: this.index, dataDir: this.config.dataDir, log: this.log, authToken: this.config.authToken, ffmpegPath: this.config.ffmpegPath, users: this.users, authRequired: this.config.auth === 'required', metrics: this.metrics, maxStreams: this.config.maxStreams, ...(this.tables ? { tables: this.tables } : {}) });
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
        this.log.warn('NATS client credentials are set but no RECORDER_NATS_URL: they apply to an external server only; the embedded one uses its own (<data>/nats/credentials.json)');
      }
      this.embedded = await startEmbeddedNats({ dataDir: this.config.dataDir, binary: this.config.natsServerPath, log: this.log, subjectPrefix: this.config.subjectPrefix });
      this.natsUrl = this.embedded.url;
      await this.attachNats(await connectNats(this.embedded.url, this.log, this.embedded.auth));
      return;
    }
    this.natsUrl = this.config.natsUrl;
    // Never wait for an external server: recording and HTTP are already running.
    this.natsConnecting = connectNats(this.config.natsUrl, this.log, this.config)
      .then((nc) => this.attachNats(nc))
      .catch((err: unknown) => this.log.error({ err }, 'nats connection failed'));
  }

  private async attachNats(nc: NatsConnection): Promise<void> {
    if (this.stopping) {
      await nc.close();
      return;
    }
    const api = await startNatsApi(nc, this.service, this.config.subjectPrefix, this.log);
    this.natsApi = api;
    const sink = (alarms: Alarm[]): Promise<void> => api.deliverAlarms(alarms);
    this.alarms.attach(sink);
    // Disconnected (the embedded server died, an external one went away): alarms are
    // held. Reconnected: after a grace that lets the VMS's own client reconnect too (a
    // NATS client retries every 2 s by default, and core NATS delivers to whoever is
    // subscribed at that instant), the held alarms go out in order and every camera's
    // last status is sent again: nats.js drops what was published while disconnected.
    void (async () => {
      for await (const s of nc.status()) {
        if (this.stopping) break;
        if (s.type === 'disconnect') {
          this.alarms.detach();
          if (this.natsGraceTimer) clearTimeout(this.natsGraceTimer);
          this.natsGraceTimer = null;
        } else if (s.type === 'reconnect') {
          if (this.natsGraceTimer) clearTimeout(this.natsGraceTimer);
          this.natsGraceTimer = setTimeout(() => {
            this.natsGraceTimer = null;
            if (this.stopping) return;
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

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    await this.sampler?.stop();
    await this.supervisor.shutdown();
    await this.backfill?.stop();
    // Segments closed by the shutdown above are not waited for: their tables are built when next read.
    await this.tables?.stop();
    await this.storage?.stop();
    await this.closeHttp();
    this.alarms.detach();
    if (this.natsGraceTimer) clearTimeout(this.natsGraceTimer);
    await this.natsApi?.close().catch(() => undefined);
    await this.embedded?.stop();
    await this.journal?.stop();
    await this.index.close();
    await this.dirLock.release();
    this.log.info('recorder stopped');
  }
}
