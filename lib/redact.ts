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

/** Every URL's password in `text` replaced by the mark; text without one is returned as is. */
export function redactText(text: string): string {
  if (!text.includes('://')) return text;
  return text.replace(USERINFO, (all, scheme: string, user: string, pass: string) => (pass === REDACTED ? all : `${scheme}${user}:${REDACTED}@`));
}

/** One URL with its password replaced by the mark (a URL without a password is unchanged). */
export function redactUrl(url: string): string {
  const p = URL_PARTS.exec(url);
  return p ? `${p[1]}${p[2]}:${REDACTED}@${p[4]}${p[5]}` : url;
}

