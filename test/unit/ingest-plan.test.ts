/**
 * What an ingest attempt does with the camera's audio and which RTSP transport it asks
 * for, and what it learns from a failed attempt (ffmpeg/audio-plan.ts,
 * rtsp/rtsp-transport.ts). The real cameras are in test/camera-matrix.test.ts.
 */
import test from 'ava';
import { aacBitrate, audioStatusFromInit, noteAudioOutcome, planAudio, resetAudioMemory, sdpAudioCodec } from '../../ffmpeg/audio-plan.ts';
import { chooseTransport, noteTransportOutcome, resetTransportMemory, transportSetting } from '../../rtsp/rtsp-transport.ts';
import { parseSdpMedia } from '../../rtsp/rtsp-describe.ts';
import { cameraPutSchema } from '../../services/schemas.ts';

const sdp = (audio: string): ReturnType<typeof parseSdpMedia> => parseSdpMedia(`m=video 0 RTP/AVP 96\na=rtpmap:96 H264/90000\n${audio}`);
const failed = (stderr: string[]): { gotVideo: boolean; requested: boolean; stderr: string[] } => ({ gotVideo: false, requested: false, stderr });

test.beforeEach(() => {
  resetAudioMemory();
  resetTransportMemory();
});

test.serial('AAC is copied; G.711, G.722, G.726, Opus, MP3, L16 are made AAC at a modest bitrate', (t) => {
  const aac = planAudio('a', sdp('m=audio 0 RTP/AVP 97\na=rtpmap:97 MPEG4-GENERIC/48000/1\n'));
  t.like(aac, { source: 'aac', stored: 'copy' });
  t.deepEqual(aac.outputOptions, ['-map', '0:v:0', '-map', '0:a:0?', '-c', 'copy'], 'the command cameras always got');
  t.like(planAudio('a', sdp('m=audio 0 RTP/AVP 98\na=rtpmap:98 MP4A-LATM/44100/2\n')), { source: 'aac', stored: 'copy' });
  for (const [line, source] of [
    ['m=audio 0 RTP/AVP 8\n', 'pcm_alaw'],
    ['m=audio 0 RTP/AVP 0\na=rtpmap:0 PCMU/8000\n', 'pcm_mulaw'],
    ['m=audio 0 RTP/AVP 9\n', 'adpcm_g722'],
    ['m=audio 0 RTP/AVP 97\na=rtpmap:97 G726-32/8000\n', 'adpcm_g726le'],
    ['m=audio 0 RTP/AVP 111\na=rtpmap:111 opus/48000/2\n', 'opus'],
    ['m=audio 0 RTP/AVP 14\n', 'mp3'],
    ['m=audio 0 RTP/AVP 11\n', 'pcm_s16be'],
  ] as const) {
    const plan = planAudio('a', sdp(line));
    t.like(plan, { source, stored: 'aac' }, line);
    const i = plan.outputOptions.indexOf('-c:a');
    t.is(plan.outputOptions[i + 1], 'aac', line);
    t.true(plan.outputOptions.includes('-b:a'), line);
    t.false(plan.outputOptions.includes('-ar'), 'the sample rate is kept');
  }
  t.is(aacBitrate(8000, 1), 32_000);
  t.is(aacBitrate(48000, 2), 96_000);
  t.is(sdpAudioCodec('speex'), 'speex');
  t.is(sdpAudioCodec('X-VENDOR'), 'x-vendor');
});

test.serial('a camera without audio: nothing to plan; the command is unchanged', (t) => {
  const plan = planAudio('a', sdp(''));
  t.like(plan, { source: null, stored: 'none' });
  t.deepEqual(plan.outputOptions, ['-map', '0:v:0', '-map', '0:a:0?', '-c', 'copy']);
  noteAudioOutcome('a', plan, failed(['anything']));
  t.like(planAudio('a', sdp('')), { stored: 'none', reason: 'the camera sends no audio' });
});

