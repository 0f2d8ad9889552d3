/**
 * The recorder's error taxonomy. Every error that leaves a module edge (HTTP, NATS,
 * CLI) is a RecorderError with a stable UPPER_SNAKE `code` that clients may rely on
 * (docs/api/errors.md) and an HTTP status the API maps it to. Map once, at the edge.
 */
import { redactText } from './redact.ts';

export type ErrorCode =
  | 'VALIDATION_FAILED'
  | 'BAD_JSON'
  | 'BAD_TIME'
  | 'BAD_RANGE'
  | 'CAMERA_NOT_FOUND'
  | 'NOT_FOUND'
  | 'UNAUTHORIZED'
  | 'FORBIDDEN'
  | 'PAYLOAD_TOO_LARGE'
  | 'NO_VIDEO'
  | 'MEDIA_UNSUPPORTED'
  | 'NO_SMART_DATA'
  | 'SMART_PACKET_INVALID'
  | 'RANGE_NOT_SATISFIABLE'
  | 'SEGMENT_GONE'
  | 'CONFIG_INVALID'
  | 'INDEX_SCHEMA_MISMATCH'
  | 'INDEX_CORRUPT'
  | 'INDEX_LOST'
  | 'STORAGE_IO'
  | 'INGEST_FAILED'
  | 'NATS_START_FAILED'
  | 'POOL_NOT_FOUND'
  | 'LOCK_NOT_FOUND'
  | 'LABEL_NOT_FOUND'
  | 'LOCK_SHARE_EXCEEDED'
  | 'POOL_IN_USE'
  | 'EDGE_NOT_CONFIGURED'
  | 'EDGE_REFUSED'
  | 'EDGE_UNREACHABLE'
  | 'EDGE_WRONG_INTERVAL'
  | 'EDGE_OVERRUN'
  | 'EDGE_TIMEOUT'
  | 'EDGE_NO_VIDEO'
  | 'TOO_MANY_STREAMS'
  | 'URL_TOO_LONG'
  | 'DATA_DIR_LOCKED'
  | 'FRAMES_BUSY'
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'SHUTTING_DOWN'
  | 'PICTURE_INVALID'
  | 'PICTURE_NOT_FOUND'
  | 'CLUSTER_UNAVAILABLE'
  | 'SECRET_UNREADABLE'
  | 'CAMERA_FENCED'
  | 'S3_UNAVAILABLE'
  | 'INTERNAL';

