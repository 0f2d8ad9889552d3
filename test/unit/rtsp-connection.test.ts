/**
 * rtsp/rtsp-connection.ts's reader, which parses the camera's byte stream read into one
 * reused buffer: interleaved frames cut anywhere by the end of a read (even inside the
 * 4-byte header) come out whole and in order, answers between frames reach their
 * request, and nothing handed on depends on the read buffer after the call that had it;
 * stray bytes between frames are skipped (resynchronised), an ended connection fails
 * its waiting requests at once, and a UDP RTP socket gets a large receive buffer.
 */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { bindRtpPair, closeDgram, messageStart, RtspReader, RTP_RECV_BUFFER_BYTES, type MakeRtspError } from '../../rtsp/rtsp-connection.ts';

const fail: MakeRtspError = (kind, message) => new Error(`${kind}: ${message}`);

function frame(channel: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(4);
  h[0] = 0x24;
  h[1] = channel;
  h.writeUInt16BE(payload.length, 2);
  return Buffer.concat([h, payload]);
}

const answer = (cseq: number, body = ''): Buffer =>
  Buffer.from(`RTSP/1.0 200 OK\r\nCSeq: ${cseq}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`, 'latin1');

/** Hands `stream` to the reader `readSize` bytes at a time through one buffer, overwritten after each read as the socket's is. */
function pushInReads(reader: RtspReader, stream: Buffer, readSize: number): void {
  const read = Buffer.alloc(readSize);
  for (let at = 0; at < stream.length; at += readSize) {
    const n = stream.copy(read, 0, at, Math.min(stream.length, at + readSize));
    reader.push(read.subarray(0, n));
    read.fill(0xee);
  }
}

test('frames and answers cut at every read size come out whole, in order; a reused read buffer is never relied on', async (t) => {
  const payloads = [Buffer.alloc(1400, 1), Buffer.alloc(3, 2), Buffer.alloc(65535, 3), Buffer.alloc(0), Buffer.alloc(700, 4)];
  const stream = Buffer.concat([
    frame(0, payloads[0]!),
    answer(1, 'v=0\r\n'),
    frame(1, payloads[1]!),
    frame(0, payloads[2]!),
    frame(2, payloads[3]!),
    answer(2),
    frame(0, payloads[4]!),
  ]);
  for (const readSize of [1, 2, 3, 5, 7, 64, 1500, 4096, 65536, stream.length]) {
    const got: string[] = [];
    const reader = new RtspReader((ch, p) => got.push(`${ch}:${p.length}:${p[0] ?? '-'}:${p[p.length - 1] ?? '-'}`), fail);
    const first = reader.next(1);
    const second = reader.next(2);
    pushInReads(reader, stream, readSize);
    t.deepEqual(got, ['0:1400:1:1', '1:3:2:2', '0:65535:3:3', '2:0:-:-', '0:700:4:4'], `read size ${readSize}`);
    t.like(await first, { status: 200, body: 'v=0\r\n' });
    t.like(await second, { status: 200, body: '' });
  }
});

test('a header that never ends fails typed instead of growing without bound', (t) => {
  const reader = new RtspReader(() => undefined, fail);
  const err = t.throws(() => reader.push(Buffer.concat([Buffer.from('RTSP/1.0 200 OK\r\nX-Long: '), Buffer.alloc(300 * 1024, 0x41)])));
  t.regex(err.message, /^RTSP: RTSP header too long/);
});

