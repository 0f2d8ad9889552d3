/**
 * Live view (issue 4 item 8) through the real interface: a GStreamer RTSP camera, the
 * recorder's own ingest ffmpeg, real HTTP upgrade to WebSocket. The live stream is a
 * fan-out of the running ingest (no second RTSP session), recording goes on while
 * viewers watch, and a viewer that never reads keeps a bounded backlog.
 */
import test from 'ava';
import { createConnection, type Socket } from 'node:net';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import WebSocket from 'ws';
import { SimCamera } from '../sim/camera.ts';
import { Fmp4Splitter, type Fmp4Chunk } from '../media/mp4/fmp4-splitter.ts';
import { livePreviewCount } from '../live/live-preview.ts';
import type { LiveMessage } from '../live/live-fanout.ts';
import { decodeErrors, ffprobe } from './helpers/media.ts';
import { getJson, startNode, tempDir, waitFor, type TestNode } from './helpers/recorder.ts';

interface LiveClient {
  ws: WebSocket;
  texts: Record<string, unknown>[];
  binaries: Buffer[];
  closed: Promise<number>;
}

function openLive(url: string, protocols: string[] = ['recorder.v1']): Promise<LiveClient> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols);
    const c: LiveClient = { ws, texts: [], binaries: [], closed: new Promise((r) => ws.once('close', (code) => r(code))) };
    ws.on('message', (data, isBinary) => {
      if (isBinary) c.binaries.push(data as Buffer);
      else c.texts.push(JSON.parse((data as Buffer).toString()) as Record<string, unknown>);
    });
    ws.once('open', () => resolve(c));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (s: string) => (body += s));
      res.on('end', () => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode, body })));
    });
    ws.once('error', reject);
  });
}

/** Cuts what a viewer received (init + fragments, in order) with our splitter. */
async function split(binaries: Buffer[]): Promise<Fmp4Chunk[]> {
  const out: Fmp4Chunk[] = [];
  await pipeline(
    Readable.from(binaries),
    new Fmp4Splitter(),
    new Writable({
      objectMode: true,
      write(chunk: Fmp4Chunk, _enc, cb) {
        out.push(chunk);
        cb();
      },
    }),
  );
  return out;
}

async function spanEnd(n: TestNode, camera: string, fromMs: number): Promise<number> {
  const { body } = await getJson<{ spans: { to: string }[] }>(`${n.http}/api/recordings?camera=${camera}&from=${fromMs}&to=${Date.now() + 60_000}`);
  return body.spans.length ? Date.parse(body.spans[body.spans.length - 1]!.to) : 0;
}

test('live fMP4 over WebSocket from the running ingest while recording goes on; slow viewers stay bounded', async (t) => {
  const sim = await SimCamera.start();
  t.teardown(() => sim.stop());
  const n = await startNode(t);
  const wsBase = n.http.replace(/^http/, 'ws');
  const t0 = Date.now() - 5000;

  // Bad input first (a typed HTTP error before any upgrade).
  await t.throwsAsync(openLive(`${wsBase}/api/cameras/nope/live`), { message: 'HTTP 404' });
  const plain = await getJson<{ error: { code: string } }>(`${n.http}/api/cameras/nope/live`);
  t.is(plain.body.error.code, 'CAMERA_NOT_FOUND');

  t.true((await n.request('rec.v1.camera.put', { id: 'cam', streams: { main: sim.url('h264aac') } })).ok);
  const badPreview = await openLive(`${wsBase}/api/cameras/cam/live?preview=maybe`).catch((e: { status: number; body: string }) => e);
  t.is((badPreview as { status: number }).status, 400);
  t.regex((badPreview as { body: string }).body, /VALIDATION_FAILED/);
  const noUpgrade = await getJson<{ error: { code: string; message: string } }>(`${n.http}/api/cameras/cam/live`);
  t.is(noUpgrade.status, 400);
  t.regex(noUpgrade.body.error.message, /WebSocket/);

  const viewer = await openLive(`${wsBase}/api/cameras/cam/live`);
  t.teardown(() => viewer.ws.terminate());
  t.is(viewer.ws.protocol, 'recorder.v1');
  await waitFor('live init and 3 fragments', () => viewer.binaries.length >= 4, 90_000, 200);

  // The first message is JSON; an init message names the MIME type of what follows.
  const first = viewer.texts[0]!;
  t.true(first.type === 'init' || first.type === 'waiting', JSON.stringify(first));
  const initMsg = viewer.texts.find((m) => m.type === 'init')!;
  t.regex(String(initMsg.mimeType), /^video\/mp4; codecs="avc1\.[0-9a-f]+,mp4a\.40\.2"$/);
  t.is(initMsg.width, 320);

  // Recording goes on while the viewer watches: the stored span keeps growing.
  const endBefore = await waitFor('recorded video', () => spanEnd(n, 'cam', t0), 60_000);
  await waitFor('recording to continue', async () => (await spanEnd(n, 'cam', t0)) > endBefore + 2000, 60_000, 500);

  // Same codecs as what is recorded: /play of the recorded range has the same MIME type.
  const { body: found } = await getJson<{ spans: { from: string }[] }>(`${n.http}/api/recordings?camera=cam&from=${t0}&to=${Date.now() + 60_000}`);
  const play = await fetch(`${n.http}/api/cameras/cam/play?from=${encodeURIComponent(found.spans[0]!.from)}`);
  t.is(play.headers.get('content-type'), String(initMsg.mimeType));
  await play.arrayBuffer();

  // A viewer that never completes a delivery (in-process sink, 64 KiB bound) and one
  // that never reads its TCP socket: neither holds more than its bound nor slows the others.
  const bound = 64 * 1024;
  const stuck = n.node.supervisor.subscribeLive(
    'cam',
    { deliver: (_m: LiveMessage, _done: () => void) => undefined },
    { preview: false, maxQueuedBytes: bound },
  );
  t.teardown(() => stuck.close());
  const raw = await rawNeverReadingViewer(n.http, '/api/cameras/cam/live');
  t.teardown(() => raw.destroy());

  const seenBefore = viewer.binaries.length;
  const stuckStats = await waitFor('the stuck viewer to skip ahead', () => (stuck.stats().skips >= 1 ? stuck.stats() : null), 120_000, 500);
  t.true(stuckStats.queuedBytes <= bound, `stuck viewer holds ${stuckStats.queuedBytes} bytes`);
  t.true(stuckStats.inFlight);
  t.true(stuckStats.droppedFragments >= 1);
  await waitFor('the reading viewer to keep receiving', () => viewer.binaries.length >= seenBefore + 2, 60_000, 200);
  for (const v of n.node.supervisor.liveStats('cam').viewers) t.true(v.queuedBytes <= 8 * 1024 * 1024, JSON.stringify(v));

  // What the reading viewer got is a playable fMP4: its init + fragments, each a GOP starting on a keyframe.
  const chunks = await split(viewer.binaries);
  t.is(chunks[0]!.kind, 'init');
  const frags = chunks.filter((c): c is Extract<Fmp4Chunk, { kind: 'fragment' }> => c.kind === 'fragment');
  t.true(frags.length >= 5);
  t.true(frags.every((f) => f.keyframe));
  const dir = await tempDir(t, 'live-');
  const file = join(dir, 'live.mp4');
  await writeFile(file, Buffer.concat(viewer.binaries));
  t.deepEqual((await ffprobe(file)).codecs.sort(), ['aac', 'h264']);
  t.is(await decodeErrors(file), '');

  // Removing the camera closes its viewers with a last message.
  t.true((await n.request('rec.v1.camera.delete', { id: 'cam' })).ok);
  t.is(await viewer.closed, 1001);
  t.is(viewer.texts.at(-1)!.type, 'closed');
  t.true(stuck.isClosed);
});

