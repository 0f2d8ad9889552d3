/** What a camera actor needs from the node, injected so tests can swap parts. */
import type { Logger } from '../lib/log.ts';
import type { Clock } from '../lib/time.ts';
import type { RecorderConfig } from '../lib/config.ts';
import type { RecorderIndex } from '../index/db.ts';
import type { FenceStamp, SegmentRecord } from '../index/records.ts';
import type { AlarmInput } from '../lib/alarms.ts';
import type { LivePublisher } from '../live/live-hub.ts';
import type { AudioStatus } from '../ffmpeg/audio-plan.ts';
import type { RtspTransport } from '../rtsp/rtsp-transport.ts';
import type { IngestReader } from '../ffmpeg/ffmpeg-ingest.ts';

/** What the running ingest does with the camera's stream, as status reports it. */
export interface IngestMedia {
  /** What happens to the camera's audio (ffmpeg/audio-plan.ts). */
  audio: AudioStatus;
  /** The RTSP transport in use (ffmpeg's, or the MP2P bridge's: tcp or udp); null when not known. */
  transportInUse: RtspTransport | null;
  /** Who reads the camera: ffmpeg, our own RTSP client (`native`) or the MP2P path. */
  ingest: IngestReader;
}

export interface CameraStatus {
  camera: string;
  state: CameraStateName;
  at: string;
  detail?: string;
  /** While recording: what happens to the audio, and the transport in use. */
  audio?: AudioStatus;
  transportInUse?: RtspTransport | null;
  ingest?: IngestReader;
}

export interface IngestAttempt {
  done: Promise<unknown>;
  stop: () => void;
}

export type CameraStateName = 'stopped' | 'connecting' | 'recording' | 'backoff';

export interface CameraDeps {
  config: RecorderConfig;
  index: RecorderIndex;
  clock: Clock;
  log: Logger;
  /** Publishes a status change; must never block or throw (NATS may be down). */
  publishStatus: (status: CameraStatus) => void;
  /** Raises an alarm (logged once, published on NATS); never blocks. */
  raiseAlarm: (alarm: AlarmInput) => void;
  /**
   * Registers one running ingest attempt of `camera` with its owner: `done` settles
   * once the attempt's segment is closed (a removal or shutdown awaits it), `stop`
   * ends it. The owner can thus end an attempt whose camera actor failed (xstate does
   * not stop the children of an actor that errored inside an action).
   */
  attempt: (camera: string, attempt: IngestAttempt) => void;
  onSegmentClosed?: (segment: SegmentRecord) => void;
  /** Live viewers of the running ingest (set by the supervisor). */
  live?: LivePublisher;
  /** In a cluster: the camera's fence token before each write, or CAMERA_FENCED (storage/segment-writer.ts `fence`). */
  fence?: (camera: string) => Promise<FenceStamp | undefined>;
}
