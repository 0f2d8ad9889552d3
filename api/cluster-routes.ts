/**
 * The cluster over HTTP (docs/cluster.md "Any node answers"): `GET /api/cluster/nodes`,
 * and media requests proxied to the node that holds the video. A request for a
 * camera's range that this node has less of than another holder (a camera that moved,
 * a node that answers for another: a load balancer, a virtual IP) is passed to that
 * node's HTTP with its Range and credentials, and its answer streamed back unchanged
 * (status, length, ranges, ETag): the client sees one file. A proxied request carries
 * `X-Recorder-Proxied` and is never proxied again.
 *
 * What is proxied: `video.mp4`, `video.ps`, `/play` and the HLS playlist `video.m3u8` of
 * a range another node holds all of (a range split between nodes is pulled here and
 * served as one; the choice: services/media-source.ts), and an HLS segment file this
 * node does not have (the playlist's URIs are relative, so they come here).
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { BACKUP_GRANT_HEADER, backupGrant, CLUSTER_TOKEN_HEADER, picturePackAllowed, recordToWire } from '../cluster/copies.ts';
import type { SegmentRecord } from '../index/records.ts';
import { encodePackRange } from '../pictures/copy-pack.ts';
import { parseRangeMs } from '../lib/time.ts';
import { RecorderError, ValidationError } from '../lib/errors.ts';
import { access } from '../security/http-auth.ts';
import { secretEquals } from '../security/passwords.ts';
import { ID_PATTERN } from '../storage/layout.ts';
import type { HttpDeps } from './http-deps.ts';

const PROXIED = new Set(['/api/cameras/:id/video.mp4', '/api/cameras/:id/video.ps', '/api/cameras/:id/play', '/api/cameras/:id/video.m3u8']);
/** An HLS playlist's media (its URIs are relative: they come to the node that answered the playlist). */
const SEGMENT_FILE = '/api/cameras/:id/segments/:file';
/** A picture by URL and its lock: answered by the node that stores it. */
const PICTURE_ROUTES = new Set(['/api/pictures/:id', '/api/pictures/:id/lock']);
const MARK = 'x-recorder-proxied';
const FORWARD_REQUEST = ['range', 'if-range', 'authorization', 'cookie', 'accept'];
const FORWARD_REPLY = [
  'content-type',
  'content-length',
  'content-range',
  'accept-ranges',
  'etag',
  'last-modified',
  'content-disposition',
  'cache-control',
  'x-recording-from',
  'x-recording-to',
];

