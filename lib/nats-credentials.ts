/**
 * Credentials of the embedded nats-server (issue 13 item 4). Without them any local
 * process could read every pool's labels, unlock video or purge a camera over NATS,
 * whatever HTTP authentication says.
 *
 * At first start three users get random passwords, kept in
 * `<data>/nats/credentials.json` (0600, the recorder's user and root read it):
 * - `recorder`: the recorder itself: its service subjects (`<prefix>.v1.>`), service
 *   discovery (`$SRV.>`), replies (`_INBOX.>`) and JetStream/KV/object store.
 * - `vms`: the control API: publishes requests and events on `<prefix>.v1.>` and
 *   discovery on `$SRV.>`, receives replies on `_INBOX.>` and subscribes to status,
 *   alarms and back-fill progress. It may not publish those (no spoofed alarms) and may
 *   not subscribe to request subjects (no answering in the recorder's place).
 * - `observer`: subscribes to status and alarms, publishes nothing.
 * The permissions are written at every start into `<data>/nats/server.conf` (0600) from
 * the passwords and the current subject prefix; the port last used is kept so a VMS
 * finds the server where it was.
 *
 * Plain passwords, not bcrypt: the VMS needs the plain `vms` password, so it is stored
 * next to the server config anyway (same directory, same 0600); a hash in the config
 * would hide nothing and would need a bcrypt library. The password travels in clear
 * over loopback in the client's CONNECT, as with any NATS user/password.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RecorderError } from './errors.ts';
import type { Logger } from './log.ts';

export const NATS_USERS = ['recorder', 'vms', 'observer'] as const;
export type NatsUserName = (typeof NATS_USERS)[number];

export interface NatsUserCredentials {
  user: string;
  password: string;
}

export interface EmbeddedNatsCredentials {
  version: 1;
  /** Where the embedded server listens (rewritten at every start). */
  url?: string;
  port?: number;
  subjectPrefix?: string;
  users: Record<NatsUserName, NatsUserCredentials>;
}

export interface NatsPermissions {
  publish: { allow?: string[]; deny?: string[] };
  subscribe: { allow?: string[]; deny?: string[] };
}

const PASSWORD = /^[A-Za-z0-9_-]{24,}$/;

export function natsDir(dataDir: string): string {
  return join(dataDir, 'nats');
}

export function credentialsFile(dataDir: string): string {
  return join(natsDir(dataDir), 'credentials.json');
}

export function serverConfigFile(dataDir: string): string {
  return join(natsDir(dataDir), 'server.conf');
}

/** Per-user subject permissions for subject prefix `prefix` (lib/config.ts `subjectPrefix`). */
export function natsPermissions(prefix: string): Record<NatsUserName, NatsPermissions> {
  const p = `${prefix}.v1`;
  const published = [`${p}.status.>`, `${p}.alarm.>`, `${p}.backfill.>`];
  return {
    recorder: {
      publish: { allow: [`${p}.>`, '_INBOX.>', '$SRV.>', '$JS.API.>', '$JS.ACK.>', '$JS.FC.>', '$KV.>', '$O.>'] },
      subscribe: { allow: [`${p}.>`, '_INBOX.>', '$SRV.>', '$KV.>', '$O.>'] },
    },
    vms: {
      // Nor copy announcements: only recorders (and a backup source with its own credentials) make them.
      publish: { allow: [`${p}.>`, '$SRV.>'], deny: [...published, `${p}.copies.>`] },
      subscribe: { allow: ['_INBOX.>', ...published] },
    },
    observer: {
      publish: { deny: ['>'] },
      subscribe: { allow: [`${p}.status.>`, `${p}.alarm.>`] },
    },
  };
}

/** Reads the credentials file; null when there is none. A file that cannot be used is NATS_START_FAILED (never silently replaced: the VMS holds those passwords). */
export function readEmbeddedNatsCredentials(dataDir: string): EmbeddedNatsCredentials | null {
  const file = credentialsFile(dataDir);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new RecorderError('NATS_START_FAILED', `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  const bad = (why: string): RecorderError =>
    new RecorderError('NATS_START_FAILED', `${file} ${why}: fix it, or delete it to generate new NATS credentials (the VMS then needs the new vms password)`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw bad('is not JSON');
  }
  const c = parsed as Partial<EmbeddedNatsCredentials> | null;
  if (!c || typeof c !== 'object' || c.version !== 1 || !c.users || typeof c.users !== 'object') throw bad('is not a version 1 credentials file');
  for (const name of NATS_USERS) {
    const u = c.users[name];
    if (!u || u.user !== name || typeof u.password !== 'string' || !PASSWORD.test(u.password)) throw bad(`has no usable ${name} user`);
  }
  return c as EmbeddedNatsCredentials;
}

function writePrivate(file: string, text: string): void {
  // Unchanged (the usual restart: same users, same port): nothing to write, so a start
  // on a full disk does not fail here (issue 13 item 1).
  try {
    if ((statSync(file).mode & 0o077) === 0 && readFileSync(file, 'utf8') === text) return;
  } catch {
    /* no file yet */
  }
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, file);
}

/**
 * The credentials of this data dir, generated at first use. A file others could read is
 * made 0600 again (with a warning: its passwords may have been read).
 */
export function loadOrCreateCredentials(dataDir: string, log: Logger): EmbeddedNatsCredentials {
  mkdirSync(natsDir(dataDir), { recursive: true, mode: 0o700 });
  const file = credentialsFile(dataDir);
  const existing = readEmbeddedNatsCredentials(dataDir);
  if (existing) {
    const mode = statSync(file).mode & 0o777;
    if (mode & 0o077) {
      chmodSync(file, 0o600);
      log.warn({ file, mode: mode.toString(8) }, 'NATS credentials file was readable by others: made 0600 (delete it to generate new passwords)');
    }
    return existing;
  }
  const creds: EmbeddedNatsCredentials = {
    version: 1,
    users: Object.fromEntries(NATS_USERS.map((name) => [name, { user: name, password: randomBytes(24).toString('base64url') }])) as Record<
      NatsUserName,
      NatsUserCredentials
    >,
  };
  writePrivate(file, `${JSON.stringify(creds, null, 2)}\n`);
  log.info({ file }, 'NATS credentials generated for the embedded nats-server (users recorder, vms, observer)');
  return creds;
}

/** Records where the server listens now (the VMS reads the URL beside its password). */
export function saveEndpoint(dataDir: string, creds: EmbeddedNatsCredentials, url: string, port: number, subjectPrefix: string): void {
  Object.assign(creds, { url, port, subjectPrefix });
  writePrivate(credentialsFile(dataDir), `${JSON.stringify(creds, null, 2)}\n`);
}

/**
 * nats-server's configuration: JSON is valid nats-server config syntax, and quoted
 * strings keep `$SRV.>` from being read as a variable.
 */
export function writeServerConfig(dataDir: string, creds: EmbeddedNatsCredentials, subjectPrefix: string): string {
  const perms = natsPermissions(subjectPrefix);
  const conf = {
    authorization: {
      users: NATS_USERS.map((name) => ({ user: creds.users[name].user, password: creds.users[name].password, permissions: perms[name] })),
    },
  };
  const file = serverConfigFile(dataDir);
  writePrivate(file, `${JSON.stringify(conf, null, 2)}\n`);
  return file;
}