const STATUS: Record<ErrorCode, number> = {
  VALIDATION_FAILED: 400,
  BAD_JSON: 400,
  BAD_TIME: 400,
  BAD_RANGE: 400,
  CAMERA_NOT_FOUND: 404,
  NOT_FOUND: 404,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  PAYLOAD_TOO_LARGE: 413,
  NO_VIDEO: 404,
  // A recording whose codec the asked-for container cannot carry (e.g. video.ps of a non-H.264/H.265 track).
  MEDIA_UNSUPPORTED: 422,
  NO_SMART_DATA: 404,
  // A camera's smart-stream packet that cannot be read; counted and skipped at ingest.
  SMART_PACKET_INVALID: 422,
  RANGE_NOT_SATISFIABLE: 416,
  // A segment file vanished (retention) between the index lookup and the read.
  SEGMENT_GONE: 410,
  CONFIG_INVALID: 500,
  INDEX_SCHEMA_MISMATCH: 500,
  // The index file fails its check before it is opened (index/integrity.ts): exit 3.
  INDEX_CORRUPT: 500,
  // The index is not the one the config journal describes, or lost its users (index/journal.ts): exit 3.
  INDEX_LOST: 500,
  STORAGE_IO: 500,
  INGEST_FAILED: 502,
  NATS_START_FAILED: 500,
  POOL_NOT_FOUND: 404,
  LOCK_NOT_FOUND: 404,
  LABEL_NOT_FOUND: 404,
  LOCK_SHARE_EXCEEDED: 409,
  POOL_IN_USE: 409,
  // Back-fill from a camera's edge storage (docs/design/backfill.md).
  EDGE_NOT_CONFIGURED: 409,
  EDGE_REFUSED: 502,
  EDGE_UNREACHABLE: 504,
  EDGE_WRONG_INTERVAL: 502,
  EDGE_OVERRUN: 502,
  EDGE_TIMEOUT: 504,
  EDGE_NO_VIDEO: 404,
  // Every media stream slot is taken (api/stream-limit.ts); Retry-After says when to try again.
  TOO_MANY_STREAMS: 503,
  // A path parameter over the router's limit (100 characters): 414 before any route runs.
  URL_TOO_LONG: 414,
  // Another recorder runs on the data dir (lib/data-dir-lock.ts).
  DATA_DIR_LOCKED: 409,
  // Too many frame decodes waiting (ffmpeg/ffmpeg-frame.ts); Retry-After says when to try again.
  FRAMES_BUSY: 503,
  // A request body in a content type the route does not read (JSON only).
  UNSUPPORTED_MEDIA_TYPE: 415,
  // The recorder is stopping (lib/lifecycle.ts): the request started nothing; ask another node or again later.
  SHUTTING_DOWN: 503,
  // A picture body that is not a whole JPEG (pictures/jpeg.ts): nothing is stored.
  PICTURE_INVALID: 422,
  // No picture under that id (never stored, or covered by retention).
  PICTURE_NOT_FOUND: 404,
  // A cluster config write the replicated KV did not confirm (quorum lost, leader election): recording goes on (cluster/cluster.ts).
  CLUSTER_UNAVAILABLE: 503,
  SECRET_UNREADABLE: 500,
  // A write of a camera that another cluster node holds now: this node stops recording it (cluster/cluster.ts).
  CAMERA_FENCED: 409,
  // A presigned S3 URL cannot be made: the S3 listener is off, or the user has no access key (buckets/presign.ts).
  S3_UNAVAILABLE: 409,
  INTERNAL: 500,
};

/** Whether `code` is one of ours (an error a peer node sent back keeps its code). */
export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(STATUS, code);
}

export class RecorderError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: unknown;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; details?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'RecorderError';
    this.code = code;
    this.status = STATUS[code];
    this.details = options?.details;
  }
}

export class ValidationError extends RecorderError {
  constructor(message: string, details?: unknown) {
    super('VALIDATION_FAILED', message, { details });
    this.name = 'ValidationError';
  }
}

export class CameraNotFoundError extends RecorderError {
  constructor(readonly cameraId: string) {
    super('CAMERA_NOT_FOUND', `unknown camera ${JSON.stringify(cameraId)}`);
    this.name = 'CameraNotFoundError';
  }
}

export class BadTimeError extends RecorderError {
  constructor(message: string) {
    super('BAD_TIME', message);
    this.name = 'BadTimeError';
  }
}

export class NoVideoError extends RecorderError {
  constructor(message: string) {
    super('NO_VIDEO', message);
    this.name = 'NoVideoError';
  }
}

/** Wraps anything thrown into a RecorderError so edges can map it uniformly. */
export function toRecorderError(err: unknown): RecorderError {
  if (err instanceof RecorderError) return err;
  // lmdb-js's failed commit (index/commit-guard.ts): a full disk, not a bug of ours.
  if (err instanceof Error && err.message.startsWith('Commit failed') && 'commitError' in err) {
    return new RecorderError('STORAGE_IO', 'index commit failed (the disk may be full)', { cause: err, details: { index: true } });
  }
  const message = err instanceof Error ? err.message : String(err);
  return new RecorderError('INTERNAL', message, { cause: err });
}

/** The wire shape of an error; a URL's password in its message never leaves (ffmpeg quotes camera URLs). */
export function errorBody(err: RecorderError): { code: ErrorCode; message: string } {
  return { code: err.code, message: redactText(err.message) };
}
