/**
 * Camera credentials (the `user:password@` of RTSP URLs) are shown to admins only
 * (docs/design/security.md "Credentials"). Everything else that echoes a camera's config or
 * free text that may quote a URL (ffmpeg's messages quote the input URL) goes through
 * here:
 *   - `redactUrl` / `redactCamera`: `rtsp://user:pass@host/…` → `rtsp://user:***@host/…`
 *     in the URL fields of a camera (streams.main, streams.sub, edge.replayUrl);
 *   - `redactText`: the same for every URL inside free text (errors, gap reasons,
 *     status details, NATS publishes) and for the log lines as written (lib/log.ts),
 *     JSON string escapes included, so a password never reaches a log;
 *   - `restoreRedacted`: a camera PUT that sends back a URL whose password is the mark
 *     (a client that edited what it was shown) keeps the stored password of the same
 *     user at the same host, or is refused: `***` is never stored as a password.
 */
import type { CameraConfig } from '../index/records.ts';
import { ValidationError } from '../lib/errors.ts';
import { REDACTED, URL_PARTS, redactUrl } from '../lib/redact.ts';

export { REDACTED, redactText, redactUrl } from '../lib/redact.ts';

/** A camera config as a non-admin sees it: every URL field without its password. */
export function redactCamera<T extends Pick<CameraConfig, 'streams' | 'edge'>>(camera: T): T {
  return {
    ...camera,
    streams: { ...camera.streams, main: redactUrl(camera.streams.main), ...(camera.streams.sub !== undefined ? { sub: redactUrl(camera.streams.sub) } : {}) },
    ...(camera.edge ? { edge: { ...camera.edge, replayUrl: redactUrl(camera.edge.replayUrl) } } : {}),
  };
}

interface UrlParts {
  scheme: string;
  user: string;
  password: string;
  /** host[:port] */
  authority: string;
  /** Path, query and fragment, as written. */
  rest: string;
}

function parts(url: string): UrlParts | null {
  const p = URL_PARTS.exec(url);
  return p ? { scheme: p[1]!, user: p[2]!, password: p[3]!, authority: p[4]!, rest: p[5]! } : null;
}

function sameLogin(a: UrlParts, b: UrlParts): boolean {
  return a.scheme.toLowerCase() === b.scheme.toLowerCase() && a.user === b.user && a.authority.toLowerCase() === b.authority.toLowerCase();
}

/**
 * `incoming` (a validated camera PUT) with every URL whose password is the mark given
 * the stored password of the same user at the same scheme://host:port: first the same
 * field of the stored camera, then its other URL fields (a new sub stream of the same
 * camera login). The path may differ (a client that edited the path of a URL it was
 * shown redacted). Nothing matching: VALIDATION_FAILED naming the field, since storing
 * `***` as the password would only fail later, at the camera.
 */
export function restoreRedacted<T extends Pick<CameraConfig, 'id' | 'streams' | 'edge'>>(
  incoming: T,
  stored: Pick<CameraConfig, 'streams' | 'edge'> | undefined,
): T {
  const storedUrls: { field: string; url: string }[] = [];
  if (stored) {
    storedUrls.push({ field: 'streams.main', url: stored.streams.main });
    if (stored.streams.sub !== undefined) storedUrls.push({ field: 'streams.sub', url: stored.streams.sub });
    if (stored.edge) storedUrls.push({ field: 'edge.replayUrl', url: stored.edge.replayUrl });
  }
  const problems: { path: string; message: string }[] = [];
  const restore = (field: string, url: string): string => {
    const p = parts(url);
    if (!p || p.password !== REDACTED) return url;
    const ordered = [...storedUrls.filter((s) => s.field === field), ...storedUrls.filter((s) => s.field !== field)];
    for (const s of ordered) {
      const q = parts(s.url);
      if (q && sameLogin(p, q)) return `${p.scheme}${p.user}:${q.password}@${p.authority}${p.rest}`;
    }
    problems.push({
      path: field,
      message: `the password is the redaction mark "${REDACTED}" and camera ${incoming.id} has no stored URL for user ${JSON.stringify(p.user)} at ${p.authority}: send the password`,
    });
    return url;
  };
  const out: T = {
    ...incoming,
    streams: {
      ...incoming.streams,
      main: restore('streams.main', incoming.streams.main),
      ...(incoming.streams.sub !== undefined ? { sub: restore('streams.sub', incoming.streams.sub) } : {}),
    },
    ...(incoming.edge ? { edge: { ...incoming.edge, replayUrl: restore('edge.replayUrl', incoming.edge.replayUrl) } } : {}),
  };
  if (problems.length > 0) throw new ValidationError(problems.map((i) => `${i.path}: ${i.message}`).join('; '), problems);
  return out;
}
