/**
 * The `aws-chunked` content encoding the AWS SDK and CLI use for uploads:
 *
 *   <hex size>[;chunk-signature=<sig>]\r\n<bytes>\r\n … 0[;chunk-signature=<sig>]\r\n
 *   [<trailer>:<value>\r\n … [x-amz-trailer-signature:<sig>\r\n]]\r\n
 *
 * Modes (x-amz-content-sha256): STREAMING-AWS4-HMAC-SHA256-PAYLOAD (each chunk signed,
 * chained from the header's signature), …-PAYLOAD-TRAILER (the same plus a signed
 * trailer), STREAMING-UNSIGNED-PAYLOAD-TRAILER (no chunk signatures, a trailer with a
 * checksum). The decoder passes the bytes on as they come; a chunk whose signature does
 * not match fails the stream (SignatureDoesNotMatch) before the object is committed, so
 * nothing a wrong signature carried is ever stored. Sizes are checked against
 * x-amz-decoded-content-length at the end (IncompleteBody).
 */
import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { S3Error } from './s3-errors.ts';
import { chunkStringToSign, sameSignature, sha256Hex, sign, trailerStringToSign, type Verified } from './sigv4.ts';

export const STREAMING_SIGNED = 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD';
export const STREAMING_SIGNED_TRAILER = 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER';
export const STREAMING_UNSIGNED_TRAILER = 'STREAMING-UNSIGNED-PAYLOAD-TRAILER';

export function isStreamingMode(payloadHash: string): boolean {
  return payloadHash === STREAMING_SIGNED || payloadHash === STREAMING_SIGNED_TRAILER || payloadHash === STREAMING_UNSIGNED_TRAILER;
}

/** Longest chunk header or trailer line accepted. */
const MAX_LINE = 4096;

type State = 'header' | 'data' | 'data-crlf' | 'trailer' | 'done';

export class AwsChunkedDecoder extends Transform {
  /** Trailer headers by lower-case name (x-amz-checksum-crc32 …), once the stream ended. */
  readonly trailers = new Map<string, string>();
  decodedBytes = 0;
  private state: State = 'header';
  private line = Buffer.alloc(0);
  private remaining = 0;
  private chunkSig = '';
  private hash: Hash | null = null;
  private previous: string;
  private readonly signed: boolean;
  private readonly trailerLines: string[] = [];

  constructor(
    private readonly auth: Verified,
    private readonly decodedLength: number,
  ) {
    super();
    this.signed = auth.payloadHash !== STREAMING_UNSIGNED_TRAILER;
    this.previous = auth.seedSignature;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    try {
      this.consume(chunk);
      done();
    } catch (err) {
      done(err as Error);
    }
  }

  override _flush(done: TransformCallback): void {
    if (this.state !== 'done') return done(new S3Error('IncompleteBody', 'The request body ended inside an aws-chunked chunk'));
    if (this.decodedBytes !== this.decodedLength) {
      return done(new S3Error('IncompleteBody', `You did not provide the number of bytes specified by x-amz-decoded-content-length (${this.decodedLength})`));
    }
    done();
  }

  private consume(buf: Buffer): void {
    let at = 0;
    while (at < buf.length) {
      if (this.state === 'data') {
        const n = Math.min(this.remaining, buf.length - at);
        const part = buf.subarray(at, at + n);
        this.hash?.update(part);
        this.decodedBytes += n;
        if (this.decodedBytes > this.decodedLength)
          throw new S3Error('IncompleteBody', 'The aws-chunked body holds more bytes than x-amz-decoded-content-length');
        this.push(part);
        this.remaining -= n;
        at += n;
        if (this.remaining === 0) this.endChunk();
        continue;
      }
      if (this.state === 'done') throw new S3Error('InvalidRequest', 'bytes after the end of the aws-chunked body');
      // A line (header, CRLF after data, trailer).
      const nl = buf.indexOf(0x0a, at);
      const end = nl < 0 ? buf.length : nl + 1;
      this.line = Buffer.concat([this.line, buf.subarray(at, end)]);
      at = end;
      if (this.line.length > MAX_LINE) throw new S3Error('InvalidRequest', 'aws-chunked line too long');
      if (nl < 0) continue;
      const text = this.line.toString('latin1').replace(/\r?\n$/, '');
      this.line = Buffer.alloc(0);
      this.onLine(text);
    }
  }

  private onLine(text: string): void {
    if (this.state === 'data-crlf') {
      if (text !== '') throw new S3Error('InvalidRequest', 'aws-chunked chunk not followed by CRLF');
      this.state = 'header';
      return;
    }
    if (this.state === 'header') {
      const m = /^([0-9a-fA-F]{1,16})(?:;chunk-signature=([0-9a-f]{64}))?$/.exec(text);
      if (!m) throw new S3Error('InvalidRequest', 'malformed aws-chunked chunk header');
      if (this.signed && !m[2]) throw new S3Error('SignatureDoesNotMatch', 'aws-chunked chunk without a chunk-signature');
      this.remaining = parseInt(m[1]!, 16);
      this.chunkSig = m[2] ?? '';
      this.hash = this.signed ? createHash('sha256') : null;
      if (this.remaining === 0) {
        this.endChunk();
        return;
      }
      this.state = 'data';
      return;
    }
    // Trailer lines, then an empty line.
    if (text === '') {
      this.finishTrailer();
      return;
    }
    this.trailerLines.push(text);
  }

  private endChunk(): void {
    const last = this.state === 'header';
    if (this.signed) {
      const digest = this.hash ? this.hash.digest('hex') : sha256Hex('');
      const expected = sign(this.auth.signingKey, chunkStringToSign(this.auth, this.previous, digest));
      if (!sameSignature(expected, this.chunkSig)) throw new S3Error('SignatureDoesNotMatch', 'The chunk signature does not match');
      this.previous = expected;
    }
    this.hash = null;
    this.state = last ? 'trailer' : 'data-crlf';
  }

  private finishTrailer(): void {
    let trailerSig: string | undefined;
    const signedPart: string[] = [];
    for (const l of this.trailerLines) {
      const c = l.indexOf(':');
      if (c <= 0) throw new S3Error('InvalidRequest', 'malformed aws-chunked trailer');
      const name = l.slice(0, c).trim().toLowerCase();
      const value = l.slice(c + 1).trim();
      if (name === 'x-amz-trailer-signature') trailerSig = value;
      else {
        this.trailers.set(name, value);
        signedPart.push(`${name}:${value}\n`);
      }
    }
    if (this.auth.payloadHash === STREAMING_SIGNED_TRAILER && this.trailers.size > 0) {
      const expected = sign(this.auth.signingKey, trailerStringToSign(this.auth, this.previous, sha256Hex(signedPart.join(''))));
      if (!trailerSig || !sameSignature(expected, trailerSig)) throw new S3Error('SignatureDoesNotMatch', 'The trailer signature does not match');
    }
    this.state = 'done';
  }
}
