/**
 * The NATS interface (docs/api/nats.md), registered as a NATS service ("recorder") so
 * `nats micro` discovery and stats work. Each endpoint: decode JSON, call one
 * RecorderService function, reply `{ok:true,...}` or `{ok:false,error:{code,message}}`.
 *
 * NATS is never on the recording path: status publishes are fire-and-forget and
 * dropped (with a counter) when the client cannot buffer them. Alarms are confirmed
 * (`deliverAlarms`), so lib/alarms.ts holds them while NATS is away: nats.js discards
 * what was published while disconnected when it reconnects.
 *
 * Credentials: NATS requests carry no principal, so replies show cameras as a
 * non-admin sees them (URL passwords as `***`, security/redact.ts), and every publish
 * (status details, alarms, back-fill errors quote ffmpeg, which quotes the URL) is
 * redacted as text. A `camera.put` that sends `***` back keeps the stored password.
 */
import { readFileSync } from 'node:fs';
import { connect, nkeyAuthenticator, type ConnectionOptions, type NatsConnection, type Service, type ServiceMsg } from 'nats';
import type { RecorderConfig } from '../lib/config.ts';
import { RecorderError, errorBody, toRecorderError } from '../lib/errors.ts';
import type { Logger } from '../lib/log.ts';
import type { CameraStatus } from '../actors/deps.ts';
import type { Alarm } from '../lib/alarms.ts';
import type { BackfillProgress } from '../backfill/manager.ts';
import { VERSION, type RecorderService } from '../services/recorder-service.ts';
import { redactText } from '../lib/redact.ts';
import { assertRunning } from '../lib/lifecycle.ts';

type Handler = (body: unknown) => unknown;

const FLUSH_TIMEOUT_MS = 5000;

export interface NatsApi {
  nc: NatsConnection;
  publishStatus(status: CameraStatus): void;
  /**
   * Publishes alarms in order and resolves once the server has them (a flush: its PONG
   * comes after the publishes); rejects when that is not known within 5 s (disconnected,
   * reconnecting): lib/alarms.ts keeps them and sends them again.
   */
  deliverAlarms(alarms: Alarm[]): Promise<void>;
  /** `rec.v1.backfill.<camera>`: a gap's back-fill state changed. */
  publishBackfill(progress: BackfillProgress): void;
  droppedPublishes(): number;
  close(): Promise<void>;
}

/** Credentials and TLS of the NATS client, from the settings (lib/config.ts `nats*`). */
export type NatsClientAuth = Pick<RecorderConfig, 'natsUser' | 'natsPassword' | 'natsToken' | 'natsNkeySeedFile' | 'natsTlsCa' | 'natsTlsCert' | 'natsTlsKey'>;

/** Connection options for the configured credentials; bad combinations and unreadable files are CONFIG_INVALID. */
export function natsAuthOptions(auth: NatsClientAuth): Partial<ConnectionOptions> {
  const out: Partial<ConnectionOptions> = {};
  if ((auth.natsUser === undefined) !== (auth.natsPassword === undefined)) throw new RecorderError('CONFIG_INVALID', 'natsUser and natsPassword go together');
  if (auth.natsUser !== undefined) Object.assign(out, { user: auth.natsUser, pass: auth.natsPassword });
  if (auth.natsToken !== undefined) out.token = auth.natsToken;
  if (auth.natsNkeySeedFile !== undefined) {
    let seed: string;
    try {
      seed = readFileSync(auth.natsNkeySeedFile, 'utf8').trim();
    } catch (err) {
      throw new RecorderError('CONFIG_INVALID', `natsNkeySeedFile ${auth.natsNkeySeedFile}: ${(err as Error).message}`, { cause: err });
    }
    if (!/^SU[A-Z2-7]{50,}$/.test(seed)) throw new RecorderError('CONFIG_INVALID', `natsNkeySeedFile ${auth.natsNkeySeedFile} holds no user nkey seed (SU…)`);
    out.authenticator = nkeyAuthenticator(new TextEncoder().encode(seed));
  }
  if ((auth.natsTlsCert === undefined) !== (auth.natsTlsKey === undefined)) throw new RecorderError('CONFIG_INVALID', 'natsTlsCert and natsTlsKey go together');
  if (auth.natsTlsCa !== undefined || auth.natsTlsCert !== undefined) {
    out.tls = {
      ...(auth.natsTlsCa !== undefined ? { caFile: auth.natsTlsCa } : {}),
      ...(auth.natsTlsCert !== undefined ? { certFile: auth.natsTlsCert, keyFile: auth.natsTlsKey } : {}),
    };
  }
  return out;
}

export async function connectNats(url: string, log: Logger, auth: NatsClientAuth = {}): Promise<NatsConnection> {
  const nc = await connect({
    ...natsAuthOptions(auth),
    servers: url.split(','),
    name: 'recorder',
    reconnect: true,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 1000,
    waitOnFirstConnect: true,
  });
  void (async () => {
    for await (const s of nc.status()) log.info({ nats: s.type, data: typeof s.data === 'string' ? s.data : undefined }, 'nats status');
  })();
  return nc;
}

/**
 * Registers the service. Once `signal` (the node's shutdown, lib/lifecycle.ts) aborts,
 * every request is answered `SHUTTING_DOWN` without calling the service.
 */
