/**
 * Settings: flags > environment (RECORDER_*) > config file (JSON) > defaults
 * (docs/settings.md). One schema with descriptions and bounds validates the merged
 * result; unknown keys in the config file are rejected.
 */
import { isIP } from 'node:net';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { RecorderError } from './errors.ts';

const hostPort = z
  .string()
  .regex(/^(?:[^\s:[\]]+|\[[0-9a-fA-F:.]+\]):\d{1,5}$/, 'expected host:port or [ipv6]:port')
  .describe('HTTP listen address, host:port or [ipv6]:port');

export const configSchema = z
  .object({
    dataDir: z.string().min(1).default('./data').describe('where segments (pools/), the LMDB index (index/) and the embedded NATS store live'),
    http: hostPort.default('127.0.0.1:8080'),
    natsUrl: z.string().min(1).optional().describe('NATS server URL(s), comma separated; unset starts an embedded nats-server'),
    subjectPrefix: z
      .string()
      .regex(/^[A-Za-z0-9_-]+$/)
      .default('rec')
      .describe('first token of every subject'),
    segmentSeconds: z.coerce.number().int().min(2).max(3600).default(60).describe('target segment length in seconds'),
    syncSeconds: z.coerce
      .number()
      .min(0)
      .max(10)
      .default(4)
      .describe(
        'longest media time appended but not yet fdatasynced and indexed (0: every GOP); a power cut loses at most this, a killed process nothing more',
      ),
    maxStreams: z.coerce
      .number()
      .int()
      .min(1)
      .max(100_000)
      .default(500)
      .describe(
        'media streams (downloads, playback, live, WebSocket sessions) served at once; more get 503 TOO_MANY_STREAMS with Retry-After (~0.5 MB each when stalled)',
      ),
    backoffInitialMs: z.coerce.number().int().min(100).max(60_000).default(1000).describe('first reconnect delay; doubles per failure'),
    backoffMaxMs: z.coerce.number().int().min(100).max(600_000).default(30_000).describe('reconnect delay cap'),
    ingestTimeoutMs: z.coerce.number().int().min(1000).max(120_000).default(10_000).describe('a camera that sends nothing this long is treated as gone'),
    ingest: z
      .enum(['ffmpeg', 'native'])
      .default('native')
      .describe(
        'who reads H.264/H.265 cameras whose audio is AAC or none: native (our own RTSP client in this process) or ffmpeg (one process per camera); the others always use ffmpeg',
      ),
    authToken: z.string().min(16).optional().describe('an admin bearer token for HTTP; this or auth=required is mandatory when HTTP binds beyond loopback'),
    auth: z
      .enum(['auto', 'required'])
      .default('auto')
      .describe(
        'auto: HTTP asks for credentials once a token or a user exists (loopback only before); required: always (start refuses without a token or an admin user)',
      ),
    natsUser: z.string().min(1).optional().describe('NATS user name (with natsPassword)'),
    natsPassword: z.string().min(1).optional().describe('NATS password'),
    natsToken: z.string().min(1).optional().describe('NATS authentication token'),
    natsNkeySeedFile: z.string().min(1).optional().describe('file holding the NATS nkey seed (SU...) to sign the server nonce'),
    natsTlsCa: z.string().min(1).optional().describe('PEM file of the CA that signed the NATS server certificate (enables TLS)'),
    natsTlsCert: z.string().min(1).optional().describe('PEM client certificate for NATS TLS (with natsTlsKey)'),
    natsTlsKey: z.string().min(1).optional().describe('PEM private key of natsTlsCert'),
    alarmCpuPercent: z.coerce.number().min(1).max(100).default(90).describe('machine CPU busy share that raises cpu-high when sustained'),
    alarmMemoryPercent: z.coerce.number().min(1).max(100).default(90).describe('machine memory used share that raises memory-high'),
    alarmDiskPercent: z.coerce.number().min(1).max(100).default(90).describe('data disk used share that raises disk-near-full'),
    healthSampleSeconds: z.coerce.number().int().min(1).max(3600).default(10).describe('how often CPU, memory and disk are sampled for alarms'),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    demo: z.boolean().default(false).describe('add a synthetic demo camera (a local GStreamer RTSP server)'),
    backfillConcurrency: z.coerce.number().int().min(1).max(16).default(2).describe('back-fill pulls running at once on this node (one per camera at most)'),
    backfillMaxAttempts: z.coerce.number().int().min(1).max(100).default(5).describe('back-fill attempts per gap before it is given up (alarm)'),
    backfillRetryMs: z.coerce
      .number()
      .int()
      .min(100)
      .max(86_400_000)
      .default(60_000)
      .describe('delay before a failed back-fill is retried; doubles per attempt'),
    backfillDelayMs: z.coerce
      .number()
      .int()
      .min(0)
      .max(3_600_000)
      .default(10_000)
      .describe('wait after a camera returns before back-filling (its SD card flushes)'),
    backfillSyncHours: z.coerce
      .number()
      .min(0)
      .max(24 * 31)
      .default(24)
      .describe('periodic sync looks back this many hours for holes to back-fill (0: off)'),
    backfillSyncIntervalMs: z.coerce.number().int().min(1000).max(86_400_000).default(3_600_000).describe('how often the periodic sync runs'),
    backfillPullSeconds: z.coerce.number().int().min(10).max(86_400).default(600).describe('longest interval asked for in one replay pull'),
    ffmpegPath: z.string().min(1).default('ffmpeg'),
    natsServerPath: z.string().min(1).default('nats-server'),
    retentionTickMs: z.coerce
      .number()
      .int()
      .min(100)
      .max(3_600_000)
      .default(5000)
      .describe('retention passes run on every segment close and at least this often'),
    minFreeBytes: z.coerce
      .number()
      .int()
      .min(0)
      .default(2 * 1024 ** 3)
      .describe('emergency overwrite when the data disk has less free space than this or minFreeRatio of its size, whichever is larger'),
    minFreeRatio: z.coerce.number().min(0).max(0.5).default(0.02).describe('emergency overwrite threshold as a share of the data disk'),
    indexReserveBytes: z.coerce
      .number()
      .int()
      .min(0)
      .default(8 * 1024 ** 2)
      .describe(
        'room kept for the index: this much preallocated past the end of its file, and a file beside it (index.reserve) deleted when the disk fills; each at most 1/32 of the disk; 0: none',
      ),
    cluster: z
      .enum(['auto', 'on', 'off'])
      .default('auto')
      .describe('cluster mode (docs/cluster.md): auto is on when natsUrl lists several servers; on: also with one server (the embedded one included)'),
    clusterTickMs: z.coerce.number().int().min(100).max(60_000).default(500).describe('cluster heartbeat and ownership tick'),
    advertiseHost: z
      .string()
      .regex(/^[^\s/:[\]]+$|^\[?[0-9a-fA-F:.]+\]?$/, 'expected a host name or an IP address')
      .optional()
      .describe(
        'the host or IP other cluster nodes reach this node at (its HTTP and S3 listeners); unset: the listen host, or when that is 0.0.0.0 or ::, the first address of the machine that is not loopback',
      ),
    clusterWeight: z.coerce
      .number()
      .gt(0)
      .max(100)
      .optional()
      .describe("this node's capacity relative to the others in camera placement; unset: measured (cores, disk)"),
    clusterPlaybackWindowMs: z.coerce
      .number()
      .int()
      .min(1000)
      .max(24 * 3600_000)
      .default(600_000)
      .describe('recording time a playback session through this node pulls from other nodes at a time (docs/cluster.md)'),
    clusterZipPageEntries: z.coerce
      .number()
      .int()
      .min(1)
      .max(7000)
      .default(2000)
      .describe("entries of this node's part of another node's batch ZIP per NATS reply (the listing comes in pages)"),
    clusterDeadTicks: z.coerce
      .number()
      .int()
      .min(2)
      .max(100)
      .default(5)
      .describe("a peer is dead once this many of this node's successful heartbeats passed without one of its own"),
    s3: z
      .union([z.literal('off'), hostPort])
      .default('127.0.0.1:9000')
      .describe('S3 listen address, host:port or [ipv6]:port, or off; it starts once an S3 access key exists (s3AccessKey, or a user key)'),
    s3AccessKey: z
      .string()
      .regex(/^[A-Za-z0-9._-]{3,128}$/, 'expected 3-128 characters of A-Z a-z 0-9 . _ -')
      .optional()
      .describe('the first S3 access key id (acts as an admin), with s3SecretKey'),
    s3SecretKey: z.string().min(8).max(256).optional().describe('the secret of the first S3 access key'),
    secretKeyFile: z
      .string()
      .min(1)
      .optional()
      .describe("the key that seals users' S3 secret keys in the index (made on first use, 32 bytes, mode 0600); default <dataDir>/secret.key"),
    s3UploadExpiryMs: z.coerce
      .number()
      .int()
      .min(1000)
      .default(86_400_000)
      .describe('an S3 multipart upload neither completed nor aborted this long after it started is aborted and its parts removed'),
    s3ScrubMs: z.coerce
      .number()
      .int()
      .min(1000)
      .default(604_800_000)
      .describe('how often every S3 object is read back and checked against its MD5 (and its backup copy): a bad copy is made again from the good one'),
    backupAuditMs: z.coerce
      .number()
      .int()
      .min(1000)
      .default(3_600_000)
      .describe('how often backup copies of pools with a backupDir are checked and re-created'),
    pictureMaxBytes: z.coerce
      .number()
      .int()
      .min(1024)
      .max(256 * 1024 ** 2)
      .default(16 * 1024 ** 2)
      .describe('largest picture accepted (bytes); a larger body is refused 413 before it is read'),
    picturePackBytes: z.coerce
      .number()
      .int()
      .min(64 * 1024)
      .default(256 * 1024 ** 2)
      .describe('a picture pack file is closed and a new one started once it holds this many bytes'),
    picturePackSeconds: z.coerce
      .number()
      .int()
      .min(1)
      .max(86_400 * 31)
      .default(3600)
      .describe('… or once it is this old at the next write'),
    picturePreviewCacheBytes: z.coerce
      .number()
      .int()
      .min(0)
      .default(32 * 1024 ** 2)
      .describe('rendered picture previews kept in memory (bytes; none over a quarter of it; 0: none kept)'),
    eventSnapshots: z.enum(['on', 'off']).default('on').describe("an NVR event a camera records stores the event's I-frame as a picture typed with the event"),
  })
  .strict();

