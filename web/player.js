// Players on one <video> through Media Source Extensions: recorded video from
// GET /api/cameras/:id/play (fetch, so the bearer token goes along) and live video
// from WS /api/cameras/:id/live. Errors are reported through onError, never swallowed.

import { apiFetch, ApiError, wsProtocols } from './api.js';

/** Appends fMP4 pieces to a SourceBuffer one at a time, trimming what lies far behind. */
class MseFeed {
  constructor(video, mimeType, onError) {
    if (!window.MediaSource || !MediaSource.isTypeSupported(mimeType)) {
      throw new ApiError(0, 'UNSUPPORTED_CODEC', `this browser cannot play ${mimeType}`);
    }
    this.video = video;
    this.mimeType = mimeType;
    this.onError = onError;
    this.queue = [];
    this.sb = null;
    this.started = false;
    this.current = null;
    this.closed = false;
    this.ms = new MediaSource();
    this.url = URL.createObjectURL(this.ms);
    video.src = this.url;
    this.opened = new Promise((resolve) =>
      this.ms.addEventListener(
        'sourceopen',
        () => {
          try {
            this.sb = this.ms.addSourceBuffer(mimeType);
            this.sb.addEventListener('updateend', () => {
              const done = this.current;
              this.current = null;
              done?.();
              this.pump();
            });
            this.sb.addEventListener('error', () => this.fail(new ApiError(0, 'MEDIA_ERROR', 'the browser refused a piece of video')));
          } catch (err) {
            this.fail(new ApiError(0, 'MEDIA_ERROR', err.message));
          }
          resolve();
          this.pump(); // pieces queued before the source opened, in order
        },
        { once: true },
      ),
    );
  }

  fail(err) {
    if (this.closed) return;
    this.onError(err);
  }

  /** Queues bytes; resolves once they are appended (so a fetch reader is paced by the player). */
  append(bytes) {
    return new Promise((resolve) => {
      this.queue.push({ bytes, resolve });
      this.pump();
    });
  }

  get backlog() {
    return this.queue.length;
  }

  /** Drops queued (not yet appended) pieces; for live, which would rather skip than lag. */
  dropQueued() {
    if (!this.started) return; // the init is still queued: never drop it
    for (const q of this.queue.splice(0)) q.resolve();
  }

  pump() {
    const sb = this.sb;
    // A MediaSource replaced under us (another feed took the element) has no buffers left.
    if (this.closed || !sb || this.ms.readyState !== 'open' || sb.updating || this.queue.length === 0) return;
    const v = this.video;
    // Keep the buffer small: remove what is more than 30 s behind the play position.
    if (sb.buffered.length && v.currentTime - sb.buffered.start(0) > 40) {
      try {
        sb.remove(0, v.currentTime - 30);
        return;
      } catch {
        // fall through and append
      }
    }
    // Keep at most a minute ahead of the play position: the fetch reader waits meanwhile.
    if (sb.buffered.length && sb.buffered.end(sb.buffered.length - 1) - v.currentTime > 60) {
      if (!this.waitingAhead) {
        this.waitingAhead = true;
        const again = () => {
          v.removeEventListener('timeupdate', again);
          v.removeEventListener('seeking', again);
          this.waitingAhead = false;
          this.pump();
        };
        v.addEventListener('timeupdate', again);
        v.addEventListener('seeking', again);
      }
      return;
    }
    const { bytes, resolve } = this.queue.shift();
    try {
      sb.appendBuffer(bytes);
      this.started = true; // the first piece (the init) has gone in
      this.current = resolve; // resolved at updateend: the reader waits for the player
    } catch (err) {
      if (err.name === 'QuotaExceededError' && sb.buffered.length) {
        this.queue.unshift({ bytes, resolve });
        try {
          sb.remove(0, Math.max(sb.buffered.start(0) + 1, v.currentTime - 5));
        } catch {
          resolve();
          this.fail(new ApiError(0, 'MEDIA_ERROR', 'player buffer full'));
        }
        return;
      }
      resolve();
      this.fail(new ApiError(0, 'MEDIA_ERROR', err.message));
    }
  }