test.serial('an attempt with audio that got no video makes the next one video only, then audio is tried again', (t) => {
  const pcma = sdp('m=audio 0 RTP/AVP 8\n');
  const first = planAudio('cam', pcma);
  noteAudioOutcome('cam', first, failed(['Error while decoding stream #0:1: Invalid data found when processing input']));
  const second = planAudio('cam', pcma);
  t.like(second, { source: 'pcm_alaw', stored: 'none' });
  t.true(second.outputOptions.includes('-an'));
  t.false(second.outputOptions.some((o) => o.startsWith('0:a')));
  t.like(planAudio('cam', pcma), { stored: 'aac' }, 'the fallback is used once');
  t.like(planAudio('other', pcma), { stored: 'aac' }, 'per URL');
  for (const words of [
    'Too many packets buffered for output stream 0:0.',
    'Decoder (codec g729) not found for input stream #0:1',
    'Error initializing output stream 0:1 -- Error while opening encoder',
  ]) {
    noteAudioOutcome('named', planAudio('named', pcma), failed([words]));
    t.like(planAudio('named', pcma), { stored: 'none' }, words);
  }
});

test.serial('a failure that does not name the audio counts against it only the second time in a row', (t) => {
  const pcma = sdp('m=audio 0 RTP/AVP 8\n');
  const stall = failed(['ffmpeg was killed with signal SIGKILL: no fragment for 15489 ms']);
  noteAudioOutcome('cam', planAudio('cam', pcma), stall);
  t.like(planAudio('cam', pcma), { stored: 'aac' }, 'one slow start keeps the audio');
  noteAudioOutcome('cam', planAudio('cam', pcma), stall);
  t.like(planAudio('cam', pcma), { stored: 'none' }, 'twice in a row: video only');
  t.like(planAudio('cam', pcma), { stored: 'aac' });
  // Video in between starts the count again.
  noteAudioOutcome('cam', planAudio('cam', pcma), stall);
  noteAudioOutcome('cam', planAudio('cam', pcma), { gotVideo: true, requested: false, stderr: [] });
  noteAudioOutcome('cam', planAudio('cam', pcma), stall);
  t.like(planAudio('cam', pcma), { stored: 'aac' });
});

test.serial("the camera's own failures do not count against its audio", (t) => {
  const pcma = sdp('m=audio 0 RTP/AVP 8\n');
  for (const line of [
    '[tcp @ 0x1] Connection to tcp://127.0.0.1:1 failed: Connection refused',
    '[rtsp @ 0x1] method SETUP failed: 461 Unsupported transport',
    'Server returned 401 Unauthorized (authorization failed)',
    'method DESCRIBE failed: 404 Not Found',
  ]) {
    noteAudioOutcome('cam', planAudio('cam', pcma), failed([line]));
    t.like(planAudio('cam', pcma), { stored: 'aac' }, line);
  }
  noteAudioOutcome('cam', planAudio('cam', pcma), { gotVideo: true, requested: false, stderr: ['whatever'] });
  noteAudioOutcome('cam', planAudio('cam', pcma), { gotVideo: false, requested: true, stderr: [] });
  t.like(planAudio('cam', pcma), { stored: 'aac' }, 'video came, or we stopped it');
});

test.serial('no DESCRIBE answer: copied; the muxer refusing the codec makes the next attempts transcode it', (t) => {
  const first = planAudio('cam', null);
  t.like(first, { source: null, stored: 'copy' });
  noteAudioOutcome(
    'cam',
    first,
    failed([
      '[mp4 @ 0x5] Could not find tag for codec pcm_alaw in stream #1, codec not currently supported in container',
      'Could not write header for output file #0',
    ]),
  );
  const second = planAudio('cam', null);
  t.like(second, { source: 'pcm_alaw', stored: 'aac' });
  t.like(planAudio('cam', null), { stored: 'aac' }, 'remembered');
  // The transcoding attempt failing before video too: video only next.
  noteAudioOutcome('cam', second, failed(['Error while decoding stream #0:1']));

  t.like(planAudio('cam', null), { stored: 'none' });
  // A refused video codec (stream #0) is not the audio's problem.
  noteAudioOutcome('v', planAudio('v', null), failed(['Could not find tag for codec foo in stream #0']));
  t.like(planAudio('v', null), { stored: 'copy' });
});

