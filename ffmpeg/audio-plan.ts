/**
 * What one ingest attempt does with the camera's audio. Rule (issue 12): audio that
 * cannot be stored as it is never costs the video.
 *
 * - AAC (`MPEG4-GENERIC`, `MP4A-LATM` in the SDP) is copied: fMP4 and our PS carry it.
 * - Any other audio (G.711 A/µ-law, G.722, G.726, Opus, MP3/MPA, L16…) is transcoded to
 *   AAC-LC (`-c:a aac`) at a modest bitrate, keeping the sample rate (ffmpeg's AAC
 *   encoder takes 7.35–96 kHz, so 8 kHz G.711 stays 8 kHz; a rate it lacks is resampled
 *   to the nearest one it has). ffmpeg's MP4 muxer refuses G.711 outright (`Could not
 *   find tag for codec pcm_alaw`), and AAC is what players, MSE and PS all take.
 * - No DESCRIBE answer (nothing known): copied as sent; when the muxer then refuses the
 *   codec (that stderr line), the next attempts for that URL transcode it.
 * - An attempt with audio that fails before any video arrived makes the next attempt
 *   record video only (`-an`), as the smart-stream fallback does, when ffmpeg's words
 *   point at the audio (stream #0:1, a decoder or encoder that cannot start, video
 *   packets piling up while an announced audio track never sends). A failure without
 *   such words (e.g. nothing at all for the stall timeout, as a loaded camera or
 *   machine gives at start) counts against the audio only the second time in a row: a
 *   slow first attempt must not cost a camera its audio for the whole next session.
 *   Failures that are plainly the camera's (refused connection, an RTSP error status,
 *   TCP refused) never count.
 *
 * The state kept per URL lives as long as the process: an offline camera only
 * alternates harmlessly between attempts with and without audio.
 */
import type { InitInfo } from '../media/mp4/init-info.ts';
import type { SdpMedia } from '../rtsp/rtsp-describe.ts';

export type AudioStored = 'copy' | 'aac' | 'none';

/** What the camera's status says about its audio. */
export interface AudioStatus {
  /** ffmpeg's name of the codec the camera sends (`pcm_alaw`, `aac`, `opus`…); null: none or unknown. */
  source: string | null;
  /** `copy`: stored as sent; `aac`: transcoded to AAC; `none`: not stored. */
  stored: AudioStored;
  reason?: string;
}

export interface AudioPlan extends AudioStatus {
  /** Output options of the fMP4 output: stream maps and codecs. */
  outputOptions: string[];
}

/** SDP encoding names (RFC 3551/4566 registry, as ffmpeg's RTP demuxer maps them) → ffmpeg codec names. */
const SDP_AUDIO_CODECS: Record<string, string> = {
  'MPEG4-GENERIC': 'aac',
  'MP4A-LATM': 'aac',
  PCMA: 'pcm_alaw',
  PCMU: 'pcm_mulaw',
  G722: 'adpcm_g722',
  'G726-16': 'adpcm_g726le',
  'G726-24': 'adpcm_g726le',
  'G726-32': 'adpcm_g726le',
  'G726-40': 'adpcm_g726le',
  'AAL2-G726-16': 'adpcm_g726',
  'AAL2-G726-24': 'adpcm_g726',
  'AAL2-G726-32': 'adpcm_g726',
  'AAL2-G726-40': 'adpcm_g726',
  OPUS: 'opus',
  MPA: 'mp3',
  L16: 'pcm_s16be',
  L24: 'pcm_s24be',
  L8: 'pcm_u8',
  GSM: 'gsm',
  G723: 'g723_1',
  G729: 'g729',
  AMR: 'amr_nb',
  'AMR-WB': 'amr_wb',
  SPEEX: 'speex',
  VORBIS: 'vorbis',
  AC3: 'ac3',
};

/** Audio stored as sent (ffmpeg names). */
const COPIED = new Set(['aac']);

const VIDEO_MAP = ['-map', '0:v:0'];
/** The command every camera got before audio plans existed: first audio track optional, all copied. */
const COPY_OPTIONS = [...VIDEO_MAP, '-map', '0:a:0?', '-c', 'copy'];
const NONE_OPTIONS = [...VIDEO_MAP, '-c', 'copy', '-an'];

/** The attempt with audio got no video: the next one for this key goes without. */
const audioAttemptFailed = new Set<string>();
/** Attempts with audio in a row that got no video for no reason ffmpeg named. */
const unexplainedFailures = new Map<string, number>();
/** Unexplained failures in a row after which the audio is left out once. */
const UNEXPLAINED_LIMIT = 2;
/** The MP4 muxer refused the copied audio codec (stderr named it): transcode from now on. */
const muxRefused = new Map<string, string>();

/** ffmpeg's codec name for an SDP audio encoding (lower-cased name when unknown). */
export function sdpAudioCodec(encoding: string): string {
  return SDP_AUDIO_CODECS[encoding.toUpperCase()] ?? encoding.toLowerCase();
}

/** AAC bitrate for a source: 32 kbit/s up to 16 kHz (telephone audio), 64 above, 96 for stereo. */
export function aacBitrate(clockRate: number | undefined, channels: number | undefined): number {
  if (clockRate !== undefined && clockRate <= 16_000) return 32_000;
  return (channels ?? 1) >= 2 ? 96_000 : 64_000;
}

function transcode(source: string, bitrate: number, reason: string): AudioPlan {
  return {
    source,
    stored: 'aac',
    reason,
    outputOptions: [...VIDEO_MAP, '-map', '0:a:0?', '-c:v', 'copy', '-c:a', 'aac', '-b:a', String(bitrate)],
  };
}