export type RecorderConfig = z.infer<typeof configSchema>;
export type RecorderConfigInput = z.input<typeof configSchema>;

const ENV: Record<string, keyof RecorderConfig> = {
  RECORDER_DATA_DIR: 'dataDir',
  RECORDER_HTTP: 'http',
  RECORDER_NATS_URL: 'natsUrl',
  RECORDER_SUBJECT_PREFIX: 'subjectPrefix',
  RECORDER_SEGMENT_SECONDS: 'segmentSeconds',
  RECORDER_SYNC_SECONDS: 'syncSeconds',
  RECORDER_MAX_STREAMS: 'maxStreams',
  RECORDER_BACKOFF_INITIAL_MS: 'backoffInitialMs',
  RECORDER_BACKOFF_MAX_MS: 'backoffMaxMs',
  RECORDER_INGEST_TIMEOUT_MS: 'ingestTimeoutMs',
  RECORDER_INGEST: 'ingest',
  RECORDER_AUTH_TOKEN: 'authToken',
  RECORDER_AUTH: 'auth',
  RECORDER_NATS_USER: 'natsUser',
  RECORDER_NATS_PASSWORD: 'natsPassword',
  RECORDER_NATS_TOKEN: 'natsToken',
  RECORDER_NATS_NKEY_SEED_FILE: 'natsNkeySeedFile',
  RECORDER_NATS_TLS_CA: 'natsTlsCa',
  RECORDER_NATS_TLS_CERT: 'natsTlsCert',
  RECORDER_NATS_TLS_KEY: 'natsTlsKey',
  RECORDER_ALARM_CPU_PERCENT: 'alarmCpuPercent',
  RECORDER_ALARM_MEMORY_PERCENT: 'alarmMemoryPercent',
  RECORDER_ALARM_DISK_PERCENT: 'alarmDiskPercent',
  RECORDER_HEALTH_SAMPLE_SECONDS: 'healthSampleSeconds',
  RECORDER_LOG_LEVEL: 'logLevel',
  RECORDER_BACKFILL_CONCURRENCY: 'backfillConcurrency',
  RECORDER_BACKFILL_MAX_ATTEMPTS: 'backfillMaxAttempts',
  RECORDER_BACKFILL_RETRY_MS: 'backfillRetryMs',
  RECORDER_BACKFILL_DELAY_MS: 'backfillDelayMs',
  RECORDER_BACKFILL_SYNC_HOURS: 'backfillSyncHours',
  RECORDER_BACKFILL_SYNC_INTERVAL_MS: 'backfillSyncIntervalMs',
  RECORDER_BACKFILL_PULL_SECONDS: 'backfillPullSeconds',
  RECORDER_FFMPEG: 'ffmpegPath',
  RECORDER_NATS_SERVER: 'natsServerPath',
  RECORDER_RETENTION_TICK_MS: 'retentionTickMs',
  RECORDER_MIN_FREE_BYTES: 'minFreeBytes',
  RECORDER_MIN_FREE_RATIO: 'minFreeRatio',
  RECORDER_INDEX_RESERVE_BYTES: 'indexReserveBytes',
  RECORDER_BACKUP_AUDIT_MS: 'backupAuditMs',
  RECORDER_PICTURE_MAX_BYTES: 'pictureMaxBytes',
  RECORDER_PICTURE_PACK_BYTES: 'picturePackBytes',
  RECORDER_PICTURE_PACK_SECONDS: 'picturePackSeconds',
  RECORDER_CLUSTER: 'cluster',
  RECORDER_CLUSTER_TICK_MS: 'clusterTickMs',
  RECORDER_CLUSTER_ZIP_PAGE_ENTRIES: 'clusterZipPageEntries',
  RECORDER_CLUSTER_WEIGHT: 'clusterWeight',
  RECORDER_ADVERTISE_HOST: 'advertiseHost',
  RECORDER_CLUSTER_PLAYBACK_WINDOW_MS: 'clusterPlaybackWindowMs',
  RECORDER_CLUSTER_DEAD_TICKS: 'clusterDeadTicks',
  RECORDER_PICTURE_PREVIEW_CACHE_BYTES: 'picturePreviewCacheBytes',
  RECORDER_EVENT_SNAPSHOTS: 'eventSnapshots',
  RECORDER_S3: 's3',
  RECORDER_S3_ACCESS_KEY: 's3AccessKey',
  RECORDER_S3_SECRET_KEY: 's3SecretKey',
  RECORDER_SECRET_KEY_FILE: 'secretKeyFile',
  RECORDER_S3_UPLOAD_EXPIRY_MS: 's3UploadExpiryMs',
  RECORDER_S3_SCRUB_MS: 's3ScrubMs',
};

