/**
 * What the HTTP routes are given by the composition root. Its own module so that
 * http.ts (which registers the routes) and the route files (which use it) do not
 * import each other.
 */
import type { RecorderIndex } from '../index/db.ts';
import type { Logger } from '../lib/log.ts';
import type { RecorderMetrics } from '../ops/metrics.ts';
import type { ReadCaches } from '../playback/read-caches.ts';
import type { FrameGrabber } from '../playback/frame-grab.ts';
import type { UserStore } from '../security/users.ts';
import type { RecorderService } from '../services/recorder-service.ts';
import type { S3Keys } from '../buckets/keys.ts';
import type { S3Presigner } from '../buckets/presign.ts';

export interface HttpDeps {
  service: RecorderService;
  index: RecorderIndex;
  dataDir: string;
  log: Logger;
  authToken?: string | undefined;
  ffmpegPath: string;
  users: UserStore;
  /** auth=required: credentials even before any token or user exists. */
  authRequired: boolean;
  metrics: RecorderMetrics;
  /** Media streams served at once (RECORDER_MAX_STREAMS, api/stream-limit.ts); default 500. */
  maxStreams?: number;
  /** The node's read caches (sample tables, PS views, progressive heads, frames: playback/read-caches.ts). */
  caches: ReadCaches;
  /** The node's frame decodes (playback/frame-grab.ts), shared with picture snapshots; absent: the routes make their own. */
  frames?: FrameGrabber;
  /** In a cluster: the token peers show to pull segment copies (cluster/copies.ts); null or absent: not in one. */
  clusterToken?: () => string | null;
  /** The node's shutdown signal (lib/lifecycle.ts): once aborted every request is answered 503 SHUTTING_DOWN. */
  signal?: AbortSignal;
  /** Presigned S3 URLs for the web UI's buckets page (buckets/presign.ts); absent: answered S3_UNAVAILABLE. */
  s3Presigner?: S3Presigner;
  /** In a cluster: the path of an S3 object file this node holds (a peer pulls or reads it); null: not here. */
  objectFile?: (bucket: string, fileId: string) => string | null;
  /** Users' S3 access keys (buckets/keys.ts); absent: the key routes are not served. */
  s3Keys?: S3Keys;
}
