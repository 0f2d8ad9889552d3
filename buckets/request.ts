/**
 * One S3 request as the operations see it (buckets/bucket-ops.ts, object-ops.ts): who
 * signed it, which bucket and key it names, its body as a stream of the object's bytes
 * (aws-chunked decoded and its chunk signatures checked) or as a small buffer, and the
 * answer helpers (XML, empty, headers). Bodies whose payload hash was signed are hashed
 * while they arrive and refused at the end (XAmzContentSHA256Mismatch) if they differ.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { AwsChunkedDecoder, isStreamingMode } from './aws-chunked.ts';
import { S3Error } from './s3-errors.ts';
import { sha256Hex, type Verified } from './sigv4.ts';
import { xmlDoc, type XmlObject } from './xml.ts';

/** S3's largest single PUT (5 GiB); larger objects go by multipart upload. */
export const MAX_PUT_BYTES = 5 * 1024 ** 3;
/** Largest XML request body read (a DeleteObjects of 1000 keys of 1 kB fits). */
const MAX_XML_BYTES = 2 * 1024 * 1024;

export interface S3Request {
  req: IncomingMessage;
  res: ServerResponse;
  method: string;
  bucket?: string;
  key?: string;
  query: URLSearchParams;
  /** The verified signature, or null for an anonymous request. */
  auth: Verified | null;
  requestId: string;
  nowMs: number;
}

/** The body's decoded length, from x-amz-decoded-content-length (aws-chunked) or Content-Length. */
export function declaredLength(r: S3Request): number {
  const chunked = r.auth !== null && isStreamingMode(r.auth.payloadHash);
  const raw = chunked ? r.req.headers['x-amz-decoded-content-length'] : r.req.headers['content-length'];
  if (raw === undefined) {
    if (chunked) throw new S3Error('MissingContentLength', 'You must provide the x-amz-decoded-content-length HTTP header.');
    if (r.req.headers['transfer-encoding']) throw new S3Error('MissingContentLength', 'You must provide the Content-Length HTTP header.');
    return 0;
  }
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 0) throw new S3Error('InvalidArgument', 'The Content-Length is not a valid number');
  return n;
}

/**
 * The body as the object's bytes. With aws-chunked the decoder checks each chunk's
 * signature; the caller checks the size and, for a hex payload hash, the SHA-256.
 */
export function bodyStream(r: S3Request, decodedLength: number): { stream: Readable; decoder: AwsChunkedDecoder | null } {
  if (r.auth && isStreamingMode(r.auth.payloadHash)) {
    const decoder = new AwsChunkedDecoder(r.auth, decodedLength);
    r.req.on('error', (err) => decoder.destroy(err));
    r.req.on('close', () => {
      if (!r.req.complete) decoder.destroy(new S3Error('IncompleteBody', 'The request body ended before its declared length'));
    });
    r.req.pipe(decoder);
    return { stream: decoder, decoder };
  }
  return { stream: r.req, decoder: null };
}

/** Whether the body's SHA-256 must be computed and compared (a hex x-amz-content-sha256). */
export function payloadHashToCheck(r: S3Request): string | undefined {
  const h = r.auth?.payloadHash;
  return h && /^[0-9a-f]{64}$/.test(h) ? h : undefined;
}

/** Whether the client sends a CRC-32 to check (as a header, or announced as a trailer): only then is one computed. */
export function crc32Announced(r: S3Request): boolean {
  const trailer = (r.req.headers['x-amz-trailer'] as string | undefined) ?? '';
  return r.req.headers['x-amz-checksum-crc32'] !== undefined || trailer.split(',').some((t) => t.trim().toLowerCase() === 'x-amz-checksum-crc32');
}

/** A small body (XML), decoded and checked against its signed hash. */
export async function readSmallBody(r: S3Request): Promise<Buffer> {
  const length = declaredLength(r);
  if (length > MAX_XML_BYTES) throw new S3Error('EntityTooLarge', 'The XML body is too large');
  const { stream } = bodyStream(r, length);
  const parts: Buffer[] = [];
  let n = 0;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      n += chunk.length;
      if (n > MAX_XML_BYTES) throw new S3Error('EntityTooLarge', 'The XML body is too large');
      parts.push(chunk);
    }
  } catch (err) {
    if (err instanceof S3Error) throw err;
    throw new S3Error('IncompleteBody', 'The request body ended before its declared length');
  }
  const body = Buffer.concat(parts);
  if (!r.req.complete) throw new S3Error('IncompleteBody', 'The request body ended before its declared length');
  const want = payloadHashToCheck(r);
  if (want && sha256Hex(body) !== want)
    throw new S3Error('XAmzContentSHA256Mismatch', "The provided 'x-amz-content-sha256' header does not match what was computed.");
  return body;
}

export function sendXml(r: S3Request, status: number, root: string, body: XmlObject, headers: Record<string, string> = {}): void {
  const text = Buffer.from(xmlDoc(root, body));
  r.res.writeHead(status, { ...headers, 'Content-Type': 'application/xml', 'Content-Length': String(text.length) });
  r.res.end(r.method === 'HEAD' ? undefined : text);
}

export function sendEmpty(r: S3Request, status: number, headers: Record<string, string> = {}): void {
  r.res.writeHead(status, { ...headers, 'Content-Length': '0' });
  r.res.end();
}

/** S3's time in XML (ISO 8601 with milliseconds). */
export function xmlTime(ms: number): string {
  return new Date(ms).toISOString();
}

/** S3's time in headers (RFC 7231). */
export function httpTime(ms: number): string {
  return new Date(ms).toUTCString();
}