test('H.265 camera: a 240-line H.264 preview transcoded from the running ingest, ffmpeg gone with its last viewer', async (t) => {
  const sim = await SimCamera.start();
  t.teardown(() => sim.stop());
  const n = await startNode(t);
  const wsBase = n.http.replace(/^http/, 'ws');
  t.true((await n.request('rec.v1.camera.put', { id: 'hevc', streams: { main: sim.url('h265aac') } })).ok);

  const direct = await openLive(`${wsBase}/api/cameras/hevc/live`);
  t.teardown(() => direct.ws.terminate());
  await waitFor('direct init', () => direct.texts.find((m) => m.type === 'init'), 90_000, 200);
  t.regex(String(direct.texts.find((m) => m.type === 'init')!.mimeType), /codecs="(hev1|hvc1)\./);
  direct.ws.close();

  const preview = await openLive(`${wsBase}/api/cameras/hevc/live?preview=1`);
  t.teardown(() => preview.ws.terminate());
  t.is((await waitFor('first message', () => preview.texts[0])).type, 'waiting');
  await waitFor('preview init and 3 fragments', () => preview.binaries.length >= 4, 90_000, 200);
  const init = preview.texts.find((m) => m.type === 'init')!;
  t.regex(String(init.mimeType), /^video\/mp4; codecs="avc1\.[0-9a-f]+"$/);
  t.is(init.preview, true);
  t.is(init.height, 240);
  t.is(livePreviewCount(), 1);

  const dir = await tempDir(t, 'preview-');
  const file = join(dir, 'preview.mp4');
  await writeFile(file, Buffer.concat(preview.binaries));
  t.deepEqual((await ffprobe(file)).codecs, ['h264']);
  t.is(await decodeErrors(file), '');

  // The transcoder lives only while someone watches.
  preview.ws.close();
  await waitFor('preview ffmpeg to exit', () => livePreviewCount() === 0, 20_000, 100);
  t.false(n.node.supervisor.liveStats('hevc').preview.running);
});

/** A WebSocket client that completes the upgrade and then never reads a byte. */
async function rawNeverReadingViewer(http: string, path: string): Promise<Socket> {
  const { hostname, port } = new URL(http);
  const sock = createConnection({ host: hostname, port: Number(port) });
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', () => resolve());
    sock.once('error', reject);
  });
  sock.write(
    `GET ${path} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${Buffer.from('0123456789abcdef').toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  await new Promise<void>((resolve, reject) => {
    let head = '';
    const onData = (b: Buffer): void => {
      head += b.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      sock.off('data', onData);
      sock.pause();
      if (head.startsWith('HTTP/1.1 101')) resolve();
      else reject(new Error(head.split('\r\n')[0]));
    };
    sock.on('data', onData);
  });
  sock.on('error', () => undefined);
  return sock;
}