  /** The start of what is buffered, for the first seek. */
  bufferedStart() {
    const b = this.video.buffered;
    return b.length ? b.start(0) : null;
  }

  end() {
    const finish = () => {
      if (this.closed || this.ms.readyState !== 'open') return;
      if (this.sb && this.sb.updating) {
        this.sb.addEventListener('updateend', finish, { once: true });
        return;
      }
      try {
        this.ms.endOfStream();
      } catch {
        // already ended
      }
    };
    finish();
  }

  close() {
    this.closed = true;
    this.dropQueued();
    this.current?.();
    this.current = null;
    URL.revokeObjectURL(this.url);
  }
}

/**
 * Recorded playback from /play. `wallAt(currentTime)` maps the player's clock back to
 * recorder time for the timeline's playhead.
 */
export class RecordingPlayer {
  constructor(video, onError, onState) {
    this.video = video;
    this.onError = onError;
    this.onState = onState || (() => undefined);
    this.abort = null;
    this.feed = null;
    this.anchor = null; // { wallMs, mediaSec, rate, reverse }
  }

  stop() {
    this.abort?.abort();
    this.abort = null;
    this.feed?.close();
    this.feed = null;
    this.anchor = null;
  }

  async play(camera, fromMs, { speed = 1, reverse = false, iframes = false } = {}) {
    this.stop();
    const abort = new AbortController();
    this.abort = abort;
    const q = new URLSearchParams({ from: new Date(fromMs).toISOString() });
    if (speed !== 1) q.set('speed', String(speed));
    if (reverse) q.set('reverse', '1');
    if (iframes) q.set('iframes', '1');
    const url = `/api/cameras/${encodeURIComponent(camera)}/play?${q}`;
    try {
      const res = await apiFetch(url, { signal: abort.signal });
      const mime = res.headers.get('content-type') || 'video/mp4';
      const recFrom = Date.parse(res.headers.get('x-recording-from') || '') || fromMs;
      const feed = new MseFeed(this.video, mime, (err) => this.onError(err));
      this.feed = feed;
      await feed.opened;
      const reader = res.body.getReader();
      let first = true;
      for (;;) {
        const { done, value } = await reader.read();
        if (done || abort.signal.aborted) break;
        await feed.append(value);
        if (first && feed.bufferedStart() !== null) {
          first = false;
          const start = feed.bufferedStart();
          this.video.currentTime = start;
          this.anchor = { wallMs: recFrom, mediaSec: start, rate: speed, reverse };
          this.video.play().catch((err) => this.onError(new ApiError(0, 'PLAY_FAILED', err.message)));
          this.onState('playing');
        }
      }
      if (!abort.signal.aborted) feed.end();
    } catch (err) {
      if (err.name === 'AbortError' || abort.signal.aborted) return;
      this.onError(err instanceof ApiError ? err : new ApiError(0, 'PLAYBACK_FAILED', err.message));
    }
  }

  wallAt(currentTime) {
    const a = this.anchor;
    if (!a) return null;
    const d = (currentTime - a.mediaSec) * 1000 * a.rate;
    return a.reverse ? a.wallMs - d : a.wallMs + d;
  }
}

/**
 * Live view over WebSocket: JSON {type:init,mimeType} then the binary init and
 * fragments. A MIME type the browser cannot decode (H.265 here) switches to the
 * server's transcoded preview (?preview=1). The player stays near the live edge.
 */
export class LivePlayer {
  constructor(video, onError, onNote) {
    this.video = video;
    this.onError = onError;
    this.onNote = onNote;
    this.ws = null;
    this.feed = null;
    this.expectInit = false;
    this.timer = null;
    this.stopped = true;
  }

