/**
 * The bound on media streams served at once (api/stream-limit.ts), through the real
 * HTTP server of a node recording a simulated camera: with RECORDER_MAX_STREAMS=2, two
 * WebSocket playback sessions left open hold both slots; a download, a /play and a
 * third session get 503 TOO_MANY_STREAMS with Retry-After, while search and metrics
 * still answer; closing one session frees its slot and the next download streams
 * whole. Metrics count the refusals. How the bad input is tried: a flood is modelled
 * by clients that hold their streams open and do nothing, as stuck players do.
 */
import test from 'ava';
import WebSocket from 'ws';
import { SimCamera } from '../sim/camera.ts';
import { startNode, waitFor } from './helpers/recorder.ts';

/** A WebSocket playback session that is opened and then left alone: it holds its slot until closed. */
async function openSession(url: string): Promise<WebSocket> {
  const ws = new WebSocket(url);
  await new Promise<void>((resolve, reject) => ws.once('open', () => resolve()).once('error', reject));
  return ws;
}

/** Status of a WebSocket upgrade: 101 when it opened, else the HTTP status it was refused with. */
function upgradeStatus(url: string): Promise<number> {
  const ws = new WebSocket(url);
  return new Promise<number>((resolve) => {
    ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
    ws.on('open', () => resolve(101));
    ws.on('error', () => undefined);
  }).finally(() => ws.terminate());
}

test('media streams past RECORDER_MAX_STREAMS get 503 TOO_MANY_STREAMS; metadata still answers; a freed slot is reused', async (t) => {
  const sim = await SimCamera.start({ width: 320, height: 240, bitrateKbit: 400 });
  t.teardown(() => sim.stop());
  const n = await startNode(t, { maxStreams: 2, segmentSeconds: 2 });
  t.true((await n.request('rec.v1.camera.put', { id: 'cam', streams: { main: sim.url('h264') } })).ok);
  const spans = await waitFor(
    '4 s recorded',
    async () => {
      const body = (await (await fetch(`${n.http}/api/recordings?camera=cam&from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z`)).json()) as {
        spans: { from: string; to: string }[];
      };
      // Any span: an attempt cut short leaves a short span before the one that grows.
      return body.spans.find((s) => Date.parse(s.to) - Date.parse(s.from) >= 4000) ?? null;
    },
    60_000,
  );
  const video = `${n.http}/api/cameras/cam/video.mp4?from=${spans.from}&to=${spans.to}`;

  const session = `${n.http.replace('http', 'ws')}/api/cameras/cam/playback`;
  const a = await openSession(session);
  const b = await openSession(session);
  t.teardown(() => (a.terminate(), b.terminate()));

  const refused = await fetch(video);
  t.is(refused.status, 503);
  t.is(refused.headers.get('retry-after'), '2');
  const body = (await refused.json()) as { error: { code: string; message: string } };
  t.is(body.error.code, 'TOO_MANY_STREAMS');
  t.regex(body.error.message, /2 media stream slots/);
  t.is((await fetch(`${n.http}/api/cameras/cam/play?from=${spans.from}`)).status, 503);
  t.is(await upgradeStatus(session), 503, 'a WebSocket session is a stream too');

  // Metadata is never limited.
  t.is((await fetch(`${n.http}/api/recordings?camera=cam&from=${spans.from}&to=${spans.to}`)).status, 200);
  const metrics = await (await fetch(`${n.http}/metrics`)).text();
  t.regex(metrics, /^recorder_media_streams 2$/m);
  t.regex(metrics, /^recorder_media_streams_max 2$/m);
  t.regex(metrics, /^recorder_media_streams_refused_total 3$/m);

  // A session ends: its slot comes back and the next download streams whole.
  a.close();
  const full = await waitFor(
    'a free slot',
    async () => {
      const res = await fetch(video);
      return res.status === 200 ? res : (await res.arrayBuffer(), null);
    },
    10_000,
    100,
  );
  const bytes = Buffer.from(await full.arrayBuffer());
  t.is(bytes.toString('latin1', 4, 8), 'ftyp');
  t.is(bytes.length, Number(full.headers.get('content-length')));
  b.close();
  await waitFor('all slots free', async () => /^recorder_media_streams 0$/m.test(await (await fetch(`${n.http}/metrics`)).text()), 10_000, 100);
});