test.serial('what was stored follows the init: copied unknown audio is named, a missing track is none', (t) => {
  const aacTrack = {
    tracks: [
      { id: 1, kind: 'video' as const, timescale: 90000, codec: 'avc1.4d401e' },
      { id: 2, kind: 'audio' as const, timescale: 8000, codec: 'mp4a.40.2' },
    ],
  };
  const videoOnly = { tracks: [aacTrack.tracks[0]!] };
  t.deepEqual(audioStatusFromInit(planAudio('x', sdp('m=audio 0 RTP/AVP 8\n')), aacTrack), {
    source: 'pcm_alaw',
    stored: 'aac',
    reason: 'PCMA cannot be stored as it is in MP4',
  });
  t.deepEqual(audioStatusFromInit(planAudio('x', null), aacTrack), {
    source: 'aac',
    stored: 'copy',
    reason: 'no DESCRIBE answer: audio copied as the camera sends it',
  });
  t.deepEqual(audioStatusFromInit(planAudio('x', null), videoOnly), { source: null, stored: 'none', reason: 'the camera sends no audio' });
  t.deepEqual(audioStatusFromInit(planAudio('x', sdp('m=audio 0 RTP/AVP 8\n')), videoOnly), {
    source: 'pcm_alaw',
    stored: 'none',
    reason: 'ffmpeg wrote no audio track',
  });
  t.deepEqual(audioStatusFromInit(planAudio('x', sdp('')), videoOnly), { source: null, stored: 'none', reason: 'the camera sends no audio' });
});

test.serial('transport: auto is TCP until the camera refuses it (461), then UDP for that URL; fixed settings are kept', (t) => {
  t.is(chooseTransport('u', 'auto'), 'tcp');
  t.false(noteTransportOutcome('u', 'auto', 'tcp', failed(['Connection refused'])));
  t.is(chooseTransport('u', 'auto'), 'tcp');
  t.true(noteTransportOutcome('u', 'auto', 'tcp', failed(['[rtsp @ 0x1] method SETUP failed: 461 Unsupported transport'])));
  t.is(chooseTransport('u', 'auto'), 'udp');
  t.is(chooseTransport('other', 'auto'), 'tcp');
  t.is(chooseTransport('u', 'tcp'), 'tcp', 'a fixed setting wins');
  t.is(chooseTransport('u', 'http'), 'http');
  // A camera that later refuses UDP gets TCP again.
  t.true(noteTransportOutcome('u', 'auto', 'udp', failed(['method SETUP failed: 461 Unsupported transport'])));
  t.is(chooseTransport('u', 'auto'), 'tcp');
  t.false(noteTransportOutcome('f', 'tcp', 'tcp', failed(['461 Unsupported transport'])), 'a fixed setting learns nothing');
  t.is(transportSetting({}), 'auto');
  t.is(transportSetting({ transport: 'udp' }), 'udp');
  t.is(transportSetting({ transport: 'bogus' }), 'auto');
});

test('the camera field transport: auto by default, one of auto/tcp/udp/http, anything else refused', (t) => {
  const base = { id: 'cam', streams: { main: 'rtsp://127.0.0.1/x' } };
  t.is(cameraPutSchema.parse(base).transport, 'auto');
  for (const v of ['auto', 'tcp', 'udp', 'http'] as const) t.is(cameraPutSchema.parse({ ...base, transport: v }).transport, v);
  for (const v of ['sctp', 'TCP', '', 1, null]) t.false(cameraPutSchema.safeParse({ ...base, transport: v }).success, String(v));
});