  start(camera, preview = false) {
    this.stop();
    this.stopped = false;
    this.camera = camera;
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = `${proto}//${location.host}/api/cameras/${encodeURIComponent(camera)}/live${preview ? '?preview=1' : ''}`;
    const ws = new WebSocket(url, wsProtocols());
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
    };
    ws.onmessage = (e) => {
      if (this.ws !== ws) return;
      if (typeof e.data === 'string') this.onText(JSON.parse(e.data), preview);
      else this.onBinary(e.data);
    };
    ws.onclose = (e) => {
      if (this.ws !== ws || this.stopped) return;
      // A refused upgrade gives no body to a WebSocket: ask over HTTP for the typed error.
      if (!opened) {
        apiFetch(url.replace(/^ws/, 'http')).then(
          () => this.onError(new ApiError(0, 'LIVE_FAILED', 'live connection refused')),
          (err) => this.onError(err),
        );
      } else if (e.code !== 1000) {
        this.onNote(`live closed (${e.reason || e.code})`);
      }
    };
    this.timer = setInterval(() => this.chaseEdge(), 1000);
  }

  onText(msg, preview) {
    if (msg.type === 'waiting') {
      this.onNote(preview ? 'starting preview…' : `camera ${msg.state}: waiting for video…`);
    } else if (msg.type === 'init') {
      if (!preview && !(window.MediaSource && MediaSource.isTypeSupported(msg.mimeType))) {
        this.onNote(`${msg.mimeType} cannot be decoded here: low-res preview`);
        this.start(this.camera, true);
        return;
      }
      this.feed?.close();
      try {
        this.feed = new MseFeed(this.video, msg.mimeType, (err) => this.onError(err));
      } catch (err) {
        this.onError(err);
        return;
      }
      this.expectInit = true;
      this.seeked = false;
      this.onNote(preview ? `LIVE preview ${msg.width}×${msg.height}` : 'LIVE');
    } else if (msg.type === 'ended') {
      this.onNote(`live ended: ${msg.reason}; waiting for the camera…`);
    } else if (msg.type === 'closed') {
      this.onNote(`live closed: ${msg.reason}`);
    }
  }

  onBinary(data) {
    const feed = this.feed;
    if (!feed) return;
    // Queued synchronously, so the init goes in before the fragments that follow it.
    if (this.expectInit) this.expectInit = false;
    else if (feed.backlog > 4) feed.dropQueued(); // the tab fell behind: skip to this GOP (each starts on a keyframe)
    feed.append(new Uint8Array(data)).then(() => {
      if (this.seeked || feed !== this.feed || feed.bufferedStart() === null) return;
      this.seeked = true;
      this.video.currentTime = feed.bufferedStart();
      this.video.play().catch((err) => this.onError(new ApiError(0, 'PLAY_FAILED', err.message)));
    });
  }

  /** Stays within a few seconds of the newest video; jumps over holes left by skipped GOPs. */
  chaseEdge() {
    const v = this.video;
    const b = v.buffered;
    if (!b.length) return;
    const end = b.end(b.length - 1);
    if (end - v.currentTime > 6) v.currentTime = Math.max(b.start(b.length - 1), end - 1.5);
    else {
      for (let i = 0; i < b.length; i++) {
        if (v.currentTime < b.start(i) - 0.05 && (i === 0 || v.currentTime >= b.end(i - 1) - 0.1)) {
          v.currentTime = b.start(i);
          break;
        }
      }
    }
  }

  stop() {
    this.stopped = true;
    clearInterval(this.timer);
    this.timer = null;
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000);
    }
    this.feed?.close();
    this.feed = null;
  }
}

/**
 * Recorded playback over a WebSocket playback session (WS /api/cameras/:id/playback):
 * the server paces the stream to real time, pause stops its sending, and a new
 * `play` with `from` (a click, a speed or direction change) continues the same media
 * timeline, so the SourceBuffer is kept while the MIME type stays the same.
 * `play` resolves false when the server has no such endpoint: the caller then falls
 * back to RecordingPlayer (/play).
 */
