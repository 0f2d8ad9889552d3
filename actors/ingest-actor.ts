/**
 * One ingest attempt as an xstate callback actor: starts ffmpeg, feeds its fragments
 * to a SegmentWriter, and reports back to the camera actor (IngestEvent). The camera
 * hands it its recording state as input and every change of it as a `RECORDING`
 * event; each fragment is judged against the latest (write, hold for pre-record, or
 * as which type). The cleanup function kills ffmpeg; the writer then closes its
 * segment when the pipe ends, and that close is registered with the owner
 * (`deps.attempt`) so a removal or shutdown can wait for it.
 *
 * This is the camera machine's `ingest` implementation, injected by the supervisor
 * (provideCamera); unit tests of the machine inject a fake instead.
 */
import { fromCallback } from 'xstate';
import { startCameraIngest } from '../ingest/camera-ingest.ts';
import { SegmentWriter } from '../storage/segment-writer.ts';
import { SmartWriter } from '../smart/smart-writer.ts';
import { fragmentUserData, videoSampleFormat, type VideoSampleFormat } from '../media/codec/sei-userdata.ts';
import type { Fmp4Chunk } from '../media/mp4/fmp4-splitter.ts';
import type { CameraDeps, IngestMedia } from './deps.ts';
import type { IngestPlan } from '../ffmpeg/ffmpeg-ingest.ts';
import { audioStatusFromInit } from '../ffmpeg/audio-plan.ts';
import { transportSetting } from '../rtsp/rtsp-transport.ts';
import { decide } from '../schedule/recording.ts';
import { segmentFormatOf } from '../storage/segment-format.ts';
import { RecorderError } from '../lib/errors.ts';
import { faultPoint } from '../lib/crash-point.ts';
import type { IngestCommand, IngestEvent, IngestInput, IngestLogic } from './camera-machine.ts';

