/**
 * WS /api/cameras/:id/live[?preview=1] — live video of a camera from its running
 * ingest (no second RTSP session), as fragmented MP4 for an MSE player.
 *
 * Server → client:
 * - text `{"type":"init","mimeType":…,"preview":bool,"width":…,"height":…}`, then one
 *   binary message with the init segment (ftyp+moov). Sent on connect when the
 *   ingest runs, and again whenever a new ingest attempt or a codec change starts.
 * - binary messages: one fragment (moof+mdat, one GOP) each; the first after an init
 *   starts with a keyframe.
 * - text `{"type":"waiting","state":…}` on connect when the camera is not ingesting
 *   (stopped by its plan, in backoff): the init follows once it runs.
 * - text `{"type":"ended","reason":…}` when the ingest attempt ends.
 * - text `{"type":"closed","reason":…}` then close 1001 when the camera is removed or
 *   the node stops.
 * A viewer that reads too slowly skips ahead: its backlog (bounded) is dropped up to
 * the next keyframe (live/live-fanout.ts), so fragments may be missing, never late
 * without bound. `preview=1` gives a 240-line H.264 transcode (for H.265 cameras in
 * a browser without HEVC) made by one ffmpeg per camera while it has viewers.
 *
 * In a cluster a viewer of a camera another node records is relayed to that node
 * (api/live-relay.ts).
 *
 * Auth: browsers cannot set headers on a WebSocket, so besides `Authorization` the
 * token may come as a subprotocol `bearer.<base64url(token)>` next to `recorder.v1`
 * (checked by the auth seam, security/http-auth.ts); the server answers `recorder.v1`,
 * never the protocol carrying the token.
 */
import type { FastifyInstance } from 'fastify';
import type { WebSocket } from 'ws';
import type {} from '@fastify/websocket'; // route option types (wsHandler)
import { ValidationError } from '../lib/errors.ts';
import type { LiveMessage } from '../live/live-fanout.ts';
import type { HttpDeps } from './http-deps.ts';
import { relayLive, relayed } from './live-relay.ts';

const BEARER_PREFIX = 'bearer.';

/** Chooses the subprotocol to answer: never the one carrying the token. */
export function selectWsProtocol(protocols: Set<string>): string | false {
  for (const p of protocols) if (!p.startsWith(BEARER_PREFIX)) return p;
  return false;
}

function parsePreview(v: string | undefined): boolean {
  if (v === undefined || v === '0' || v === 'false') return false;
  if (v === '1' || v === 'true') return true;
  throw new ValidationError(`preview must be 1 or 0, got ${JSON.stringify(v)}`);
}

export function registerLive(app: FastifyInstance, deps: HttpDeps): void {
  app.route<{ Params: { id: string }; Querystring: { preview?: string } }>({
    method: 'GET',
    url: '/api/cameras/:id/live',
    // Runs before the upgrade: bad input gets a plain HTTP error, not a dead socket.
    preValidation: async (req) => {
      deps.service.requireConfiguredCamera(req.params.id);
      parsePreview(req.query.preview);
    },
    handler: async () => {
      throw new ValidationError('this endpoint speaks WebSocket only: connect with Upgrade: websocket');
    },
    wsHandler: (socket: WebSocket, req) => {
      const cameraId = req.params.id;
      // In a cluster, a camera another node records: relayed from its owner.
      const owner = relayed(req) ? null : deps.service.liveSource(cameraId);
      if (owner) return relayLive(socket, req, owner, deps.log.child({ camera: cameraId }));
      const preview = parsePreview(req.query.preview);
      const log = deps.log.child({ camera: cameraId, live: preview ? 'preview' : 'direct' });
      const send = (data: string | Buffer, done?: () => void): void => {
        if (socket.readyState !== socket.OPEN) {
          done?.();
          return;
        }
        // The callback fires once ws has written the bytes to the socket: until then
        // this viewer has one message in flight and its queue absorbs (or drops) the rest.
        socket.send(data, { binary: typeof data !== 'string' }, () => done?.());
      };
      const state = deps.service.liveState(cameraId);
      if (!state.mimeType || preview) send(JSON.stringify({ type: 'waiting', camera: cameraId, state: state.status, preview }));
      const viewer = deps.service.subscribeLive(
        cameraId,
        {
          deliver(msg: LiveMessage, done: () => void) {
            switch (msg.kind) {
              case 'init': {
                const video = msg.info.tracks.find((t) => t.kind === 'video');
                send(
                  JSON.stringify({
                    type: 'init',
                    camera: cameraId,
                    preview,
                    mimeType: msg.info.mimeType,
                    width: video?.width ?? null,
                    height: video?.height ?? null,
                  }),
                );
                send(msg.bytes, done);
                return;
              }
              case 'fragment':
                send(msg.bytes, done);
                return;
              case 'ended':
                send(JSON.stringify({ type: 'ended', reason: msg.reason }), done);
                return;
              case 'closed':
                send(JSON.stringify({ type: 'closed', reason: msg.reason }), () => {
                  done();
                  socket.close(1001, 'camera gone');
                });
                return;
            }
          },
        },
        { preview },
      );
      log.debug('live viewer joined');
      socket.on('close', () => {
        viewer.close();
        log.debug({ stats: viewer.stats() }, 'live viewer left');
      });
      // Viewers have nothing to say; anything they send is ignored.
      socket.on('message', () => undefined);
    },
  });
}
