/**
 * HTTP routes of the smart stream (docs/api/http-smart.md):
 *   GET /api/cameras/:id/smart?from=&to=&class=&rule=&topic=&kind=&limit=   records
 *   GET /api/cameras/:id/smart/next?after=|before=&class=&rule=&topic=&kind= jump
 *   GET /api/cameras/:id/smart/stats                                        counters
 *   GET /api/cameras/:id/smart.bin?from=&to= (alias smart.raw)               raw stream
 * The raw download has an exact Content-Length, single byte Range (api/byte-ranges.ts), a strong ETag and If-Range, so a broken download resumes.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { iso } from '../lib/time.ts';
import { replyRange } from './byte-ranges.ts';
import type { HttpDeps } from './http-deps.ts';
import { attachmentDisposition } from '../security/headers.ts';

type Query = Record<string, string | undefined>;
type Req = FastifyRequest<{ Params: { id: string }; Querystring: Query }>;

// Route options read by the auth seam (security/http-auth.ts) where it is installed.
const readAccess = { config: { access: { action: 'read' as const, camera: 'params.id' as const } } };
const playAccess = { config: { access: { action: 'play' as const, camera: 'params.id' as const } } };

/**
 * Query strings arrive as strings; absent keys are dropped so the strict schemas see
 * only what was sent, and so is `access_token` (the auth seam's, for clients that
 * cannot set headers).
 */
function defined(q: Query): Record<string, string> {
  return Object.fromEntries(Object.entries(q).filter((e): e is [string, string] => e[1] !== undefined && e[0] !== 'access_token'));
}

export function registerSmart(app: FastifyInstance, deps: HttpDeps): void {
  const smart = (): HttpDeps['service']['smart'] => deps.service.smart;

  app.get('/api/cameras/:id/smart', readAccess, async (req: Req) => smart().search({ ...defined(req.query), camera: req.params.id }));
  app.get('/api/cameras/:id/smart/next', readAccess, async (req: Req) => smart().next({ ...defined(req.query), camera: req.params.id }));
  app.get('/api/cameras/:id/smart/stats', readAccess, async (req: Req) => ({ stats: smart().stats(req.params.id) }));

  const raw = async (req: Req, reply: FastifyReply): Promise<FastifyReply> => {
    const body = smart().raw(req.params.id, req.query.from, req.query.to);
    const name = `${req.params.id}_${iso(body.fromMs).replace(/[:.]/g, '-')}.smart`;
    void reply
      .header('Content-Type', 'application/octet-stream')
      .header('Content-Disposition', attachmentDisposition(name))
      .header('X-Recording-From', iso(body.fromMs))
      .header('X-Recording-To', iso(body.toMs));
    const range = replyRange(req, reply, body.contentLength, body.etag);
    return reply.send(body.stream(range.start, range.end));
  };
  app.get('/api/cameras/:id/smart.bin', playAccess, raw);
  app.get('/api/cameras/:id/smart.raw', playAccess, raw);
}
