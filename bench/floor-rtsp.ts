/**
 * The floor of an RTSP client of our own (issue 18's last way): one Node process, no
 * ffmpeg, that per camera URL on the command line does DESCRIBE, SETUP of the first
 * video track over TCP (interleaved), PLAY, and appends each RTP packet's payload to a
 * file. Socket reads land in one reused buffer per camera (net `onread`), are copied
 * into a fixed accumulator, and payloads are gathered into a fixed 64 KiB output
 * buffer written with writeSync when full: no new Buffer memory once playing. No
 * depacketizing (FU-A reassembly, AVCC), no MP4: what it measures is receiving and
 * storing the bytes, the part a client of our own cannot avoid. bench/ingest.ts runs
 * it with `FLOOR_SCRIPT=floor-rtsp.ts --mode floor`, beside the baseline.
 * FLOOR_DEPACK=1 adds the depacketizing and fragment writing (bench/floor-depack.ts).
 *
 *   node --import tsx bench/floor-rtsp.ts <outDir> <rtsp-url>...
 */
import { mkdirSync, openSync, writeSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { H264Depacketizer } from './floor-depack.ts';

const STAGGER_MS = Number(process.env.CONNECT_STAGGER_MS ?? 150);
/** GStreamer's sessions time out after 60 s without a request: ask for nothing every 20 s. */
const KEEPALIVE_MS = 20_000;
const depack = process.env.FLOOR_DEPACK === '1';
const sockets: Socket[] = [];
const depacketizers: H264Depacketizer[] = [];
let packets = 0;

const [outDir, ...urls] = process.argv.slice(2);
if (!outDir || urls.length === 0) throw new Error('usage: floor-rtsp.ts <outDir> <rtsp-url>...');
mkdirSync(outDir, { recursive: true });
// The same live heap as the other floors' FLOOR_HEAP_MB (what our libraries hold).
const heap: { i: number; s: string; a: number[] }[] = [];
for (let i = 0; i < Number(process.env.FLOOR_HEAP_MB ?? 0) * 10_000; i++) heap.push({ i, s: `o${i}`, a: [i, i + 1] });
process.on('SIGTERM', () => {
  for (const s of sockets) s.destroy();
  console.error(`floor-rtsp: ${packets} RTP packets stored`);
  if (depack)
    console.error(
      `floor-rtsp: ${depacketizers.reduce((n, d) => n + d.fragments, 0)} fragments written, ${depacketizers.reduce((n, d) => n + d.dropped, 0)} NAL units dropped`,
    );
  process.exit(heap.length >= 0 ? 0 : 1); // `heap` stays reachable until here
});
for (const [i, url] of urls.entries()) {
  if (i > 0) await new Promise((r) => setTimeout(r, STAGGER_MS));
  record(url, join(outDir, `cam${i}.rtp`));
}

/** One camera: its RTSP connection, and the file its video payloads go to. */
function record(url: string, file: string): void {
  const u = new URL(url);
  const fd = openSync(file, 'w');
  const acc = Buffer.allocUnsafe(512 * 1024);
  let accLen = 0;
  const out = Buffer.allocUnsafe(64 * 1024);
  let outLen = 0;
  const depacketizer = depack ? new H264Depacketizer(fd) : null;
  if (depacketizer) depacketizers.push(depacketizer);
  let cseq = 0;
  let session = '';
  let phase: 'describe' | 'setup' | 'play' | 'playing' = 'describe';
  let control = '';

  const send = (method: string, target: string, extra: Record<string, string> = {}): void => {
    const headers = { CSeq: String(++cseq), ...(session ? { Session: session } : {}), ...extra };
    socket.write(
      `${method} ${target} RTSP/1.0\r\n${Object.entries(headers)
        .map(([k, v]) => `${k}: ${v}\r\n`)
        .join('')}\r\n`,
    );
  };
  const flush = (): void => {
    if (outLen > 0) writeSync(fd, out, 0, outLen);
    outLen = 0;
  };
  const store = (from: number, to: number): void => {
    // The RTP header: 12 bytes, CSRCs, an extension; the rest is payload.
    const b0 = acc[from]!;
    let at = from + 12 + 4 * (b0 & 0x0f);
    if (b0 & 0x10 && at + 4 <= to) at += 4 + 4 * acc.readUInt16BE(at + 2);
    if (at >= to) return;
    packets++;
    if (depacketizer) return depacketizer.packet(acc, at, to, acc.readUInt32BE(from + 4));
    if (outLen + (to - at) > out.length) flush();
    acc.copy(out, outLen, at, to);
    outLen += to - at;
  };
  /** An RTSP answer: its headers and body, or null while it is not whole. */
  const answer = (at: number): { end: number; head: string; body: string } | null => {
    const headEnd = acc.indexOf('\r\n\r\n', at, 'latin1');
    if (headEnd < 0 || headEnd >= accLen) return null;
    const head = acc.toString('latin1', at, headEnd);
    const length = Number(/^content-length:\s*(\d+)/im.exec(head)?.[1] ?? 0);
    if (headEnd + 4 + length > accLen) return null;
    return { end: headEnd + 4 + length, head, body: acc.toString('latin1', headEnd + 4, headEnd + 4 + length) };
  };
  const onAnswer = (head: string, body: string): void => {
    if (!/^RTSP\/1\.0 200/.test(head)) throw new Error(`${url}: ${head.split('\r\n')[0]}`);
    if (phase === 'describe') {
      const base = /^content-base:\s*(\S+)/im.exec(head)?.[1] ?? url;
      const video = body.split(/\r?\nm=/).find((s) => s.startsWith('video'));
      const c = video && /^a=control:(\S+)/im.exec(video)?.[1];
      if (!c) throw new Error(`${url}: no video track`);
      control = /^rtsps?:\/\//i.test(c) ? c : `${base.replace(/\/$/, '')}/${c}`;
      phase = 'setup';
      send('SETUP', control, { Transport: 'RTP/AVP/TCP;unicast;interleaved=0-1' });
    } else if (phase === 'setup') {
      session = (/^session:\s*([^;\s]+)/im.exec(head)?.[1] ?? '').trim();
      phase = 'play';
      send('PLAY', url, { Range: 'npt=0.000-' });
    } else if (phase === 'play') {
      phase = 'playing';
      setInterval(() => send('GET_PARAMETER', url), KEEPALIVE_MS).unref();
    }
  };
  const consume = (): void => {
    let at = 0;
    while (at < accLen) {
      if (acc[at] === 0x24) {
        // `$`, channel, 16-bit length: an interleaved RTP (even channel) or RTCP packet.
        if (at + 4 > accLen) break;
        const len = acc.readUInt16BE(at + 2);
        if (at + 4 + len > accLen) break;
        if (acc[at + 1] === 0) store(at + 4, at + 4 + len);
        at += 4 + len;
      } else {
        const a = answer(at);
        if (!a) break;
        onAnswer(a.head, a.body);
        at = a.end;
      }
    }
    acc.copyWithin(0, at, accLen);
    accLen -= at;
  };
  const socket = connect({
    host: u.hostname,
    port: Number(u.port || 554),
    onread: {
      buffer: Buffer.allocUnsafe(64 * 1024),
      callback: (n: number, buf: Uint8Array) => {
        if (accLen + n > acc.length) throw new Error(`${url}: more than ${acc.length} bytes without a whole packet`);
        acc.set(buf.subarray(0, n), accLen);
        accLen += n;
        consume();
        return true;
      },
    },
  });
  sockets.push(socket);
  socket.on('connect', () => send('DESCRIBE', url, { Accept: 'application/sdp' }));
  socket.on('error', (err) => console.error(`${url}: ${err.message}`));
  socket.on('close', flush);
}