const FLAGS = {
  config: { type: 'string' },
  'data-dir': { type: 'string' },
  http: { type: 'string' },
  'nats-url': { type: 'string' },
  'subject-prefix': { type: 'string' },
  'segment-seconds': { type: 'string' },
  'log-level': { type: 'string' },
  demo: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  // `recorder user …` only (see recorder.ts)
  role: { type: 'string' },
  pools: { type: 'string' },
  'password-stdin': { type: 'boolean' },
  token: { type: 'boolean' },
} as const;

const FLAG_KEYS: Record<string, keyof RecorderConfig> = {
  'data-dir': 'dataDir',
  http: 'http',
  'nats-url': 'natsUrl',
  'subject-prefix': 'subjectPrefix',
  'segment-seconds': 'segmentSeconds',
  'log-level': 'logLevel',
  demo: 'demo',
};

export function helpText(): string {
  const lines = [
    'usage: recorder [start|check|reindex] [flags]',
    '       recorder user add NAME --role admin|operator|viewer [--pools a,b|*] [--password-stdin] [--token]',
    '       recorder user list | recorder user remove NAME',
    '',
    'flags (override RECORDER_* environment, which overrides --config FILE):',
  ];
  lines.push('  --config FILE            JSON file with any of the settings below (camelCase keys)');
  for (const [flag, key] of Object.entries(FLAG_KEYS)) {
    const env = Object.entries(ENV).find(([, k]) => k === key)?.[0] ?? '';
    const desc = configSchema.shape[key].description ?? '';
    lines.push(`  --${flag.padEnd(22)} ${env.padEnd(28)} ${desc}`);
  }
  lines.push('', 'environment only:');
  for (const [env, key] of Object.entries(ENV)) {
    if (Object.values(FLAG_KEYS).includes(key)) continue;
    lines.push(`  ${env.padEnd(28)} ${configSchema.shape[key].description ?? ''}`);
  }
  return lines.join('\n');
}

