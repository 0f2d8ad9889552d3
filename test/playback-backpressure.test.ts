/**
 * A playback session whose client stops reading: the server stops sending once the
 * socket holds MAX_BUFFERED_BYTES unsent (plus the one fragment that crossed it), and
 * goes on when the client reads again. Real pieces throughout: a 2 Mbit/s fMP4
 * segment made by ffmpeg, an LMDB index in a temp dir, a ws server and client over
 * loopback TCP; the client's TCP socket is paused like a stalled viewer's.
 *
 * At speed 4 the 8 s paced lead is 32 s of video (~8 MB), more than loopback's socket
 * buffers take from a reader that never reads, so the userland bound is reached.
 */
import test from 'ava';
import { wholeRange } from '../services/playback-windows.ts';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';
import WebSocket, { WebSocketServer } from 'ws';
import { RecorderIndex } from '../index/db.ts';
import { encodeGops } from '../index/gop-table.ts';
import { createLogger } from '../lib/log.ts';
import { scanFmp4File } from '../media/mp4/fmp4-file.ts';
import { MAX_BUFFERED_BYTES, PlaybackSession } from '../api/playback-session.ts';
import { createReadCaches } from '../playback/read-caches.ts';
import { encode, tempDir } from './media/fixtures.ts';

const START_MS = Date.UTC(2026, 9, 1, 8);

test('a client that stops reading stalls its session at the unsent-bytes bound; reading again resumes it', async (t) => {
  const dir = await tempDir(t);
  await encode(dir, 'seg.mp4', { seconds: 40, gop: 50, bitrate: '2M', noise: true, audio: false, size: '320x240', bframes: 0 });
  const scan = await scanFmp4File(join(dir, 'seg.mp4'));
  const largest = Math.max(...scan.fragments.map((f) => f.size));
  const index = await RecorderIndex.open(dir);
  t.teardown(() => index.close());
  const vts = scan.info.tracks[0]!.timescale;
  await index.segments.put({
    camera: 'cam',
    startMs: START_MS,
    endMs: START_MS + 40_000,
    file: 'seg.mp4',
    format: 'mp4',
    pool: 'default',
    stream: 'main',
    bytes: scan.validBytes,
    initSize: scan.initSize,
    mimeType: scan.info.mimeType,
    codecKey: scan.info.codecKey,
    types: [{ type: 'timing', fromMs: START_MS }],
    open: false,
    flags: {},
    gops: encodeGops(
      scan.fragments.map((f) => ({ offset: f.offset, size: f.size, timeMs: Math.round((Number(f.moof.tracks[0]!.baseDecodeTime) * 1000) / vts) })),
    ),
  });

  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  t.teardown(() => new Promise<void>((r) => wss.close(() => r())));
  const server = new Promise<WebSocket>((resolve) =>
    wss.on('connection', (ws) => {
      new PlaybackSession(
        ws,
        { index, dataDir: dir, caches: createReadCaches(), service: { playbackWindow: (_camera, r) => Promise.resolve(wholeRange(r)) } },
        'cam',
        createLogger('silent'),
      );
      resolve(ws);
    }),
  );
  await new Promise<void>((r) => wss.once('listening', () => r()));
  const client = new WebSocket(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}`);
  t.teardown(() => client.terminate());
  let received = 0;
  let fragments = 0;
  client.on('message', (data, isBinary) => {
    if (!isBinary) return;
    const buf = data as Buffer;
    received += buf.length;
    if (buf.toString('latin1', 4, 8) === 'moof') fragments++;
    // A viewer that stalls right after the init.
    if (buf.toString('latin1', 4, 8) === 'ftyp') (client as unknown as { _socket: Socket })._socket.pause();
  });
  await new Promise<void>((resolve, reject) => client.once('open', () => resolve()).once('error', reject));
  client.send(JSON.stringify({ cmd: 'play', from: START_MS, speed: 4 }));
  const ws = await server;

  // Watch the server side's unsent bytes while the client reads nothing.
  let max = 0;
  const deadline = Date.now() + 60_000;
  let stableSince = 0;
  let last = -1;
  while (Date.now() < deadline) {
    const b = ws.bufferedAmount;
    max = Math.max(max, b);
    if (b > 0 && b === last) {
      stableSince ||= Date.now();
      if (Date.now() - stableSince > 2000) break; // nothing more was queued for 2 s
    } else stableSince = 0;
    last = b;
    await new Promise((r) => setTimeout(r, 20));
  }
  t.true(max > 0, 'the kernel buffers filled and sending went through userland');
  t.true(max <= MAX_BUFFERED_BYTES + largest, `at most the bound plus one fragment unsent: ${max} (bound ${MAX_BUFFERED_BYTES}, largest fragment ${largest})`);
  t.log(`unsent at most ${max} bytes (bound ${MAX_BUFFERED_BYTES}, largest fragment ${largest}); client had ${received} bytes`);

  // The viewer reads again: the session goes on from where it stalled.
  (client as unknown as { _socket: Socket })._socket.resume();
  const before = received;
  const stalledAt = fragments;
  while (Date.now() < deadline && fragments < stalledAt + 10) await new Promise((r) => setTimeout(r, 50));
  t.true(fragments >= stalledAt + 10, `fragments after resuming: ${fragments - stalledAt}`);
  t.true(received > before);
  client.send(JSON.stringify({ cmd: 'stop' }));
});
