/**
 * The cluster over HTTP (docs/cluster.md "Any node answers"): `GET /api/cluster/nodes`,
 * and media requests proxied to the node that holds the video. A request for a
 * camera's range that this node has less of than another holder (a camera that moved,
 * a node that answers for another: a load balancer, a virtual IP) is passed to that
 * node's HTTP with its Range and credentials, and its answer streamed back unchanged
 * (status, length, ranges, ETag): the client sees one file. A proxied request carries
 * `X-Recorder-Proxied` and is never proxied again.
 *
 * What is proxied: `video.mp4`, `video.ps` and `/play` of a range held by one node. A
 * range split between nodes is served by the node with the most of it (what is left:
 * one file stitched from two nodes).
 */
import { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { parseRangeMs } from '../lib/time.ts';
import { RecorderError } from '../lib/errors.ts';
import { access } from '../security/http-auth.ts';
import type { HttpDeps } from './http-deps.ts';

const PROXIED = new Set(['/api/cameras/:id/video.mp4', '/api/cameras/:id/video.ps', '/api/cameras/:id/play']);
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

  // After the auth seam (its preHandler was added first): only an allowed request is passed on.
  app.addHook('preHandler', async (req: FastifyRequest, reply: FastifyReply) => {
    if (!PROXIED.has(req.routeOptions.url ?? '') || req.headers[MARK] !== undefined) return;
    const camera = (req.params as { id?: string }).id;
    const query = req.query as { from?: string; to?: string };
    if (!camera || query.from === undefined || query.to === undefined) return;
    let range: { fromMs: number; toMs: number };
    try {
      range = parseRangeMs(query.from, query.to);
    } catch {
      return; // the route answers its own BAD_TIME
    }
    const source = await deps.service.mediaSource(camera, range.fromMs, range.toMs);
    if (!source) return;
    const aborted = new AbortController();
    req.raw.once('close', () => aborted.abort());
    const headers: Record<string, string> = { [MARK]: '1' };
    for (const h of FORWARD_REQUEST) {
      const v = req.headers[h];
      if (typeof v === 'string') headers[h] = v;
    }
    let res: Response;
    try {
      res = await fetch(`${source.http}${req.url}`, { method: req.method, headers, signal: aborted.signal });
    } catch (err) {
      throw new RecorderError('CLUSTER_UNAVAILABLE', `node ${source.node} holds this video but did not answer (${(err as Error).message})`, { cause: err });
    }
    void reply.code(res.status).header('x-recorder-node', source.node);
    for (const h of FORWARD_REPLY) {
      const v = res.headers.get(h);
      if (v !== null) void reply.header(h, v);
    }
    deps.log.debug({ camera, node: source.node, status: res.status }, 'media request proxied to the holder');
    return reply.send(res.body ? Readable.fromWeb(res.body) : '');
  });
}