export class SessionPlayer {
  constructor(video, onError, onState) {
    this.video = video;
    this.onError = onError;
    this.onState = onState || (() => undefined);
    this.ws = null;
    this.camera = null;
    this.feed = null;
    this.anchor = null;
    this.seekTo = null;
    this.expectInit = false;
  }

  async play(camera, fromMs, { speed = 1, reverse = false, iframes = false } = {}) {
    const cmd = { cmd: 'play', from: new Date(fromMs).toISOString(), speed, reverse, iframes };
    if (this.ws && this.camera === camera && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(cmd));
      return true;
    }
    this.stop();
    this.camera = camera;
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const path = `/api/cameras/${encodeURIComponent(camera)}/playback`;
    const ws = new WebSocket(`${proto}//${location.host}${path}`, wsProtocols());
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    const opened = await new Promise((resolve) => {
      ws.onopen = () => resolve(true);
      ws.onclose = () => resolve(false);
    });
    if (this.ws !== ws) return true; // replaced meanwhile
    if (!opened) {
      this.ws = null;
      // A refused upgrade has no body: ask over HTTP why. No such route: fall back to /play.
      try {
        await apiFetch(path);
      } catch (err) {
        if (err.code === 'NOT_FOUND') return false;
        if (err.code !== 'VALIDATION_FAILED') {
          this.onError(err);
          return true;
        }
      }
      return false;
    }
    ws.onmessage = (e) => {
      if (this.ws !== ws) return;
      if (typeof e.data === 'string') this.onText(JSON.parse(e.data));
      else this.onBinary(e.data);
    };
    ws.onclose = (e) => {
      if (this.ws === ws && e.code !== 1000) this.onError(new ApiError(0, 'PLAYBACK_CLOSED', `playback session closed (${e.reason || e.code})`));
    };
    ws.send(JSON.stringify(cmd));
    return true;
  }

  onText(msg) {
    if (msg.type === 'init') {
      if (!this.feed || this.feed.mimeType !== msg.mimeType) {
        this.feed?.close();
        try {
          this.feed = new MseFeed(this.video, msg.mimeType, (err) => this.onError(err));
        } catch (err) {
          this.feed = null;
          this.onError(err);
          return;
        }
      }
      this.expectInit = true;
      this.seekTo = msg.mediaStart;
      this.anchor = { wallMs: Date.parse(msg.from), mediaSec: msg.mediaStart, rate: msg.speed, reverse: msg.reverse };
    } else if (msg.type === 'error') {
      this.onError(new ApiError(0, msg.error.code, msg.error.message));
    } else if (msg.type === 'end') {
      this.onState(`end: ${msg.reason}`);
    }
  }

  onBinary(data) {
    const feed = this.feed;
    if (!feed) return;
    this.expectInit = false;
    feed.append(new Uint8Array(data)).then(() => {
      if (feed !== this.feed || this.seekTo === null) return;
      const b = this.video.buffered;
      for (let i = 0; i < b.length; i++) {
        if (b.end(i) > this.seekTo + 0.05) {
          this.video.currentTime = Math.max(b.start(i), this.seekTo);
          this.seekTo = null;
          this.video.play().catch((err) => this.onError(new ApiError(0, 'PLAY_FAILED', err.message)));
          this.onState('playing');
          return;
        }
      }
    });
  }

  get active() {
    return !!this.ws;
  }

  pause() {
    this.ws?.send(JSON.stringify({ cmd: 'pause' }));
    this.video.pause();
  }

  resume() {
    this.ws?.send(JSON.stringify({ cmd: 'play' }));
    this.video.play().catch((err) => this.onError(new ApiError(0, 'PLAY_FAILED', err.message)));
  }

  wallAt(currentTime) {
    const a = this.anchor;
    if (!a) return null;
    const d = (currentTime - a.mediaSec) * 1000 * a.rate;
    return a.reverse ? a.wallMs - d : a.wallMs + d;
  }

  stop() {
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ cmd: 'stop' }));
      ws.close(1000);
    }
    this.feed?.close();
    this.feed = null;
    this.anchor = null;
    this.seekTo = null;
  }
}