/**
 * The audio plan of one attempt. `key` names the camera stream across attempts (its
 * URL); `described` is the SDP of this attempt's DESCRIBE: null when it failed,
 * undefined when none was made (edge replay).
 */
export function planAudio(key: string, described: SdpMedia[] | null | undefined): AudioPlan {
  if (audioAttemptFailed.delete(key)) {
    const audio = described?.find((m) => m.media === 'audio');
    const source = audio?.encodings[0] ? sdpAudioCodec(audio.encodings[0]) : (muxRefused.get(key) ?? null);
    return { source, stored: 'none', reason: 'the previous attempt with audio got no video: this one records video only', outputOptions: NONE_OPTIONS };
  }
  const refused = muxRefused.get(key);
  if (described) {
    const audio = described.find((m) => m.media === 'audio');
    if (!audio) return { source: null, stored: 'none', reason: 'the camera sends no audio', outputOptions: COPY_OPTIONS };
    const encoding = audio.encodings[0];
    if (!encoding) {
      if (refused !== undefined) return transcode(refused, 64_000, 'the MP4 muxer refused it as sent');
      return { source: null, stored: 'copy', reason: 'the SDP does not name the audio codec: copied as sent', outputOptions: COPY_OPTIONS };
    }
    const source = sdpAudioCodec(encoding);
    if (COPIED.has(source) && refused === undefined) return { source, stored: 'copy', outputOptions: COPY_OPTIONS };
    return transcode(
      source,
      aacBitrate(audio.clockRate, audio.channels),
      COPIED.has(source) ? 'the MP4 muxer refused it as sent' : `${encoding} cannot be stored as it is in MP4`,
    );
  }
  if (refused !== undefined) return transcode(refused, 64_000, 'the MP4 muxer refused it as sent');
  return {
    source: null,
    stored: 'copy',
    reason: described === null ? 'no DESCRIBE answer: audio copied as the camera sends it' : 'audio copied as sent',
    outputOptions: COPY_OPTIONS,
  };
}

/** stderr of ffmpeg's MP4 muxer refusing a stream's codec: `Could not find tag for codec pcm_alaw in stream #1`. */
const MUX_REFUSED = /Could not find tag for codec (\w+) in stream #(\d+)/;
/**
 * Failures that are the camera's or the network's, not the audio's: the connection,
 * the RTSP dialogue (an error status to DESCRIBE/SETUP/PLAY, e.g. 401, 404, 461).
 */
const NOT_AUDIO =
  /Connection refused|Connection timed out|No route to host|Network is unreachable|Name or service not known|Connection reset|method \w+ failed|Server returned \d|\b(401|403|404|454|461)\b|Unsupported transport/i;
/**
 * ffmpeg naming the audio: the input's or the output's stream 1 (video is mapped first,
 * so audio is #0:1 on both sides), a decoder or encoder that cannot start, or video
 * piling up in the muxing queue while the audio encoder still waits for its first frame.
 */
const AUDIO_NAMED =
  /(stream|Stream) #?0:1\b|output stream 0:1|Decoder \(codec [^)]*\) not found|Error while opening (de|en)coder|Too many packets buffered for output stream/;

/**
 * Learns from an attempt that ended: `gotVideo` whether any fragment arrived,
 * `requested` whether we stopped it ourselves, `stderr` ffmpeg's last lines.
 */
export function noteAudioOutcome(key: string, plan: AudioPlan, outcome: { gotVideo: boolean; requested: boolean; stderr: string[] }): void {
  if (outcome.gotVideo) unexplainedFailures.delete(key);
  if (outcome.gotVideo || outcome.requested || plan.stored === 'none') return;
  const text = outcome.stderr.join('\n');
  const refused = MUX_REFUSED.exec(text);
  // Stream #1 of the fMP4 output is the audio (video is mapped first); #0 is the video's problem.
  if (refused && refused[2] === '1' && plan.stored === 'copy') {
    muxRefused.set(key, refused[1]!);
    return;
  }
  if (refused && refused[2] === '0') return;
  if (NOT_AUDIO.test(text)) return;
  const count = AUDIO_NAMED.test(text) ? UNEXPLAINED_LIMIT : (unexplainedFailures.get(key) ?? 0) + 1;
  if (count < UNEXPLAINED_LIMIT) {
    unexplainedFailures.set(key, count);
    return;
  }
  unexplainedFailures.delete(key);
  audioAttemptFailed.add(key);
}

/**
 * What was really stored, once ffmpeg wrote its init: the plan, corrected by the
 * tracks (a copy of unknown audio names the codec it turned out to be; a plan with
 * audio whose init has none says so).
 */
export function audioStatusFromInit(plan: AudioStatus, info: Pick<InitInfo, 'tracks'>): AudioStatus {
  const track = info.tracks.find((t) => t.kind === 'audio');
  const reason = plan.reason !== undefined ? { reason: plan.reason } : {};
  if (!track) {
    if (plan.stored === 'none') return { source: plan.source, stored: 'none', ...reason };
    return { source: plan.source, stored: 'none', reason: plan.source === null ? 'the camera sends no audio' : 'ffmpeg wrote no audio track' };
  }
  if (plan.stored === 'aac') return { source: plan.source, stored: 'aac', ...reason };
  const codec = track.codec.startsWith('mp4a.40') ? 'aac' : track.codec.toLowerCase();
  return { source: plan.source ?? codec, stored: 'copy', ...(plan.source === null && plan.reason ? { reason: plan.reason } : {}) };
}

/** Forgets what was learnt (tests). */
export function resetAudioMemory(): void {
  audioAttemptFailed.clear();
  unexplainedFailures.clear();
  muxRefused.clear();
}
