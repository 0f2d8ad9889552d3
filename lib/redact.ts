/**
 * Passwords out of URLs, at the text level (no imports: lib/log.ts and lib/errors.ts
 * use it). Camera configs and the PUT round trip are in security/redact.ts.
 */
/** What a password is replaced by (so a new camera cannot be given the password `***` itself). */
export const REDACTED = '***';

// scheme:// user : password @ — the user has no ':' or '@'; the password runs to the
// last '@' before a '/', a quote or white space (a host never holds '@'). `\\.` takes a
// JSON string escape whole, so a password with a `"` in a log line is matched too.
const USERINFO = /([a-z][a-z0-9+.-]*:\/\/)((?:[^\s/"\\@:]|\\.)*):((?:[^\s/"\\]|\\.)*)@/gi;
/** scheme, user, password, host[:port], the rest (a URL with a password only). */
export const URL_PARTS = /^([a-z][a-z0-9+.-]*:\/\/)([^\s/@:]*):([^\s/]*)@([^/?#]*)(.*)$/is;

// An API token in a query string (`?access_token=`, the WebSocket/`<video>` form of the
// bearer token; `token=`): logged 5xx URLs carried it in the clear (issue 13).
const QUERY_TOKEN = /([?&](?:access_token|token)=)(?!\*\*\*)[^&\s"#\\]+/gi;

/**
 * Every URL's password and every query-string token in `text` replaced by the mark;
 * text without one is returned as is.
 */
export function redactText(text: string): string {
  let out = text;
  if (out.includes('://'))
    out = out.replace(USERINFO, (all, scheme: string, user: string, pass: string) => (pass === REDACTED ? all : `${scheme}${user}:${REDACTED}@`));
  if (out.includes('token=')) out = out.replace(QUERY_TOKEN, `$1${REDACTED}`);
  return out;
}

/** One URL with its password replaced by the mark (a URL without a password is unchanged). */
export function redactUrl(url: string): string {
  const p = URL_PARTS.exec(url);
  return p ? `${p[1]}${p[2]}:${REDACTED}@${p[4]}${p[5]}` : url;
}
