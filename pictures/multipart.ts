/**
 * `multipart/form-data` bodies (RFC 7578) of a batch picture write: the whole body is
 * already in memory (bounded by the route's body limit), so this only splits it at its
 * boundary. Each part is `{name, filename?, type?, data}`. Errors: VALIDATION_FAILED
 * (no boundary, a part without headers or its closing delimiter, a part without a name).
 */
import { ValidationError } from '../lib/errors.ts';

export interface Part {
  name: string;
  filename?: string;
  type?: string;
  data: Buffer;
}

/** The boundary of a `multipart/form-data` content type, or null when it is not one. */
export function multipartBoundary(contentType: string | undefined): string | null {
  if (!contentType || !/^multipart\/form-data\b/i.test(contentType)) return null;
  const m = /;\s*boundary=(?:"([^"]{1,70})"|([^\s;]{1,70}))/i.exec(contentType);
  if (!m) throw new ValidationError('multipart/form-data without a boundary');
  return m[1] ?? m[2]!;
}

function param(header: string, name: string): string | undefined {
  const m = new RegExp(`;\\s*${name}="([^"]*)"`, 'i').exec(header) ?? new RegExp(`;\\s*${name}=([^\\s;]+)`, 'i').exec(header);
  return m?.[1];
}

export function parseMultipart(body: Buffer, boundary: string): Part[] {
  const delimiter = Buffer.from(`--${boundary}`);
  const parts: Part[] = [];
  let at = body.indexOf(delimiter);
  if (at < 0) throw new ValidationError('multipart body without its boundary');
  for (;;) {
    at += delimiter.length;
    if (body.subarray(at, at + 2).toString('latin1') === '--') return parts;
    if (body.subarray(at, at + 2).toString('latin1') !== '\r\n') throw new ValidationError('multipart delimiter not followed by CRLF');
    at += 2;
    const headEnd = body.indexOf('\r\n\r\n', at);
    if (headEnd < 0) throw new ValidationError('multipart part without the end of its headers');
    const headers = new Map<string, string>();
    for (const line of body.subarray(at, headEnd).toString('utf8').split('\r\n')) {
      const colon = line.indexOf(':');
      if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
    }
    const next = body.indexOf(Buffer.concat([Buffer.from('\r\n'), delimiter]), headEnd + 4);
    if (next < 0) throw new ValidationError('multipart part without its closing delimiter');
    const disposition = headers.get('content-disposition') ?? '';
    const name = param(disposition, 'name');
    if (!/^form-data\b/i.test(disposition) || name === undefined) throw new ValidationError('multipart part without Content-Disposition: form-data; name=…');
    const filename = param(disposition, 'filename');
    const type = headers.get('content-type');
    parts.push({ name, ...(filename !== undefined ? { filename } : {}), ...(type !== undefined ? { type } : {}), data: body.subarray(headEnd + 4, next) });
    at = next + 2;
  }
}
