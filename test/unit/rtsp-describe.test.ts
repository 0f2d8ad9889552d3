/** The SDP reading behind the smart stream's data-track detection and the audio plan (rtsp/rtsp-describe.ts). */
import test from 'ava';
import { hasDataTrack, parseSdpMedia } from '../../rtsp/rtsp-describe.ts';
import { parseSdpTracks } from '../../rtsp/sdp-tracks.ts';

test('SDP: a data track is an m=application section', (t) => {
  const sdp = 'v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\nm=application 0 RTP/AVP 107\r\na=rtpmap:107 vnd.onvif.metadata/90000\r\n';
  const media = parseSdpMedia(sdp);
  t.deepEqual(media, [
    { media: 'video', encodings: ['H264'], clockRate: 90000 },
    { media: 'application', encodings: ['VND.ONVIF.METADATA'], clockRate: 90000 },
  ]);
  t.true(hasDataTrack(media));
  t.false(hasDataTrack(parseSdpMedia('m=video 0 RTP/AVP 96\nm=audio 0 RTP/AVP 97\n')));
});

test('SDP: static payload types without an rtpmap line are named (G.711 as many cameras announce it)', (t) => {
  const media = parseSdpMedia('v=0\r\nm=video 0 RTP/AVP 26\r\nm=audio 0 RTP/AVP 8\r\nm=audio 0 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n');
  t.deepEqual(media, [
    { media: 'video', encodings: ['JPEG'], clockRate: 90000 },
    { media: 'audio', encodings: ['PCMA'], clockRate: 8000, channels: 1 },
    { media: 'audio', encodings: ['PCMU', 'TELEPHONE-EVENT'], clockRate: 8000, channels: 1 },
  ]);
});

test('SDP: rate and channels of the first format come from its rtpmap; an rtpmap for a type the m= line lacks is kept', (t) => {
  t.deepEqual(parseSdpMedia('m=audio 0 RTP/AVP 111\na=rtpmap:111 opus/48000/2\n'), [{ media: 'audio', encodings: ['OPUS'], clockRate: 48000, channels: 2 }]);
  t.deepEqual(parseSdpMedia('m=audio 0 RTP/AVP 97\na=rtpmap:98 MPEG4-GENERIC/16000/1\n'), [
    { media: 'audio', encodings: ['MPEG4-GENERIC'], clockRate: 16000, channels: 1 },
  ]);
  t.deepEqual(parseSdpMedia('m=audio 0 RTP/AVP 97\n'), [{ media: 'audio', encodings: [] }]);
  t.deepEqual(parseSdpMedia('garbage\na=rtpmap:96 H264/90000\n'), []);
});

test('SDP: both views read one parse (rtsp/sdp-tracks.ts): the same static names, and a line without its value takes nothing from the next', (t) => {
  const sdp = 'v=0\r\nm=audio 0 RTP/AVP 9\r\na=rtpmap:9\r\na=fmtp:9\r\na=control:track1\r\nm=video\r\nc=IN IP4 0.0.0.0\r\n';
  t.deepEqual(parseSdpMedia(sdp), [{ media: 'audio', encodings: ['G722'], clockRate: 8000, channels: 1 }]);
  t.deepEqual(parseSdpTracks(sdp, 'rtsp://cam/live/'), [
    { media: 'audio', payloadType: 9, encoding: 'G722', clockRate: 8000, channels: 1, fmtp: '', control: 'rtsp://cam/live/track1' },
  ]);
});