export function registerCluster(app: FastifyInstance, deps: HttpDeps): void {
  app.get('/api/cluster/nodes', access('read'), async () => deps.service.clusterNodes());
  app.post('/api/cluster/drain', access('admin'), async (req) => deps.service.clusterDrain(req.body ?? {}));

  // A peer pulling a copy (cluster/copies.ts): the closed segment's record, then its bytes.
  // Public to the user seam: the cluster token is the credential, checked here.
  app.get('/api/cluster/segments/:camera/:startMs', access('public'), async (req) => ({
    segment: recordToWire(peerSegment(deps, req)),
  }));
  app.get('/api/cluster/segments/:camera/:startMs/file', access('public'), async (req, reply) => {
    const seg = peerSegment(deps, req);
    const range = req.headers.range;
    let start = 0;
    if (range !== undefined) {
      const m = /^bytes=(\d+)-$/.exec(range);
      if (!m || Number(m[1]) >= seg.bytes) {
        void reply.header('content-range', `bytes */${seg.bytes}`);
        throw new RecorderError('RANGE_NOT_SATISFIABLE', `range ${range} of a ${seg.bytes}-byte segment (only bytes=N- is served here)`);
      }
      start = Number(m[1]);
      void reply.code(206).header('content-range', `bytes ${start}-${seg.bytes - 1}/${seg.bytes}`);
    }
    // Exactly the bytes the record covers: a file the writer still appends to is never this one (closed only).
    return reply
      .header('content-type', 'application/octet-stream')
      .header('content-length', String(seg.bytes - start))
      .header('accept-ranges', 'bytes')
      .send(createReadStream(join(deps.dataDir, seg.file), { start, end: seg.bytes - 1 }));
  });

  // A peer building a batch download of pictures some of which are here (services/cluster-pictures.ts):
  // the picture's bytes, original or the preview its query asks for. The cluster token is the credential.
  app.get<{ Params: { id: string }; Querystring: Record<string, string | undefined> }>('/api/cluster/pictures/:id', access('public'), async (req, reply) => {
    const expected = deps.clusterToken?.() ?? null;
    const given = req.headers[CLUSTER_TOKEN_HEADER];
    if (expected === null || typeof given !== 'string' || !secretEquals(given, expected)) {
      throw new RecorderError('UNAUTHORIZED', 'a cluster peer request needs the cluster token');
    }
    const { bytes, etag } = await deps.service.pictures.read(req.params.id, req.query);
    return reply.header('content-type', 'image/jpeg').header('etag', etag).send(bytes);
  });

  // A peer copying an S3 object file or reading its bytes (cluster/object-copies.ts): the
  // file as it is on disk (bytes, then the footer), a single byte range when asked.
  app.get<{ Params: { bucket: string; fileId: string } }>('/api/cluster/objects/:bucket/:fileId', access('public'), async (req, reply) => {
    const expected = deps.clusterToken?.() ?? null;
    const given = req.headers[CLUSTER_TOKEN_HEADER];
    if (expected === null || typeof given !== 'string' || !secretEquals(given, expected)) {
      throw new RecorderError('UNAUTHORIZED', 'a cluster peer request needs the cluster token');
    }
    const { bucket, fileId } = req.params;
    if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket) || !/^[0-9a-f]{24}$/.test(fileId))
      throw new ValidationError('a bucket name and an object file id expected');
    const path = deps.objectFile?.(bucket, fileId) ?? null;
    if (path === null) throw new RecorderError('NOT_FOUND', `object file ${bucket}/${fileId} is not on this node`);
    const size = (await stat(path)).size;
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    const start = m ? Number(m[1]) : 0;
    const end = m && m[2] ? Math.min(Number(m[2]), size - 1) : size - 1;
    if (start > end) throw new RecorderError('RANGE_NOT_SATISFIABLE', `bytes ${start}-${end} of a ${size}-byte file`);
    if (m) reply.code(206).header('content-range', `bytes ${start}-${end}/${size}`);
    return reply
      .header('content-type', 'application/octet-stream')
      .header('content-length', String(end - start + 1))
      .send(createReadStream(path, { start, end }));
  });

  // A peer copying pictures (cluster/picture-copies.ts): a byte range of a pack this node
  // holds (its own, or its copy of another's), in the offsets of the node that wrote it.
  // A backup cluster's node (cluster/picture-backup.ts) shows the grant for this one pack instead.
  app.get<{ Params: { origin: string; pack: string }; Querystring: { from?: string } }>(
    '/api/cluster/picture-packs/:origin/:pack',
    access('public'),
    async (req, reply) => {
      const { origin, pack } = req.params;
      const allowed = picturePackAllowed(
        deps.clusterToken?.() ?? null,
        req.headers[CLUSTER_TOKEN_HEADER],
        req.headers[BACKUP_GRANT_HEADER],
        origin,
        Number(pack),
      );
      if (!allowed) throw new RecorderError('UNAUTHORIZED', 'a cluster peer request needs the cluster token (or a backup grant for this pack)');
      const from = req.query.from ?? '0';
      if (!/^[A-Za-z0-9._-]{1,128}$/.test(origin) || !/^[1-9]\d{0,14}$/.test(pack) || !/^\d{1,15}$/.test(from)) {
        throw new ValidationError('a node id, a pack id and from (an offset) expected');
      }
      const range = await deps.service.picturePackRange(origin, Number(pack), Number(from));
      return reply.header('content-type', 'application/octet-stream').send(encodePackRange(range));
    },
  );

  // After the auth seam (its preHandler was added first): only an allowed request is passed on.
  app.addHook('preHandler', async (req: FastifyRequest, reply: FastifyReply) => {
    const route = req.routeOptions.url ?? '';
    if (req.headers[MARK] !== undefined) return;
    if (PICTURE_ROUTES.has(route)) {
      // A picture (its preview, its lock) this node does not store: the node that does answers.
      const holder = await deps.service.pictureSource((req.params as { id?: string }).id ?? '');
      return holder ? passOn(req, reply, holder, deps) : undefined;
    }
    if (!PROXIED.has(route) && route !== SEGMENT_FILE) return;
    const camera = (req.params as { id?: string }).id;
    if (!camera) return;
    let range: { fromMs: number; toMs: number };
    if (route === SEGMENT_FILE) {
      // A segment file this node does not have: served by a holder that has it.
      const m = /^(\d{10,15})\.mp4$/.exec((req.params as { file?: string }).file ?? '');
      if (!m || deps.index.segments.get(camera, Number(m[1]))) return;
      range = { fromMs: Number(m[1]), toMs: Number(m[1]) + 1 };
    } else {
      const query = req.query as { from?: string; to?: string };
      if (query.from === undefined || query.to === undefined) return;
      try {
        range = parseRangeMs(query.from, query.to);
      } catch {
        return; // the route answers its own BAD_TIME
      }
    }
    const source = await deps.service.mediaSource(camera, range.fromMs, range.toMs);
    if (!source) return;
    return passOn(req, reply, source, deps);
  });
}

