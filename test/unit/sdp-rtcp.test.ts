/**
 * What our own RTSP client reads from a camera besides RTP: the SDP's tracks
 * (rtsp/sdp-tracks.ts: encoding, clock, fmtp, control URL) and RTCP sender reports
 * (media/rtp/rtcp.ts: the NTP time of an RTP timestamp), and the receiver reports our
 * client sends back (media/rtp/receiver-report.ts).
 */
import test from 'ava';
import { parseSdpTracks } from '../../rtsp/sdp-tracks.ts';
import { readSenderReport } from '../../media/rtp/rtcp.ts';
import { ReceptionStats, receiverReport } from '../../media/rtp/receiver-report.ts';

const SDP = [
  'v=0',
  'o=- 1 1 IN IP4 127.0.0.1',
  's=cam',
  'a=control:*',
  'm=video 0 RTP/AVP 96',
  'a=rtpmap:96 H264/90000',
  'a=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z0IAHpWoKA9puAgICBA=,aM48gA==',
  'a=control:trackID=1',
  'm=audio 0 RTP/AVP 97',
  'a=rtpmap:97 mpeg4-generic/16000/2',
  'a=fmtp:97 streamtype=5; profile-level-id=15; mode=AAC-hbr; config=1410; SizeLength=13; IndexLength=3; IndexDeltaLength=3',
  'a=control:rtsp://10.0.0.5/live/audio',
  'm=audio 0 RTP/AVP 8',
  'm=application 0 RTP/AVP 107',
  'a=rtpmap:107 vnd.onvif.metadata/90000',
  '',
].join('\r\n');

test('SDP tracks: encoding, clock, channels, fmtp as written, control resolved (relative, absolute, static payload types)', (t) => {
  const tracks = parseSdpTracks(SDP, 'rtsp://10.0.0.5/live/');
  t.deepEqual(
    tracks.map((x) => [x.media, x.payloadType, x.encoding, x.clockRate, x.channels, x.control]),
    [
      ['video', 96, 'H264', 90000, null, 'rtsp://10.0.0.5/live/trackID=1'],
      ['audio', 97, 'MPEG4-GENERIC', 16000, 2, 'rtsp://10.0.0.5/live/audio'],
      ['audio', 8, 'PCMA', 8000, 1, 'rtsp://10.0.0.5/live/'],
      ['application', 107, 'VND.ONVIF.METADATA', 90000, null, 'rtsp://10.0.0.5/live/'],
    ],
  );
  t.is(tracks[0]!.fmtp, 'packetization-mode=1;sprop-parameter-sets=Z0IAHpWoKA9puAgICBA=,aM48gA==');
  t.regex(tracks[1]!.fmtp, /^streamtype=5; .*IndexDeltaLength=3$/);
  t.deepEqual(parseSdpTracks('v=0\r\nm=video\r\n', 'rtsp://x/'), [], 'a broken m= line is no track');
});

test('RTCP: the sender report of a compound packet (after a receiver report), NTP to Unix ms; anything else is null', (t) => {
  const rr = Buffer.from([0x80, 201, 0, 1, 0, 0, 0, 9]);
  const sr = Buffer.alloc(28);
  sr[0] = 0x80;
  sr[1] = 200;
  sr.writeUInt16BE(6, 2);
  sr.writeUInt32BE(0x1234, 4);
  sr.writeUInt32BE(2_208_988_800 + 1_700_000_000, 8); // 2023-11-14T22:13:20Z
  sr.writeUInt32BE(0x80000000, 12); // .5 s
  sr.writeUInt32BE(4_000_000_000, 16);
  t.deepEqual(readSenderReport(Buffer.concat([rr, sr])), { ssrc: 0x1234, ntpMs: 1_700_000_000_500, rtpTimestamp: 4_000_000_000 });
  t.is(readSenderReport(rr), null);
  t.is(readSenderReport(sr.subarray(0, 20)), null, 'cut short');
  t.is(readSenderReport(Buffer.from('garbage!')), null);
});

test('receiver reports: loss counted across the 16-bit wrap, the last sender report echoed with its delay, RR + SDES CNAME', (t) => {
  const stats = new ReceptionStats();
  t.is(receiverReport(7, stats, 'me', 0), null, 'nothing to report before a packet');
  for (let seq = 65530; seq < 65536 + 10; seq++) if (seq !== 65534 && seq !== 65536 + 3) stats.packet(seq & 0xffff, 0xabc);
  stats.packet(65533, 0xabc); // a late repeat changes nothing
  const sr = Buffer.alloc(28);
  sr[0] = 0x80;
  sr[1] = 200;
  sr.writeUInt16BE(6, 2);
  sr.writeUInt32BE(0x11223344, 8);
  sr.writeUInt32BE(0x55667788, 12);
  stats.senderReport(sr, 1000);
  const rr = receiverReport(7, stats, 'ipcam-recorder', 1500)!;
  t.is(rr[1], 201);
  t.is(rr.readUInt32BE(4), 7, 'our SSRC');
  t.is(rr.readUInt32BE(8), 0xabc, "the camera's SSRC");
  t.is(rr.readUInt32BE(12) & 0xffffff, 16 - 15, 'one lost in all (16 expected, 15 received with the repeat)');
  t.is(rr.readUInt32BE(16), 65536 + 9, 'extended highest sequence number');
  t.is(rr.readUInt32BE(24), 0x33445566, 'LSR: the middle of the NTP time');
  t.is(rr.readUInt32BE(28), 32768, 'DLSR: 0.5 s in 1/65536 s');
  t.is(rr[33], 202);
  t.is(rr.subarray(42, 42 + rr[41]!).toString(), 'ipcam-recorder');
  t.is(rr.length % 4, 0);
  t.is(4 * (rr.readUInt16BE(34) + 1), rr.length - 32, 'SDES length in words');
});
