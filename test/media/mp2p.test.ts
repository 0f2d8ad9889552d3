/**
 * The MP2P bridge's pure parts and its failures without a camera: SDP lookup of the
 * MP2P stream and its control URL, RTP payload extraction (CSRCs, header extension,
 * padding), and typed errors for a camera that is not there.
 */
import test from 'ava';
import { createServer } from 'node:net';
import { Mp2pBridgeError, findMp2p, isMp2pCamera, startMp2pBridge } from '../../rtsp/mp2p-bridge.ts';
import { readRtp } from '../../media/rtp/rtp-packet.ts';
import { freePort } from '../../sim/camera.ts';

test('findMp2p: the MP2P/90000 media and its control URL (relative, absolute, none)', (t) => {
  const sdp = (control: string) => `v=0\r\nm=audio 0 RTP/AVP 0\r\na=control:trackID=1\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 MP2P/90000\r\n${control}`;
  t.deepEqual(findMp2p(sdp('a=control:stream=0\r\n'), 'rtsp://cam/live/'), { payloadType: 96, control: 'rtsp://cam/live/stream=0' });
  t.deepEqual(findMp2p(sdp('a=control:rtsp://cam/other\r\n'), 'rtsp://cam/live'), { payloadType: 96, control: 'rtsp://cam/other' });
  t.deepEqual(findMp2p(sdp(''), 'rtsp://cam/live'), { payloadType: 96, control: 'rtsp://cam/live' });
  t.is(findMp2p('v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n', 'rtsp://cam/'), null);
});

test('readRtp: reads seq, timestamp, marker and SSRC, skips CSRCs and the header extension, drops padding, refuses non-RTP', (t) => {
  const payload = Buffer.from([0, 0, 1, 0xba, 1, 2, 3]);
  const plain = Buffer.concat([Buffer.from([0x80, 96, 0, 7, 0, 0, 0, 1, 0, 0, 0, 2]), payload]);
  t.deepEqual(readRtp(plain), { seq: 7, timestamp: 1, marker: false, payloadType: 96, ssrc: 2, payload });
  // 1 CSRC, an extension of one word, 3 bytes of padding.
  const fancy = Buffer.concat([
    Buffer.from([0xb1, 0xe0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 2]),
    Buffer.alloc(4),
    Buffer.from([0xbe, 0xde, 0, 1]),
    Buffer.alloc(4),
    payload,
    Buffer.from([0, 0, 3]),
  ]);
  const r = readRtp(fancy)!;
  t.is(r.payloadType, 96);
  t.true(r.marker);
  t.is(r.seq, 8);
  t.true(r.payload.equals(payload));
  t.is(readRtp(Buffer.from('not rtp at all')), null);
  t.is(readRtp(Buffer.alloc(5)), null);
});

test('a camera that is not there or answers garbage: typed errors, not MP2P', async (t) => {
  const port = await freePort();
  const err = await t.throwsAsync(startMp2pBridge(`rtsp://127.0.0.1:${port}/x`, 2000, { onBytes: () => undefined }));
  t.true(err instanceof Mp2pBridgeError && err.code === 'MP2P_CONNECT', String(err));
  t.false(await isMp2pCamera(`rtsp://127.0.0.1:${port}/x`, 2000).catch(() => false));
  // A server that accepts and answers 404 to everything.
  const server = createServer((s) => s.on('data', () => s.write('RTSP/1.0 404 Not Found\r\nCSeq: 1\r\n\r\n')));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const url = `rtsp://user:secret@127.0.0.1:${(server.address() as { port: number }).port}/x`;
  const e2 = await t.throwsAsync(startMp2pBridge(url, 2000, { onBytes: () => undefined }));
  t.true(e2 instanceof Mp2pBridgeError && e2.code === 'MP2P_RTSP', String(e2));
  t.false(String(e2).includes('secret'), 'credentials never appear in errors');
});

test('a DESCRIBE answered 503 (GStreamer unpreparing the shared media a probe just left) is asked again on the connection; 503 every time fails typed', async (t) => {
  const sdp = 'v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 MP2P/90000\r\na=control:stream=0\r\n';
  const listen = async (refusals: number): Promise<{ url: string; describes: () => number }> => {
    let describes = 0;
    const server = createServer((s) => {
      let buf = '';
      s.on('data', (d: Buffer) => {
        buf += d.toString('latin1');
        for (let end = buf.indexOf('\r\n\r\n'); end >= 0; end = buf.indexOf('\r\n\r\n')) {
          const req = buf.slice(0, end);
          buf = buf.slice(end + 4);
          const cseq = /CSeq: (\d+)/.exec(req)![1];
          const method = req.split(' ')[0];
          if (method === 'DESCRIBE' && describes++ < refusals) s.write(`RTSP/1.0 503 Service Unavailable\r\nCSeq: ${cseq}\r\n\r\n`);
          else if (method === 'DESCRIBE')
            s.write(`RTSP/1.0 200 OK\r\nCSeq: ${cseq}\r\nContent-Type: application/sdp\r\nContent-Length: ${sdp.length}\r\n\r\n${sdp}`);
          else if (method === 'SETUP') s.write(`RTSP/1.0 200 OK\r\nCSeq: ${cseq}\r\nSession: 42\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n`);
          else s.write(`RTSP/1.0 200 OK\r\nCSeq: ${cseq}\r\nSession: 42\r\n\r\n`);
        }
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    t.teardown(() => server.close());
    return { url: `rtsp://127.0.0.1:${(server.address() as { port: number }).port}/h264ps`, describes: () => describes };
  };
  const once = await listen(1);
  const bridge = await startMp2pBridge(once.url, 2000, { onBytes: () => undefined });
  bridge.close();
  t.is(once.describes(), 2);
  const always = await listen(Infinity);
  const err = await t.throwsAsync(startMp2pBridge(always.url, 2000, { onBytes: () => undefined }));
  t.true(err instanceof Mp2pBridgeError && err.code === 'MP2P_RTSP' && err.status === 503, String(err));
  t.is(always.describes(), 3);
});
