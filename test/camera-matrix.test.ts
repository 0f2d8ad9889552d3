/**
 * Issue 12's camera matrix, the RTSP half: cameras as customers have them, through
 * real RTSP servers (sim/camera.py), one recorder and real ffmpeg. Every kind must
 * record video (a span in search), download as an MP4 that ffprobe reads with its video
 * and, where the camera had audio, an AAC track, play (`/play` and the HLS playlist,
 * decoded with video and the stored audio), and say in its status (HTTP and NATS) what
 * happens to its audio and which transport it uses.
 *
 *   AAC (copied) · G.711 A-law and µ-law (made AAC; once more recorded as PS) · G.722,
 *   G.726, Opus, MP3 (each made AAC at its own sample rate) · G.711
 *   announced and never sent (video only after two attempts) · no audio · H.264 with B-frames · H.265 · Motion JPEG · UDP-only (TCP refused with 461: auto
 *   falls back) · RTSP over HTTP · Basic and Digest authentication.
 *
 * All cameras run at once in one recorder (test/helpers/camera-matrix.ts), read by
 * ffmpeg (the default `ingest`); camera-matrix-native.test.ts runs the native client.
 */
import { cameraMatrix, type Kind } from './helpers/camera-matrix.ts';

const KINDS: Kind[] = [
  { id: 'aac', sim: 'plain', mount: 'h264aac', video: 'h264', audio: { source: 'aac', stored: 'copy' }, transportInUse: 'tcp' },
  { id: 'pcma', sim: 'plain', mount: 'h264pcma', video: 'h264', audio: { source: 'pcm_alaw', stored: 'aac' }, transportInUse: 'tcp' },
  { id: 'pcmu', sim: 'plain', mount: 'h264pcmu', video: 'h264', audio: { source: 'pcm_mulaw', stored: 'aac' }, transportInUse: 'tcp' },
  // Other codecs IP cameras and intercoms send: none fits MP4 as sent, each is made AAC.
  { id: 'g722', sim: 'plain', mount: 'h264g722', video: 'h264', audio: { source: 'adpcm_g722', stored: 'aac' }, transportInUse: 'tcp' },
  { id: 'g726', sim: 'plain', mount: 'h264g726', video: 'h264', audio: { source: 'adpcm_g726le', stored: 'aac' }, transportInUse: 'tcp' },
  { id: 'opus', sim: 'plain', mount: 'h264opus', video: 'h264', audio: { source: 'opus', stored: 'aac' }, transportInUse: 'tcp' },
  { id: 'mp3', sim: 'plain', mount: 'h264mp3', video: 'h264', audio: { source: 'mp3', stored: 'aac' }, transportInUse: 'tcp' },
  { id: 'pcma-ps', sim: 'plain', mount: 'h264pcma', format: 'ps', video: 'h264', audio: { source: 'pcm_alaw', stored: 'aac' }, transportInUse: 'tcp' },
  // Announces G.711 and sends none: ffmpeg's AAC encoder waits for a first frame and no
  // video comes out. Two such attempts in a row, and the next records video only.
  { id: 'silent', sim: 'plain', mount: 'h264pcmasilent', video: 'h264', audio: { source: 'pcm_alaw', stored: 'none' }, transportInUse: 'tcp' },
  { id: 'noaudio', sim: 'plain', mount: 'h264', video: 'h264', audio: { source: null, stored: 'none' }, transportInUse: 'tcp' },
  { id: 'bframes', sim: 'plain', mount: 'h264bframes', video: 'h264', audio: { source: null, stored: 'none' }, transportInUse: 'tcp' },
  { id: 'h265', sim: 'plain', mount: 'h265aac', video: 'hevc', audio: { source: 'aac', stored: 'copy' }, transportInUse: 'tcp' },
  { id: 'mjpeg', sim: 'plain', mount: 'mjpeg', video: 'mjpeg', audio: { source: null, stored: 'none' }, transportInUse: 'tcp' },
  // PS carries H.264/H.265 only: a Motion JPEG camera set to PS is recorded as fMP4.
  { id: 'mjpeg-ps', sim: 'plain', mount: 'mjpeg', format: 'ps', video: 'mjpeg', audio: { source: null, stored: 'none' }, transportInUse: 'tcp' },
  { id: 'udponly', sim: 'plain', mount: 'h264aacudp', video: 'h264', audio: { source: 'aac', stored: 'copy' }, transportInUse: 'udp' },
  { id: 'http', sim: 'plain', mount: 'h264aac', transport: 'http', video: 'h264', audio: { source: 'aac', stored: 'copy' }, transportInUse: 'http' },
  { id: 'basic', sim: 'basic', mount: 'h264aac', video: 'h264', audio: { source: 'aac', stored: 'copy' }, transportInUse: 'tcp' },
  { id: 'digest', sim: 'digest', mount: 'h264pcma', video: 'h264', audio: { source: 'pcm_alaw', stored: 'aac' }, transportInUse: 'tcp' },
];

cameraMatrix('camera-matrix', KINDS, { ingest: 'ffmpeg' });
