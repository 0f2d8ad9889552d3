/**
 * rtsp/rtsp-connection.ts's reader, which parses the camera's byte stream read into one
 * reused buffer: interleaved frames cut anywhere by the end of a read (even inside the
 * 4-byte header) come out whole and in order, answers between frames reach their
 * request, and nothing handed on depends on the read buffer after the call that had it.
 */
import test from 'ava';
import { RtspReader, type MakeRtspError } from '../../rtsp/rtsp-connection.ts';

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
    const read = Buffer.alloc(readSize);
    for (let at = 0; at < stream.length; at += readSize) {
      const n = stream.copy(read, 0, at, Math.min(stream.length, at + readSize));
      reader.push(read.subarray(0, n));
      read.fill(0xee); // the socket's buffer is reused for the next read
    }
    t.deepEqual(got, ['0:1400:1:1', '1:3:2:2', '0:65535:3:3', '2:0:-:-', '0:700:4:4'], `read size ${readSize}`);
    t.like(await first, { status: 200, body: 'v=0\r\n' });
    t.like(await second, { status: 200, body: '' });
  }
});

test('a header that never ends fails typed instead of growing without bound', (t) => {
  const reader = new RtspReader(() => undefined, fail);
  const err = t.throws(() => reader.push(Buffer.alloc(300 * 1024, 0x41)));
  t.regex(err.message, /^RTSP: RTSP header too long/);
});
