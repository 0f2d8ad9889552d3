/**
 * AWS Signature Version 4 as S3 checks it: the `Authorization` header form and the
 * query (presigned URL) form. The canonical request is rebuilt from the request as it
 * arrived (path decoded and encoded again segment by segment without normalising, the
 * query sorted, the signed headers trimmed), signed with the secret of the access key
 * it names, and compared in constant time. A body sent as aws-chunked carries a
 * signature per chunk chained from the header's (buckets/aws-chunked.ts); its seed
 * and signing key are returned for that.
 *
 * Errors (S3's): AuthorizationHeaderMalformed, AuthorizationQueryParametersError,
 * InvalidAccessKeyId, AccessDenied (no date, an expired URL), RequestTimeTooSkewed,
 * SignatureDoesNotMatch.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { S3Error } from './s3-errors.ts';

export const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
const ALGORITHM = 'AWS4-HMAC-SHA256';
/** How far a request's date may be from our clock (S3's own limit). */
const MAX_SKEW_MS = 15 * 60_000;
/** A presigned URL lives at most 7 days (S3's limit). */
const MAX_EXPIRES_S = 604_800;

export interface Credential {
  accessKeyId: string;
  secret: string;
  /** The user the key belongs to (`root`: the first key of the settings, acting as an admin). */
  user: string;
}

export type KeyLookup = (accessKeyId: string) => Credential | undefined;

export interface Verified {
  cred: Credential;
  /** x-amz-content-sha256 as signed: hex, UNSIGNED-PAYLOAD or a STREAMING-… mode. */
  payloadHash: string;
  /** What a chunked body's first chunk signature chains from. */
  seedSignature: string;
  signingKey: Buffer;
  amzDate: string;
  scope: string;
}

