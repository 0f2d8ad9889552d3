/**
 * Live view through a node that does not record the camera (docs/design/cluster.md "Any
 * node answers"): the viewer's WebSocket is relayed to the camera's owner's `/live`
 * (same path and query, the viewer's credentials and subprotocols, marked
 * `X-Recorder-Proxied` so it is never relayed again), and every message passed back as
 * it came (text or binary). Either side closing closes the other. A viewer too slow for
 * the stream (more than MAX_BUFFERED bytes waiting on its socket) is closed with 1013
 * "try again": the owner's fan-out bounds its own queues, this relay bounds its own.
 */
import type { FastifyRequest } from 'fastify';
import WebSocket from 'ws';
import type { Logger } from '../lib/log.ts';

const MARK = 'x-recorder-proxied';
const FORWARD = ['authorization', 'cookie'];
/** Bytes a slow viewer may have waiting before the relay gives up on it (a few GOPs of a 4 Mbit/s camera). */
const MAX_BUFFERED = 8 * 1024 * 1024;

/** Whether this request was already relayed by another node (it is then answered here, never relayed again). */
export function relayed(req: FastifyRequest): boolean {
  return req.headers[MARK] !== undefined;
}

/** A close code a server may send: the reserved ones (1005, 1006, 1015) become 1011 or 1000. */
function closeCode(code: number): number {
  if (code === 1005) return 1000;
  if (code === 1006 || code === 1015 || code < 1000 || code >= 5000) return 1011;
  return code;
}

export function relayLive(viewer: WebSocket, req: FastifyRequest, owner: { node: string; http: string }, log: Logger): void {
  const headers: Record<string, string> = { [MARK]: '1' };
  for (const h of FORWARD) {
    const v = req.headers[h];
    if (typeof v === 'string') headers[h] = v;
  }
  const protocols = (req.headers['sec-websocket-protocol'] ?? '')
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean);
  const url = `${owner.http.replace(/^http/, 'ws')}${req.url}`;
  const upstream = new WebSocket(url, protocols, { headers });
  const l = log.child({ relayTo: owner.node });
  upstream.on('message', (data, isBinary) => {
    if (viewer.readyState !== WebSocket.OPEN) return;
    if (viewer.bufferedAmount > MAX_BUFFERED) {
      l.warn({ buffered: viewer.bufferedAmount }, 'live relay: the viewer reads too slowly; closed');
      viewer.close(1013, 'viewer too slow');
      upstream.close();
      return;
    }
    viewer.send(data, { binary: isBinary });
  });
  upstream.on('close', (code, reason) => {
    if (viewer.readyState === WebSocket.OPEN) viewer.close(closeCode(code), reason.toString().slice(0, 120));
  });
  upstream.on('error', (err) => {
    l.warn({ err: err.message }, 'live relay: the camera’s owner did not answer');
    if (viewer.readyState === WebSocket.OPEN) {
      viewer.send(JSON.stringify({ type: 'closed', reason: `node ${owner.node} records this camera but did not answer` }));
      viewer.close(1011, 'owner unreachable');
    }
  });
  viewer.on('close', () => upstream.close());
  // Viewers have nothing to say; anything they send is ignored.
  viewer.on('message', () => undefined);
  l.debug('live viewer relayed to the camera’s owner');
}
