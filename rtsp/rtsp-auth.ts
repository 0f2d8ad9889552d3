/**
 * RTSP client authentication (RFC 2617 as cameras use it): Basic, and Digest with MD5
 * and optional `qop=auth`. The replay proxy answers a camera's 401 itself, because
 * ffmpeg would compute Digest over the proxy's URL, not the camera's.
 */
import { createHash, randomBytes } from 'node:crypto';

export interface Credentials {
  user: string;
  password: string;
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