export const ingestActor = (deps: CameraDeps): IngestLogic =>
  fromCallback<IngestCommand, IngestInput>(({ input, sendBack, receive }) => {
    const { camera } = input;
    let recording = input.recording;
    receive((command) => {
      recording = command.recording;
    });
    faultPoint('ingest.start', camera.id);
    const log = deps.log.child({ camera: camera.id });
    const url = camera.streams[input.stream] ?? camera.streams.main;
    // The camera's smart stream: data tracks split off by the same ffmpeg when it has
    // any, and SEI user data found in the video samples; stored apart and timed by the
    // video writer's anchor (smart/smart-writer.ts). Created on the first need.
    let smart: SmartWriter | null = null;
    const ensureSmart = (): SmartWriter =>
      (smart ??= new SmartWriter(camera.id, {
        index: deps.index,
        dataDir: deps.config.dataDir,
        clock: deps.clock,
        log,
        segmentMs: deps.config.segmentSeconds * 1000,
        wallMsAt: (sec) => writer.wallMsAt(sec),
        // Kept while video is written or may be (pre-record of event slots).
        keep: (ms) => {
          const d = decide(recording, ms);
          return d.write || d.preMs > 0;
        },
      }));
    let seiFormat: VideoSampleFormat | null = null;
    const scanSei = (chunk: Fmp4Chunk): void => {
      try {
        if (chunk.kind === 'init') {
          seiFormat = videoSampleFormat(chunk.bytes);
          return;
        }
        if (!seiFormat) return;
        const { messages, bad } = fragmentUserData(chunk, seiFormat);
        if (messages.length === 0 && bad === 0) return;
        const s = ensureSmart();
        if (bad > 0) s.countSkipped('badSei', `${bad} video samples with unreadable NAL units or SEI`, bad);
        const streamType = seiFormat.codec === 'h264' ? 0x1b : 0x24;
        for (const m of messages) s.addSei({ uuid: m.uuid, data: m.data, mediaSec: Number(m.decodeTicks) / m.timescale, streamType });
      } catch (err) {
        log.warn({ err }, 'smart stream: SEI scan failed'); // never the video's problem
      }
    };
    // The camera's format, else its pool's (read at each session start), else mp4.
    const format = segmentFormatOf(camera, deps.index.pools.get(camera.pool)?.format);
    const writer = new SegmentWriter(
      {
        ...camera,
        record: {
          stream: camera.streams[input.stream] ? input.stream : 'main',
          format,
        },
      },
      {
        index: deps.index,
        dataDir: deps.config.dataDir,
        clock: deps.clock,
        log,
        segmentMs: deps.config.segmentSeconds * 1000,
        syncMs: deps.config.syncSeconds * 1000,
        decide: (startMs) => decide(recording, startMs),
        onFirstFragment: (startMs) => {
          reported = media ?? null;
          sendBack({ type: 'INGEST.RECORDING', startMs, ...(media ? { media } : {}) } satisfies IngestEvent);
        },
        ...(deps.onSegmentClosed ? { onSegmentClosed: deps.onSegmentClosed } : {}),
        ...(deps.fence ? { fence: () => deps.fence!(camera.id) } : {}),
      },
      input.lastEndMs,
    );
    // This attempt's plan (transport, audio) and what its init showed: the status says it.
    let plan: IngestPlan | null = null;
    let media: IngestMedia | undefined;
    /** What the camera's status says (sent with INGEST.RECORDING, then INGEST.MEDIA); undefined before. */
    let reported: IngestMedia | null | undefined;
    let audioTrackId: number | null = null;
    let firstFragmentSeen = false;
    const noteMedia = (chunk: Fmp4Chunk): void => {
      if (!plan) return;
      if (chunk.kind === 'init') {
        media = { audio: audioStatusFromInit(plan.audio, chunk.info), transportInUse: plan.transport, ingest: plan.ingest };
        audioTrackId = chunk.info.tracks.find((tr) => tr.kind === 'audio')?.id ?? null;
        firstFragmentSeen = false;
        // A new init midway (an MP2P camera's AAC encoder failed): the status says so.
        if (reported !== undefined && JSON.stringify(media) !== JSON.stringify(reported)) {
          reported = media;
          log.info(media, 'ingest media changed');
          sendBack({ type: 'INGEST.MEDIA', media } satisfies IngestEvent);
        }
        return;
      }
      if (firstFragmentSeen || !media) return;
      firstFragmentSeen = true;
      // A camera may announce audio and send none (microphone off): the track stays empty.
      if (audioTrackId !== null && !chunk.moof.tracks.some((tr) => tr.trackId === audioTrackId && tr.sampleCount > 0)) {
        media = { ...media, audio: { ...media.audio, reason: 'the camera announces audio but sent none with the first GOP' } };
      }
      log.info(media, 'ingest media');
    };
    // Started last: anything above that throws (an index read) leaves no ffmpeg behind.
    const session = startCameraIngest({
      url,
      ffmpegPath: deps.config.ffmpegPath,
      stallTimeoutMs: deps.config.ingestTimeoutMs,
      // The writer's format (same rule): MP2P cameras keep G.711 only where it is stored as is.
      recordFormat: format,
      ingest: deps.config.ingest,
      onNotice: (level, message, details) => log[level](details, message),
      transport: transportSetting(camera),
      // What attempts learn (audio, transport) is this camera's: two cameras configured
      // on one URL must not count each other's failed attempts.
      memoryKey: `${camera.id} ${url}`,
      onPlan: (p) => {
        plan = p;
      },
      smart: {
        onDataTrack: (present, why) => {
          if (present) ensureSmart();
          else if (!why.startsWith('no data track')) log.info({ why }, 'smart stream: not split off in this attempt');
        },
        onBytes: (b) => smart?.feed(b),
      },
    });
    let stopped = false;

    const run = (async () => {
      let failure: Error | undefined;
      try {
        for await (const chunk of session.chunks) {
          // Live viewers see every GOP the camera sends, written or held (event slots);
          // once stopped, chunks still buffered are not theirs (a next attempt may run).
          if (!stopped) deps.live?.publish(camera.id, chunk);
          noteMedia(chunk);
          await writer.handle(chunk);
          scanSei(chunk);
        }
      } catch (err) {
        failure = err as Error;
        session.stop(); // a write error or corrupt stream ends this attempt
        if (err instanceof RecorderError && err.code === 'STORAGE_IO') {
          deps.raiseAlarm({ kind: 'write-error', camera: camera.id, pool: camera.pool, message: err.message });
        }
      }
      try {
        await writer.close();
      } catch (err) {
        failure ??= err as Error;
      }
      await (smart as SmartWriter | null)?.close().catch((err: unknown) => log.warn({ err }, 'smart stream: close failed'));
      const exit = await session.exited;
      if (stopped) return;
      const error = failure?.message ?? exit.error?.message ?? 'ingest ended';
      deps.live?.ended(camera.id, error);
      sendBack({ type: 'INGEST.EXITED', error, lastEndMs: writer.lastSeenEndMs ?? writer.lastEndMs } satisfies IngestEvent);
    })();
    const stop = (): void => {
      if (stopped) return;
      stopped = true;
      // Synchronous, so it reaches live viewers before a next attempt's init.
      deps.live?.ended(camera.id, 'ingest stopped');
      session.stop();
    };
    deps.attempt(camera.id, { done: run, stop });
    return stop;
  });
