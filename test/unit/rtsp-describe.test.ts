/** The SDP reading behind the smart stream's data-track detection (media/rtsp-describe.ts). */
import test from 'ava';
import { hasDataTrack, parseSdpMedia } from '../../media/rtsp-describe.ts';

test('SDP: a data track is an m=application section', (t) => {
  const sdp = 'v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\nm=application 0 RTP/AVP 107\r\na=rtpmap:107 vnd.onvif.metadata/90000\r\n';
  const media = parseSdpMedia(sdp);
  t.deepEqual(media, [{ media: 'video', encodings: ['H264'] }, { media: 'application', encodings: ['VND.ONVIF.METADATA'] }]);
  t.true(hasDataTrack(media));
  t.false(hasDataTrack(parseSdpMedia('m=video 0 RTP/AVP 96\nm=audio 0 RTP/AVP 97\n')));
});
