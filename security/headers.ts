/**
 * Header values built from data (camera ids, times): never let a quote, CR/LF or
 * non-ASCII byte reach a header. Ids are already restricted at the API edge
 * (storage/layout.ts ID_PATTERN); this is the second wall for anything that got past
 * it (an index written by an older build, a transient camera).
 */

/** `attachment; filename="…"` with every character outside [A-Za-z0-9._-] replaced by `_`. */
export function attachmentDisposition(filename: string): string {
  const safe = filename.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 200) || 'download';
  return `attachment; filename="${safe}"`;
}
