/**
 * HTTP byte ranges (RFC 9110 §14) for every resumable body we serve (video.mp4,
 * video.ps, smart.bin, HLS segment files): one `bytes=` range per request, `If-Range`
 * against a strong ETag, 416 with an unsatisfied `Content-Range` (bytes, star, length) when it cannot be
 * satisfied, 400 BAD_RANGE for multi-range or malformed headers. One place, so every
 * download resumes the same way.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { RecorderError } from '../lib/errors.ts';

export interface ByteRange {
  start: number;
  /** Inclusive. */
  end: number;
}

/** Parses a single `bytes=` range against a body length; null means the whole body. */
export function parseByteRange(header: string | undefined, length: number): ByteRange | null {
  if (header === undefined) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) {
    throw new RecorderError('BAD_RANGE', `unsupported Range ${JSON.stringify(header)}: one bytes=start-end range is served`);
  }
  let start: number;
  let end: number;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) throw new RecorderError('RANGE_NOT_SATISFIABLE', 'empty suffix range');
    start = Math.max(0, length - suffix);
    end = length - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? length - 1 : Math.min(Number(m[2]), length - 1);
  }
  if (start >= length || end < start) throw new RecorderError('RANGE_NOT_SATISFIABLE', `range ${header} outside 0-${length - 1}`);
  return { start, end };
}

/**
 * The part of a `length`-byte body this request asks for, with the reply's status and
 * range headers set (206 + Content-Range for a range, 200 otherwise; Content-Length,
 * Accept-Ranges and the ETag either way). An `If-Range` that is not our ETag gets the
 * whole body, as RFC 9110 says. Throws BAD_RANGE / RANGE_NOT_SATISFIABLE (the latter
 * with the unsatisfied `Content-Range` already on the reply).
 */
export function replyRange(req: FastifyRequest, reply: FastifyReply, length: number, etag?: string): ByteRange {
  const ifRange = req.headers['if-range'];
  const applies = ifRange === undefined || (etag !== undefined && ifRange === etag);
  let range: ByteRange | null = null;
  try {
    range = applies ? parseByteRange(req.headers.range, length) : null;
  } catch (err) {
    if (err instanceof RecorderError && err.code === 'RANGE_NOT_SATISFIABLE') void reply.header('Content-Range', `bytes */${length}`);
    throw err;
  }
  void reply.header('Accept-Ranges', 'bytes');
  if (etag !== undefined) void reply.header('ETag', etag);
  if (range) {
    void reply
      .code(206)
      .header('Content-Range', `bytes ${range.start}-${range.end}/${length}`)
      .header('Content-Length', range.end - range.start + 1);
    return range;
  }
  void reply.header('Content-Length', length);
  return { start: 0, end: length - 1 };
}
