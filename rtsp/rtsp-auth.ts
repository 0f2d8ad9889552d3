/**
 * RTSP client authentication (RFC 2617 as cameras use it): Basic, and Digest with MD5
 * and optional `qop=auth`. The replay proxy answers a camera's 401 itself, because
 * ffmpeg would compute Digest over the proxy's URL, not the camera's; the MP2P bridge
 * (rtsp/mp2p-bridge.ts) and the DESCRIBE before each ingest attempt
 * (rtsp/rtsp-describe.ts) answer theirs with this too.
 */
import { createHash, randomBytes } from 'node:crypto';

export interface Credentials {
  user: string;
  password: string;
}

/**
 * A camera refused the login (a 401 to a request that carried the URL's credentials),
 * asked for one the URL does not have, or offers no scheme we speak. The message names
 * the user and the camera's host, never the password.
 */
export class RtspAuthError extends Error {
  readonly code = 'RTSP_AUTH';
  constructor(message: string) {
    super(message);
    this.name = 'RtspAuthError';
  }
}

/** The URL's user info, percent-decoded; null when it has no user. */
export function urlCredentials(url: URL): Credentials | null {
  if (!url.username) return null;
  const decode = (s: string): string => {
    try {
      return decodeURIComponent(s);
    } catch {
      return s; // a stray `%`: taken as written
    }
  };
  return { user: decode(url.username), password: decode(url.password) };
}

/** Why a 401 ends the attempt, in words for the camera's status (no password). */
export function refusalReason(host: string, method: string, cred: Credentials | null, challenge: Challenge | null, offered: string[]): string {
  if (!cred) return `RTSP_AUTH: camera ${host} asks for a login to ${method} and the camera's URL has no user and password`;
  if (!challenge) {
    const schemes = offered.map((v) => /^\s*(\S+)/.exec(v)?.[1] ?? '?').join(', ') || 'none';
    return `RTSP_AUTH: camera ${host} asks for a login scheme we do not speak (${schemes}; Basic and Digest MD5 are)`;
  }
  const scheme = challenge.scheme === 'basic' ? 'Basic' : 'Digest';
  return `RTSP_AUTH: camera ${host} refused the login of user "${cred.user}" (${scheme}) to ${method}: wrong user or password`;
}

export interface Challenge {
  scheme: 'basic' | 'digest';
  params: Record<string, string>;
}

/** The strongest challenge we can answer among `WWW-Authenticate` values (Digest MD5 over Basic). */
export function pickChallenge(values: string[]): Challenge | null {
  const parsed = values.map(parseChallenge).filter((c): c is Challenge => c !== null);
  const digest = parsed.find((c) => c.scheme === 'digest' && (c.params.algorithm ?? 'MD5').toUpperCase() === 'MD5');
  return digest ?? parsed.find((c) => c.scheme === 'basic') ?? null;
}

export function parseChallenge(value: string): Challenge | null {
  const m = /^\s*(Basic|Digest)\s*(.*)$/i.exec(value);
  if (!m) return null;
  const params: Record<string, string> = {};
  for (const p of m[2]!.matchAll(/([A-Za-z-]+)\s*=\s*(?:"([^"]*)"|([^,\s]+))/g)) params[p[1]!.toLowerCase()] = p[2] ?? p[3] ?? '';
  return { scheme: m[1]!.toLowerCase() as Challenge['scheme'], params };
}

const md5 = (s: string): string => createHash('md5').update(s).digest('hex');

/**
 * The `Authorization` value for one request. `nc` counts uses of the nonce (qop=auth);
 * `cnonce` is injectable for tests.
 */
export function authorization(ch: Challenge, cred: Credentials, method: string, uri: string, nc = 1, cnonce = randomBytes(8).toString('hex')): string {
  if (ch.scheme === 'basic') return `Basic ${Buffer.from(`${cred.user}:${cred.password}`).toString('base64')}`;
  const { realm = '', nonce = '', opaque, qop } = ch.params;
  const ha1 = md5(`${cred.user}:${realm}:${cred.password}`);
  const ha2 = md5(`${method}:${uri}`);
  const useQop = qop
    ?.split(',')
    .map((q) => q.trim())
    .includes('auth')
    ? 'auth'
    : undefined;
  const ncHex = nc.toString(16).padStart(8, '0');
  const response = useQop ? md5(`${ha1}:${nonce}:${ncHex}:${cnonce}:${useQop}:${ha2}`) : md5(`${ha1}:${nonce}:${ha2}`);
  const parts = [`username="${cred.user}"`, `realm="${realm}"`, `nonce="${nonce}"`, `uri="${uri}"`, `response="${response}"`];
  if (opaque !== undefined) parts.push(`opaque="${opaque}"`);
  if (useQop) parts.push(`qop=${useQop}`, `nc=${ncHex}`, `cnonce="${cnonce}"`);
  return `Digest ${parts.join(', ')}`;
}
