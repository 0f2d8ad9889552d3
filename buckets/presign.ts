/**
 * Presigned S3 URLs for the web UI (`POST /api/s3/presign`, api/s3-keys.ts): the
 * browser lists, downloads, uploads and deletes with plain fetch and links against the
 * S3 listener itself, so every rule of S3 applies to it unchanged (signatures, the
 * user's pools, ACLs, versions, durability order), and no secret reaches the page.
 *
 * The URL is signed with an access key of the HTTP user asking (their first, as S3 sees
 * them: buckets/keys.ts); an admin without a key of their own (the anonymous admin of a
 * loopback recorder without auth included) signs with the settings' root key. Anyone
 * else without a key gets S3_UNAVAILABLE, as when the listener is off.
 *
 * The listener answers the browser's CORS preflight for the recorder's own UI
 * (buckets/s3-server.ts `corsOrigin`).
 */
import { z } from 'zod';
import type { RecorderIndex } from '../index/db.ts';
import type { S3Keys } from './keys.ts';
import { RecorderError } from '../lib/errors.ts';
import type { Clock } from '../lib/time.ts';
import { validate } from '../lib/validate.ts';
import { ROOT_USER } from './access.ts';
import { MAX_KEY_BYTES, bucketNameValid } from './names.ts';
import { presignUrl, type Credential } from './sigv4.ts';

/** Query parameters a presigned UI request may carry: listing and download headers. */
const QUERY_KEYS = [
  'list-type',
  'prefix',
  'delimiter',
  'continuation-token',
  'start-after',
  'max-keys',
  'versionId',
  'versions',
  'response-content-disposition',
  'response-content-type',
] as const;

const presignSchema = z
  .object({
    method: z.enum(['GET', 'PUT', 'DELETE', 'HEAD']),
    bucket: z.string().refine(bucketNameValid, 'not a valid bucket name').optional(),
    key: z
      .string()
      .min(1)
      .refine((k) => Buffer.byteLength(k, 'utf8') <= MAX_KEY_BYTES && !k.includes('\0'), 'a key is 1-1024 bytes without NUL')
      .optional(),
    query: z.partialRecord(z.enum(QUERY_KEYS), z.string().max(2048)).optional(),
    expiresSeconds: z.number().int().min(1).max(3600).default(900),
  })
  .strict()
  .refine((b) => b.key === undefined || b.bucket !== undefined, { message: 'a key needs its bucket', path: ['key'] });

export interface PresignView {
  url: string;
  method: string;
  expiresAt: string;
  /** The S3 user the URL acts as (`root`: the settings' key). */
  user: string;
}

export interface PresignDeps {
  index: RecorderIndex;
  /** Users' keys (their secrets are sealed in the index). */
  keys: S3Keys;
  clock: Clock;
  /** The settings' first key (RECORDER_S3_ACCESS_KEY), acting as root; absent when unset. */
  root?: Credential | undefined;
  /** The S3 listener's URL (`http://host:port`), '' while it is off. */
  listenerUrl: () => string;
}

export class S3Presigner {
  constructor(private readonly d: PresignDeps) {}

  /**
   * A URL for `body` signed as `who`. `requestHost` is the Host the browser reached the
   * HTTP API at: a listener bound to every address is reached at that name too.
   */
  presign(who: { name: string; role: string }, requestHost: string | undefined, body: unknown): PresignView {
    const b = validate(presignSchema, body);
    const base = this.d.listenerUrl();
    if (!base) throw new RecorderError('S3_UNAVAILABLE', 'the S3 listener is off (RECORDER_S3, or no access key exists)');
    const cred = this.credentialFor(who);
    const nowMs = this.d.clock.nowMs();
    const path = b.bucket === undefined ? '/' : `/${b.bucket}${b.key === undefined ? '' : `/${b.key}`}`;
    const url = presignUrl({
      method: b.method,
      origin: reachable(base, requestHost),
      path,
      ...(b.query ? { query: b.query } : {}),
      cred,
      nowMs,
      expiresS: b.expiresSeconds,
    });
    return { url, method: b.method, expiresAt: new Date(nowMs + b.expiresSeconds * 1000).toISOString(), user: cred.user };
  }

  private credentialFor(who: { name: string; role: string }): Credential {
    const own = this.d.index.buckets.accessKeys(who.name)[0];
    if (own && who.name !== ROOT_USER) return { accessKeyId: own.accessKeyId, secret: this.d.keys.secretOf(own), user: own.user };
    if (who.role === 'admin' && this.d.root) return this.d.root;
    throw new RecorderError('S3_UNAVAILABLE', `user ${JSON.stringify(who.name)} has no S3 access key (an admin issues one: POST /api/users/:name/s3-keys)`);
  }
}

/** The listener's URL as the browser reaches it: a wildcard bind is reached by the name the page came from. */
export function reachable(listenerUrl: string, requestHost: string | undefined): string {
  const u = new URL(listenerUrl);
  const wildcard = u.hostname === '0.0.0.0' || u.hostname === '[::]';
  if (!wildcard || !requestHost) return `${u.protocol}//${u.host}`;
  const name = new URL(`http://${requestHost}`).hostname;
  return `${u.protocol}//${name}:${u.port}`;
}

/**
 * Whether a browser origin is the recorder's own web UI: the HTTP API's port, by any
 * name (the UI may be reached as 127.0.0.1, a host name or an address).
 */
export function isRecorderUi(origin: string, httpUrl: string): boolean {
  if (!httpUrl) return false;
  try {
    const o = new URL(origin);
    const h = new URL(httpUrl);
    return o.protocol === h.protocol && (o.port || '80') === (h.port || '80');
  } catch {
    return false;
  }
}
