/**
 * Whether and where the node runs its S3 listener (buckets/s3-server.ts), from the
 * settings: `s3` (host:port, or `off`) and the first access key (`s3AccessKey` with
 * `s3SecretKey`, acting as `root`, an admin) or the users' keys (buckets/keys.ts).
 * Without any key nobody could sign a request, so no listener starts and no port is
 * taken (a first user key issued later takes effect at the next start).
 */
import type { RecorderIndex } from '../index/db.ts';
import type { RecorderConfig } from '../lib/config.ts';
import { splitHostPort } from '../lib/config.ts';
import { RecorderError } from '../lib/errors.ts';
import type { AlarmInput } from '../lib/alarms.ts';
import type { Logger } from '../lib/log.ts';
import type { Clock } from '../lib/time.ts';
import { ROOT_USER } from './access.ts';
import type { BucketCluster } from './catalog-writes.ts';
import { S3Server } from './s3-server.ts';
import { S3Keys } from './keys.ts';
import type { Credential } from './sigv4.ts';

export interface S3ListenerDeps {
  config: RecorderConfig;
  index: RecorderIndex;
  /** Users' keys (their secrets sealed in the index). */
  keys: S3Keys;
  log: Logger;
  clock: Clock;
  signal: AbortSignal;
  raiseAlarm?: (alarm: AlarmInput) => void;
  /** Browser origins the listener answers CORS for (the recorder's own web UI). */
  corsOrigin?: (origin: string) => boolean;
  /** In a cluster: the object log, the read barrier and other nodes' bytes. */
  cluster?: BucketCluster;
}

/** The settings' first key (RECORDER_S3_ACCESS_KEY / _SECRET_KEY), acting as root; undefined when unset. */
export function rootCredential(config: Pick<RecorderConfig, 's3AccessKey' | 's3SecretKey'>): Credential | undefined {
  return config.s3AccessKey !== undefined && config.s3SecretKey !== undefined
    ? { accessKeyId: config.s3AccessKey, secret: config.s3SecretKey, user: ROOT_USER }
    : undefined;
}

/** The started listener, or null when it is off or no access key exists. */
export async function startS3Listener(d: S3ListenerDeps): Promise<S3Server | null> {
  const { config } = d;
  if ((config.s3AccessKey === undefined) !== (config.s3SecretKey === undefined)) {
    throw new RecorderError('CONFIG_INVALID', 'RECORDER_S3_ACCESS_KEY and RECORDER_S3_SECRET_KEY go together: set both or neither');
  }
  const userKeys = d.keys;
  if (config.s3 === 'off' || (config.s3AccessKey === undefined && !userKeys.any())) return null;
  const keys = userKeys.lookup(rootCredential(config));
  const server = new S3Server({
    index: d.index,
    dataDir: config.dataDir,
    log: d.log,
    clock: d.clock,
    keys,
    signal: d.signal,
    uploadExpiryMs: config.s3UploadExpiryMs,
    backupAuditMs: config.backupAuditMs,
    scrubMs: config.s3ScrubMs,
    ...(d.raiseAlarm ? { raiseAlarm: d.raiseAlarm } : {}),
    ...(d.corsOrigin ? { corsOrigin: d.corsOrigin } : {}),
    ...(d.cluster ? { cluster: d.cluster } : {}),
  });
  const { host, port } = splitHostPort(config.s3);
  await server.start(host, port);
  return server;
}