/** S3's URI encoding: every byte but A-Z a-z 0-9 - . _ ~ as %XX (upper case); `/` kept when asked. */
export function uriEncode(s: string, keepSlash: boolean): string {
  let out = '';
  for (const byte of Buffer.from(s, 'utf8')) {
    const c = String.fromCharCode(byte);
    if (/[A-Za-z0-9\-._~]/.test(c) || (keepSlash && c === '/')) out += c;
    else out += `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

function decode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new S3Error('InvalidArgument', 'the request URI is not valid percent-encoding');
  }
}

function hmac(key: Buffer | string, data: string): Buffer {
  return createHmac('sha256', key).update(data, 'utf8').digest();
}

export function sha256Hex(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * The day's signing key. Derived per request and kept for its chunk signatures (four
 * HMACs, a few microseconds): not memoised in a module global, so nodes in one process
 * share nothing and no secret-derived key outlives its request.
 */
export function signingKey(secret: string, date: string, region: string, service: string): Buffer {
  return hmac(hmac(hmac(hmac(`AWS4${secret}`, date), region), service), 'aws4_request');
}

export function sameSignature(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Signature of a string to sign with a signing key, hex. */
export function sign(key: Buffer, stringToSign: string): string {
  return createHmac('sha256', key).update(stringToSign, 'utf8').digest('hex');
}

/** The request's header values by lower-case name, repeated headers joined by `,`. */
function headerValues(req: IncomingMessage): Map<string, string> {
  const m = new Map<string, string>();
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    const value = raw[i + 1]!.trim().replace(/\s+/g, ' ');
    const had = m.get(name);
    m.set(name, had === undefined ? value : `${had},${value}`);
  }
  return m;
}

function canonicalQuery(rawQuery: string, skip?: string): string {
  if (!rawQuery) return '';
  const pairs: [string, string][] = [];
  for (const part of rawQuery.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const k = decode(eq < 0 ? part : part.slice(0, eq));
    const v = eq < 0 ? '' : decode(part.slice(eq + 1));
    if (k === skip) continue;
    pairs.push([uriEncode(k, false), uriEncode(v, false)]);
  }
  pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  return pairs.map(([k, v]) => `${k}=${v}`).join('&');
}

function canonicalRequest(req: IncomingMessage, rawPath: string, rawQuery: string, signedHeaders: string[], payloadHash: string, skipQuery?: string): string {
  const values = headerValues(req);
  const path = rawPath
    .split('/')
    .map((seg) => uriEncode(decode(seg), false))
    .join('/');
  const headers = signedHeaders.map((h) => `${h}:${values.get(h) ?? ''}\n`).join('');
  return [req.method ?? 'GET', path, canonicalQuery(rawQuery, skipQuery), headers, signedHeaders.join(';'), payloadHash].join('\n');
}

/** `YYYYMMDDTHHMMSSZ` → ms, or NaN. */
function amzDateMs(d: string): number {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(d);
  if (!m) return NaN;
  return Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!);
}

interface Scope {
  accessKeyId: string;
  date: string;
  region: string;
  service: string;
}

function parseCredential(v: string, fail: () => S3Error): Scope {
  const parts = v.split('/');
  if (parts.length !== 5 || parts[4] !== 'aws4_request' || !/^\d{8}$/.test(parts[1]!)) throw fail();
  const [accessKeyId, date, region, service] = parts as [string, string, string, string];
  if (service !== 's3') throw fail();
  return { accessKeyId, date, region, service };
}

/**
 * Verifies the header form (`Authorization: AWS4-HMAC-SHA256 …`). `rawPath` and
 * `rawQuery` are the request target as sent.
 */
export function verifyHeaderAuth(req: IncomingMessage, rawPath: string, rawQuery: string, lookup: KeyLookup, nowMs: number): Verified {
  const auth = req.headers.authorization ?? '';
  const malformed = (): S3Error => new S3Error('AuthorizationHeaderMalformed', 'The authorization header is malformed');
  if (!auth.startsWith(`${ALGORITHM} `)) {
    if (auth.startsWith('AWS ')) throw new S3Error('InvalidRequest', 'Signature Version 2 is not supported: use AWS Signature Version 4');
    throw malformed();
  }
  const fields = new Map<string, string>();
  for (const part of auth.slice(ALGORITHM.length + 1).split(',')) {
    const eq = part.indexOf('=');
    if (eq > 0) fields.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
  }
  const credential = fields.get('Credential');
  const signed = fields.get('SignedHeaders');
  const signature = fields.get('Signature');
  if (!credential || !signed || !signature) throw malformed();
  const scope = parseCredential(credential, malformed);
  const cred = lookup(scope.accessKeyId);
  if (!cred) throw new S3Error('InvalidAccessKeyId', 'The AWS Access Key Id you provided does not exist in our records.');
  const amzDate = (req.headers['x-amz-date'] as string | undefined) ?? '';
  const dateMs = amzDate ? amzDateMs(amzDate) : Date.parse(req.headers.date ?? '');
  if (!Number.isFinite(dateMs)) throw new S3Error('AccessDenied', 'AWS authentication requires a valid Date or X-Amz-Date header');
  if (Math.abs(nowMs - dateMs) > MAX_SKEW_MS)
    throw new S3Error('RequestTimeTooSkewed', 'The difference between the request time and the current time is too large.');
  const payloadHash = req.headers['x-amz-content-sha256'];
  if (typeof payloadHash !== 'string' || payloadHash === '')
    throw new S3Error('InvalidRequest', 'Missing required header for this request: x-amz-content-sha256');
  const signedHeaders = signed.split(';');
  if (!signedHeaders.includes('host')) throw malformed();
  const dateStamp = amzDate || new Date(dateMs).toISOString().replace(/[-:]|\.\d{3}/g, '');
  if (dateStamp.slice(0, 8) !== scope.date) throw malformed();
  const scopeStr = `${scope.date}/${scope.region}/${scope.service}/aws4_request`;
  const creq = canonicalRequest(req, rawPath, rawQuery, signedHeaders, payloadHash);
  const key = signingKey(cred.secret, scope.date, scope.region, scope.service);
  const expected = sign(key, `${ALGORITHM}\n${dateStamp}\n${scopeStr}\n${sha256Hex(creq)}`);
  if (!sameSignature(expected, signature.toLowerCase())) {
    throw new S3Error(
      'SignatureDoesNotMatch',
      'The request signature we calculated does not match the signature you provided. Check your key and signing method.',
    );
  }
  return { cred, payloadHash, seedSignature: expected, signingKey: key, amzDate: dateStamp, scope: scopeStr };
}

/** Verifies the query form (a presigned URL): X-Amz-Algorithm, -Credential, -Date, -Expires, -SignedHeaders, -Signature. */
export function verifyQueryAuth(req: IncomingMessage, rawPath: string, rawQuery: string, query: URLSearchParams, lookup: KeyLookup, nowMs: number): Verified {
  const bad = (what: string): S3Error => new S3Error('AuthorizationQueryParametersError', what);
  if (query.get('X-Amz-Algorithm') !== ALGORITHM) throw bad('X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"');
  const credential = query.get('X-Amz-Credential');
  const amzDate = query.get('X-Amz-Date') ?? '';
  const expires = Number(query.get('X-Amz-Expires'));
  const signed = query.get('X-Amz-SignedHeaders');
  const signature = query.get('X-Amz-Signature');
  if (!credential || !signed || !signature) throw bad('Query-string authentication requires X-Amz-Credential, X-Amz-SignedHeaders and X-Amz-Signature');
  if (!Number.isInteger(expires) || expires < 1 || expires > MAX_EXPIRES_S) throw bad('X-Amz-Expires must be an integer from 1 to 604800');
  const scope = parseCredential(credential, () => bad('Error parsing the X-Amz-Credential parameter'));
  const dateMs = amzDateMs(amzDate);
  if (!Number.isFinite(dateMs) || amzDate.slice(0, 8) !== scope.date)
    throw bad('X-Amz-Date must be in the ISO8601 Long Format "yyyyMMddTHHmmssZ" of the credential date');
  const cred = lookup(scope.accessKeyId);
  if (!cred) throw new S3Error('InvalidAccessKeyId', 'The AWS Access Key Id you provided does not exist in our records.');
  if (dateMs - nowMs > MAX_SKEW_MS) throw new S3Error('RequestTimeTooSkewed', 'The request is dated in the future.');
  if (nowMs > dateMs + expires * 1000) throw new S3Error('AccessDenied', 'Request has expired', { 'X-Amz-Expires': String(expires) });
  const signedHeaders = signed.split(';');
  const payloadHash = 'UNSIGNED-PAYLOAD';
  const scopeStr = `${scope.date}/${scope.region}/${scope.service}/aws4_request`;
  const creq = canonicalRequest(req, rawPath, rawQuery, signedHeaders, payloadHash, 'X-Amz-Signature');
  const key = signingKey(cred.secret, scope.date, scope.region, scope.service);
  const expected = sign(key, `${ALGORITHM}\n${amzDate}\n${scopeStr}\n${sha256Hex(creq)}`);
  if (!sameSignature(expected, signature.toLowerCase())) {
    throw new S3Error(
      'SignatureDoesNotMatch',
      'The request signature we calculated does not match the signature you provided. Check your key and signing method.',
    );
  }
  return { cred, payloadHash, seedSignature: expected, signingKey: key, amzDate, scope: scopeStr };
}

/** The string a chunk's signature signs (STREAMING-AWS4-HMAC-SHA256-PAYLOAD). */
export function chunkStringToSign(v: Pick<Verified, 'amzDate' | 'scope'>, previous: string, chunkSha256: string): string {
  return `AWS4-HMAC-SHA256-PAYLOAD\n${v.amzDate}\n${v.scope}\n${previous}\n${EMPTY_SHA256}\n${chunkSha256}`;
}

/** The string the trailer's signature signs (…-PAYLOAD-TRAILER). */
export function trailerStringToSign(v: Pick<Verified, 'amzDate' | 'scope'>, previous: string, trailerSha256: string): string {
  return `AWS4-HMAC-SHA256-TRAILER\n${v.amzDate}\n${v.scope}\n${previous}\n${trailerSha256}`;
}

export interface PresignRequest {
  method: 'GET' | 'PUT' | 'DELETE' | 'HEAD';
  /** `http://host:port` as the client will reach the listener (its Host header is signed). */
  origin: string;
  /** The object path, decoded (`/bucket/key`, `/` for the bucket list). */
  path: string;
  /** Query parameters the request carries (e.g. list-type, prefix), signed with it. */
  query?: Readonly<Record<string, string>>;
  cred: Credential;
  nowMs: number;
  expiresS: number;
  region?: string;
}

/**
 * A presigned URL: the query form verifyQueryAuth checks (host the only signed header,
 * UNSIGNED-PAYLOAD), so a browser can list, download and upload with plain fetch and
 * links while the secret stays on the server.
 */
export function presignUrl(p: PresignRequest): string {
  if (!Number.isInteger(p.expiresS) || p.expiresS < 1 || p.expiresS > MAX_EXPIRES_S) throw new RangeError('expiresS must be an integer from 1 to 604800');
  const host = new URL(p.origin).host;
  const amzDate = new Date(p.nowMs)
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}/, '');
  const date = amzDate.slice(0, 8);
  const region = p.region ?? 'us-east-1';
  const scope = `${date}/${region}/s3/aws4_request`;
  const params: [string, string][] = [
    ...Object.entries(p.query ?? {}),
    ['X-Amz-Algorithm', ALGORITHM],
    ['X-Amz-Credential', `${p.cred.accessKeyId}/${scope}`],
    ['X-Amz-Date', amzDate],
    ['X-Amz-Expires', String(p.expiresS)],
    ['X-Amz-SignedHeaders', 'host'],
  ];
  const rawQuery = params.map(([k, v]) => `${uriEncode(k, false)}=${uriEncode(v, false)}`).join('&');
  const rawPath = p.path
    .split('/')
    .map((seg) => uriEncode(seg, false))
    .join('/');
  const creq = [p.method, rawPath, canonicalQuery(rawQuery), `host:${host}\n`, 'host', 'UNSIGNED-PAYLOAD'].join('\n');
  const key = signingKey(p.cred.secret, date, region, 's3');
  const signature = sign(key, `${ALGORITHM}\n${amzDate}\n${scope}\n${sha256Hex(creq)}`);
  return `${p.origin}${rawPath}?${rawQuery}&X-Amz-Signature=${signature}`;
}