export interface UserCommand {
  verb: 'add' | 'list' | 'remove';
  name?: string;
  role?: string;
  pools?: string[];
  passwordStdin: boolean;
  token: boolean;
}

export interface ParsedCommandLine {
  command: 'start' | 'check' | 'reindex' | 'user';
  help: boolean;
  config: RecorderConfig;
  /** Set for `recorder user …`. */
  user?: UserCommand;
}

export function loadConfig(argv: string[], env: NodeJS.ProcessEnv): ParsedCommandLine {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: FLAGS, allowPositionals: true, strict: true });
  } catch (err) {
    throw new RecorderError('CONFIG_INVALID', (err as Error).message, { cause: err });
  }
  const command = parsed.positionals[0] ?? 'start';
  if (command !== 'start' && command !== 'check' && command !== 'reindex' && command !== 'user') {
    throw new RecorderError('CONFIG_INVALID', `unknown command ${JSON.stringify(command)}`);
  }
  let user: UserCommand | undefined;
  if (command === 'user') {
    const [verb, name, ...rest] = parsed.positionals.slice(1);
    if ((verb !== 'add' && verb !== 'list' && verb !== 'remove') || rest.length > 0 || (verb !== 'list') !== (name !== undefined)) {
      throw new RecorderError('CONFIG_INVALID', 'expected: user add NAME --role ROLE … | user list | user remove NAME');
    }
    user = {
      verb,
      ...(name !== undefined ? { name } : {}),
      ...(parsed.values.role !== undefined ? { role: parsed.values.role } : {}),
      ...(parsed.values.pools !== undefined ? { pools: parsed.values.pools.split(',').filter(Boolean) } : {}),
      passwordStdin: parsed.values['password-stdin'] === true,
      token: parsed.values.token === true,
    };
  }
  const merged: Record<string, unknown> = {};
  if (parsed.values.config) {
    try {
      Object.assign(merged, JSON.parse(readFileSync(parsed.values.config, 'utf8')));
    } catch (err) {
      throw new RecorderError('CONFIG_INVALID', `config file ${parsed.values.config}: ${(err as Error).message}`, { cause: err });
    }
  }
  for (const [name, key] of Object.entries(ENV)) {
    const v = env[name];
    if (v !== undefined && v !== '') merged[key] = v;
  }
  for (const [flag, key] of Object.entries(FLAG_KEYS)) {
    const v = (parsed.values as Record<string, unknown>)[flag];
    if (v !== undefined) merged[key] = v;
  }
  const result = configSchema.safeParse(merged);
  if (!result.success) {
    throw new RecorderError('CONFIG_INVALID', `invalid settings: ${z.prettifyError(result.error)}`, { details: result.error.issues });
  }
  const config = result.data;
  if (command === 'start') assertAuthForBind(config);
  return { command, help: parsed.values.help === true, config, ...(user ? { user } : {}) };
}