/** The closed segment a peer asks for, after its cluster token is checked. */
function peerSegment(deps: HttpDeps, req: FastifyRequest): SegmentRecord {
  const expected = deps.clusterToken?.() ?? null;
  if (expected === null) throw new RecorderError('NOT_FOUND', 'this node is not in a cluster');
  const { camera, startMs } = req.params as { camera: string; startMs: string };
  // A peer shows the cluster token; a backup cluster's node the grant for this one segment.
  const given = req.headers[CLUSTER_TOKEN_HEADER];
  const grant = req.headers[BACKUP_GRANT_HEADER];
  const allowed =
    (typeof given === 'string' && secretEquals(given, expected)) ||
    (typeof grant === 'string' && secretEquals(grant, backupGrant(expected, camera, Number(startMs))));
  if (!allowed) throw new RecorderError('UNAUTHORIZED', 'a cluster peer request needs the cluster token (or a backup grant for this segment)');
  if (!ID_PATTERN.test(camera) || !/^\d{1,15}$/.test(startMs)) throw new ValidationError('camera id and startMs (ms since the epoch) expected');
  const seg = deps.index.segments.get(camera, Number(startMs));
  if (!seg || seg.open) throw new RecorderError('NOT_FOUND', `no closed segment ${camera}/${startMs} on this node`);
  return seg;
}

/** Passes the request to `to` (its Range, credentials and a JSON body) and streams the answer back unchanged. */
async function passOn(req: FastifyRequest, reply: FastifyReply, source: { node: string; http: string }, deps: HttpDeps): Promise<FastifyReply> {
  const aborted = new AbortController();
  req.raw.once('close', () => aborted.abort());
  const headers: Record<string, string> = { [MARK]: '1' };
  for (const h of FORWARD_REQUEST) {
    const v = req.headers[h];
    if (typeof v === 'string') headers[h] = v;
  }
  let res: Response;
  try {
    // A lock's JSON body goes along (media and picture reads have none).
    const body = req.method !== 'GET' && req.method !== 'HEAD' && req.body !== undefined ? JSON.stringify(req.body) : undefined;
    if (body !== undefined) headers['content-type'] = 'application/json';
    res = await fetch(`${source.http}${req.url}`, { method: req.method, headers, signal: aborted.signal, ...(body !== undefined ? { body } : {}) });
  } catch (err) {
    throw new RecorderError('CLUSTER_UNAVAILABLE', `node ${source.node} holds this but did not answer (${(err as Error).message})`, { cause: err });
  }
  void reply.code(res.status).header('x-recorder-node', source.node);
  for (const h of FORWARD_REPLY) {
    const v = res.headers.get(h);
    if (v !== null) void reply.header(h, v);
  }
  deps.log.debug({ url: req.url, node: source.node, status: res.status }, 'request passed to the node that holds it');
  return reply.send(res.body ? Readable.fromWeb(res.body) : '');
}