test('stray bytes between frames and answers are skipped to the next frame or answer, at every read size, and counted', async (t) => {
  // Neither `$` nor an RTSP message: binary junk, a stray CRLF, a word that is no request line.
  const junk = [Buffer.from([0x00, 0x17, 0x80, 0x99, 0x0a, 0xff]), Buffer.from('\r\n'), Buffer.from('GARBAGE!\r\n'), Buffer.from('RTSP/2.0 nope')];
  const stream = Buffer.concat([
    frame(0, Buffer.alloc(1400, 1)),
    junk[0]!,
    frame(1, Buffer.alloc(3, 2)),
    junk[1]!,
    answer(1, 'v=0\r\n'),
    junk[2]!,
    frame(0, Buffer.alloc(700, 4)),
    junk[3]!,
    answer(2),
    frame(2, Buffer.alloc(5, 5)),
  ]);
  const junkBytes = junk.reduce((n, j) => n + j.length, 0);
  for (const readSize of [1, 2, 3, 5, 7, 64, 1500, stream.length]) {
    const got: string[] = [];
    const reader = new RtspReader((ch, p) => got.push(`${ch}:${p.length}:${p[0]}`), fail);
    const first = reader.next(1);
    const second = reader.next(2);
    pushInReads(reader, stream, readSize);
    t.deepEqual(got, ['0:1400:1', '1:3:2', '0:700:4', '2:5:5'], `read size ${readSize}`);
    t.like(await first, { status: 200, body: 'v=0\r\n' });
    t.like(await second, { status: 200, body: '' });
    t.is(reader.skippedBytes, junkBytes, `read size ${readSize}`);
  }
});

test('what starts an RTSP message: a status line or a request line; a cut one waits for more', (t) => {
  t.is(messageStart(Buffer.from('RTSP/1.0 200 OK\r\n')), 'yes');
  t.is(messageStart(Buffer.from('RTSP/1')), 'maybe');
  t.is(messageStart(Buffer.from('OPTIONS rtsp://cam/live RTSP/1.0\r\nCSeq: 1\r\n')), 'yes');
  t.is(messageStart(Buffer.from('SET_PARAMETER rtsp://cam/li')), 'maybe');
  t.is(messageStart(Buffer.from('OPTIONS rtsp://cam/live HTTP/1.1\r\n')), 'no');
  t.is(messageStart(Buffer.from([0x80, 0x60, 0x00])), 'no');
  t.is(messageStart(Buffer.from('\r\n')), 'no');
});

test('a peer that never sends RTSP or a frame fails typed once a bounded run of bytes was skipped', (t) => {
  const reader = new RtspReader(() => undefined, fail);
  const junk = Buffer.alloc(64 * 1024, 0x01);
  const err = t.throws(() => {
    for (let i = 0; i < 64; i++) reader.push(junk);
  });
  t.regex(err.message, /^RTSP: \d+ bytes in a row that are neither RTSP nor interleaved data/);
  t.true(reader.skippedBytes > 1024 * 1024 && reader.skippedBytes <= 2 * 1024 * 1024);
});

test('an ended connection fails its waiting requests at once with its reason, and every later one', async (t) => {
  const reader = new RtspReader(() => undefined, fail);
  const waiting = reader.next(3);
  const reason = new Error('CONNECT: cam closed the RTSP connection');
  reader.end(reason);
  t.is(await t.throwsAsync(waiting), reason);
  t.is(await t.throwsAsync(reader.next(4)), reason);
});

test('the RTP socket of a UDP pair asks for a large receive buffer (as far as the OS allows); closing twice is harmless', async (t) => {
  // Linux caps SO_RCVBUF at net.core.rmem_max (and reports twice what it keeps).
  let cap = RTP_RECV_BUFFER_BYTES;
  try {
    cap = Math.min(cap, Number(readFileSync('/proc/sys/net/core/rmem_max', 'utf8')));
  } catch {
    /* not Linux: the size asked */
  }
  const pair = await bindRtpPair('udp4', fail);
  t.teardown(() => {
    closeDgram(pair.rtp);
    closeDgram(pair.rtcp);
  });
  t.true(pair.rtp.getRecvBufferSize() >= cap, `${pair.rtp.getRecvBufferSize()} < ${cap}`);
  t.is(pair.port % 2, 0);
  closeDgram(pair.rtp);
  closeDgram(pair.rtcp);
  t.notThrows(() => {
    closeDgram(pair.rtp);
    closeDgram(pair.rtcp);
  });
});