/**
 * docs/security.md: binding HTTP beyond loopback requires authentication. Checked here (the
 * settings alone) and again at node start (auth=required then needs a token or an
 * admin user in the index).
 */
export function assertAuthForBind(config: RecorderConfig, boundAddress?: string): void {
  if (config.authToken || config.auth === 'required') return;
  // A name is judged by the address it was bound to (node start passes it): a name
  // is only as loopback as what it resolves to, whatever it is called.
  const host = boundAddress ?? splitHostPort(config.http).host;
  if (isIP(host) === 0 ? boundAddress !== undefined || host !== 'localhost' : !isLoopbackAddress(host)) {
    throw new RecorderError(
      'CONFIG_INVALID',
      `HTTP would bind ${host}, beyond loopback, without authentication: set RECORDER_AUTH_TOKEN, or RECORDER_AUTH=required with users (recorder user add)`,
    );
  }
}

/**
 * Whether `address` is an IP literal of the loopback network: 127.0.0.0/8, ::1, or
 * ::ffff:127.x. Names (`localhost`, `127.evil.example`) are never loopback here.
 */
export function isLoopbackAddress(address: string): boolean {
  const a = address.toLowerCase();
  if (isIP(a) === 4) return a.startsWith('127.');
  if (isIP(a) === 6) return a === '::1' || a === '0:0:0:0:0:0:0:1' || (a.startsWith('::ffff:') && isIP(a.slice(7)) === 4 && a.slice(7).startsWith('127.'));
  return false;
}

/** `host:port` or `[ipv6]:port` → host (without brackets) and port. */
export function splitHostPort(hp: string): { host: string; port: number } {
  const i = hp.lastIndexOf(':');
  const host = hp.slice(0, i);
  return { host: host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host, port: Number(hp.slice(i + 1)) };
}