export async function startNatsApi(nc: NatsConnection, service: RecorderService, prefix: string, log: Logger, signal?: AbortSignal): Promise<NatsApi> {
  const subject = (s: string): string => `${prefix}.v1.${s}`;
  const srv: Service = await nc.services.add({ name: 'recorder', version: VERSION, description: 'IP camera recorder' });
  const endpoints: Record<string, Handler> = {
    'camera.put': (b) => service.putCamera(b).then((camera) => ({ camera })),
    'camera.delete': (b) => service.deleteCamera(b),
    'camera.list': () => ({ cameras: service.listCameras() }),
    'camera.get': (b) => ({ camera: service.getCamera(b) }),
    'schedule.put': (b) => service.putSchedule(b).then((schedule) => ({ schedule })),
    search: (b) => service.search(b),
    'manual.start': (b) => service.manual(b, true),
    'manual.stop': (b) => service.manual(b, false),
    backfill: (b) => service.backfill(b),
    'smart.search': (b) => service.smart.search(b),
    'smart.next': (b) => service.smart.next(b),
    'system.info': () => service.systemInfo().then((system) => ({ system })),
    'cluster.nodes': () => service.clusterNodes(),
    'cluster.drain': (b) => service.clusterDrain(b),
    'pool.put': (b) => service.storage.putPool(b).then((pool) => ({ pool })),
    'pool.list': () => ({ pools: service.storage.listPools() }),
    lock: (b) => service.storage.lock(b).then((lock) => ({ lock })),
    unlock: (b) => service.storage.unlock(b),
    'label.add': (b) => service.storage.addLabel(b).then((label) => ({ label })),
    'label.update': (b) => service.storage.updateLabel(b).then((label) => ({ label })),
    'label.delete': (b) => service.storage.deleteLabel(b),
    'label.search': (b) => ({ labels: service.storage.searchLabels(b) }),
    'picture.put': (b) => service.pictures.putJson(b).then((picture) => ({ picture })),
    // By id: on the node that stores it; in batch: on every node storing pictures of the cameras (services/cluster-pictures.ts).
    'picture.lock': (b) => (isOneId(b) ? service.clusterPictures.lockOne(b, false) : service.clusterPictures.lockBatch(b, () => true, false)),
    'picture.unlock': (b) => (isOneId(b) ? service.clusterPictures.lockOne(b, true) : service.clusterPictures.lockBatch(b, () => true, true)),
  };
  for (const [name, handler] of Object.entries(endpoints)) {
    srv.addEndpoint(name.replace('.', '_'), {
      subject: subject(name),
      handler: (err, msg) => {
        if (err) {
          log.error({ err, endpoint: name }, 'nats endpoint failed');
          return;
        }
        void respond(msg, handler, name, log, true, signal);
      },
    });
  }
  // Events: `rec.v1.event.<camera>`, as a request (replied) or a plain publish.
  srv.addEndpoint('event', {
    subject: subject('event.*'),
    handler: (err, msg) => {
      if (err) return;
      const camera = msg.subject.slice(subject('event.').length);
      void respond(msg, (b) => service.event(camera, b), 'event', log, msg.reply !== undefined && msg.reply !== '', signal);
    },
  });
  let dropped = 0;
  return {
    nc,
    publishStatus(status) {
      try {
        nc.publish(subject(`status.${status.camera}`), redactText(JSON.stringify(status)));
      } catch {
        dropped++;
      }
    },
    async deliverAlarms(alarms) {
      for (const alarm of alarms) nc.publish(subject(`alarm.${alarm.kind}`), redactText(JSON.stringify(alarm)));
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          nc.flush(),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error('no confirmation from the NATS server within 5 s')), FLUSH_TIMEOUT_MS);
          }),
        ]);
      } finally {
        clearTimeout(timer);
      }
    },
    publishBackfill(progress) {
      try {
        nc.publish(subject(`backfill.${progress.camera}`), redactText(JSON.stringify(progress)));
      } catch {
        dropped++;
      }
    },
    droppedPublishes: () => dropped,
    async close() {
      await srv.stop().catch(() => undefined);
      // drain() throws at once while reconnecting; then only close() ends the retries.
      try {
        await nc.drain();
      } catch {
        await nc.close();
      }
    },
  };
}

async function respond(msg: ServiceMsg, handler: Handler, name: string, log: Logger, reply_ = true, signal?: AbortSignal): Promise<void> {
  let reply: unknown;
  try {
    assertRunning(signal, name);
    let body: unknown = {};
    if (msg.data.length > 0) {
      try {
        body = JSON.parse(msg.string());
      } catch {
        throw new RecorderError('BAD_JSON', 'request body is not JSON');
      }
    }
    reply = { ok: true, ...((await handler(body)) as object) };
  } catch (err) {
    const e = toRecorderError(err);
    if (e.status >= 500 && e.code !== 'SHUTTING_DOWN') log.error({ err: e, endpoint: name }, 'request failed');
    else log.info({ endpoint: name, code: e.code, message: e.message }, 'request refused');
    reply = { ok: false, error: errorBody(e) };
  }
  if (!reply_) return;
  try {
    msg.respond(JSON.stringify(reply));
  } catch (err) {
    log.warn({ err, endpoint: name }, 'could not send reply');
  }
}

/** A picture lock request naming one picture by `id` (else a batch by cameras and range). */
function isOneId(body: unknown): body is Record<string, unknown> & { id: string } {
  return typeof (body as { id?: unknown } | null)?.id === 'string';
}
