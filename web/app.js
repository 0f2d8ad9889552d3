// The recorder's web UI: cameras with status, a day timeline per camera, a player for
// recorded video (with trick-play controls and range download), live view, the
// selected camera's pictures (markers on the timeline, a strip of previews, the picture
// itself) and the nodes of a cluster.

import { apiFetch, apiJson, ApiError, getToken, setToken } from './api.js';
import { LivePlayer, RecordingPlayer, SessionPlayer } from './player.js';
import { Timeline, TYPE_COLORS } from './timeline.js';
import { FilesPanel } from './buckets.js';

const $ = (id) => document.getElementById(id);
const video = $('video');
const state = {
  cameras: [],
  selected: null,
  mode: 'idle', // 'live' | 'recording' | 'idle'
  dayFrom: 0,
  dayTo: 0,
  selection: null,
};

function showError(err) {
  const box = $('error');
  const code = err instanceof ApiError ? err.code : 'ERROR';
  box.textContent = `${code}: ${err.message}`;
  box.dataset.code = code;
  box.hidden = false;
  if (err instanceof ApiError && err.status === 401) $('token-form').hidden = false;
}

function clearError() {
  $('error').hidden = true;
  $('error').textContent = '';
  delete $('error').dataset.code;
}

function note(text) {
  $('video-note').textContent = text;
}

// video.dataset.mode / .started say what the element shows (for people debugging and for tests).
const onRecordingState = (s) => {
  if (s === 'playing') video.dataset.started = '1';
  else if (s.startsWith('end')) note(`${$('video-note').textContent.split(' — ')[0]} — end of recorded video`);
  updatePlayButton();
};
// Recorded video goes through a WebSocket playback session; /play when the server has none.
const session = new SessionPlayer(video, showError, onRecordingState);
const recording = new RecordingPlayer(video, showError, onRecordingState);
let recorded = session;
const live = new LivePlayer(video, showError, note);

const timeline = new Timeline($('timeline'), {
  onPlay: (camera, ms) => playRecording(camera, ms),
  onSelect: (camera, fromMs, toMs) => selectRange(camera, fromMs, toMs),
  onHover: (camera, ms, x) => hover(camera, ms, x),
  onLeave: () => ($('hover').hidden = true),
  onPicture: (camera, id) => {
    const p = (state.rows || []).find((r) => r.camera === camera)?.pictures?.find((x) => x.id === id);
    if (p) openPicture(p);
  },
});

// ---- day and cameras --------------------------------------------------------------

function localDayBounds(value) {
  const [y, m, d] = value.split('-').map(Number);
  return [new Date(y, m - 1, d).getTime(), new Date(y, m - 1, d + 1).getTime()];
}

function todayValue() {
  const now = new Date();
  return `${now.getFullYear()}-${String(now.getMonth() + 1).padStart(2, '0')}-${String(now.getDate()).padStart(2, '0')}`;
}

function setDay(value) {
  [state.dayFrom, state.dayTo] = localDayBounds(value);
  timeline.setDay(state.dayFrom, state.dayTo);
  refreshTimeline();
}

async function refreshCameras() {
  try {
    const { cameras } = await apiJson('/api/cameras');
    state.cameras = cameras;
    $('token-form').hidden = true;
    if (!state.selected && cameras.length) selectCamera(cameras[0].id, true);
    renderCameras();
    return true;
  } catch (err) {
    showError(err);
    return false;
  }
}

function renderCameras() {
  const ul = $('cameras');
  ul.replaceChildren(
    ...state.cameras.map((c) => {
      const li = document.createElement('li');
      li.dataset.camera = c.id;
      li.className = c.id === state.selected ? 'selected' : '';
      const name = document.createElement('span');
      name.textContent = c.name || c.id;
      const status = document.createElement('span');
      status.className = `status status-${c.status}`;
      status.textContent = c.status;
      if (c.lastError) status.title = c.lastError;
      li.append(name, status);
      li.addEventListener('click', () => selectCamera(c.id, true));
      return li;
    }),
  );
  if (!state.cameras.length) {
    const li = document.createElement('li');
    li.textContent = 'no cameras';
    ul.append(li);
  }
}

function selectCamera(id, startLive) {
  state.selected = id;
  timeline.selectedCamera = id;
  renderCameras();
  timeline.render();
  renderPictures();
  if (startLive) startLive_();
}

async function refreshTimeline() {
  const from = new Date(state.dayFrom).toISOString();
  const to = new Date(state.dayTo).toISOString();
  const rows = await Promise.all(
    state.cameras.map(async (c) => {
      const q = new URLSearchParams({ camera: c.id, from, to });
      const [recordings, pictures] = await Promise.allSettled([
        apiJson(`/api/recordings?${q}`),
        apiJson(`/api/pictures?${new URLSearchParams({ camera: c.id, from, to, limit: String(PICTURES_PER_DAY) })}`),
      ]);
      // Pictures are a layer over the video: a failed picture search leaves the row as it is.
      const pics = pictures.status === 'fulfilled' ? pictures.value : { pictures: [], next: null };
      const row = { camera: c.id, name: c.name || c.id, pictures: pics.pictures, picturesMore: pics.next !== null };
      if (recordings.status === 'fulfilled') return { ...row, data: recordings.value };
      return { ...row, data: null, error: `${recordings.reason.code}: ${recordings.reason.message}` };
    }),
  );
  state.rows = rows;
  timeline.setRows(rows);
  renderPictures();
}

// ---- pictures -------------------------------------------------------------------------

/** Markers drawn per camera and day: the first this many (one page of the search). */
const PICTURES_PER_DAY = 1000;
/** Previews in the strip under the timeline: the newest of the day's pictures. */
const PICTURES_IN_STRIP = 24;
const previewUrls = new Map(); // picture id → blob URL of its 160 px preview
let pictureUrl = null;
let pictureShown = null;

/** A blob URL of an API resource (through apiFetch, so a token reaches it too). */
async function blobUrl(path) {
  const res = await apiFetch(path);
  return URL.createObjectURL(await res.blob());
}

function renderPictures() {
  const row = (state.rows || []).find((r) => r.camera === state.selected);
  const pictures = row?.pictures ?? [];
  $('pictures-count').textContent = row?.picturesMore ? `(the first ${pictures.length} of the day)` : `(${pictures.length})`;
  const shown = pictures.slice(-PICTURES_IN_STRIP).reverse();
  const box = $('pictures');
  const ids = `${state.selected}:${shown.map((p) => p.id).join(',')}`;
  if (box.dataset.ids === ids) return; // unchanged: keep the previews already loaded
  box.dataset.ids = ids;
  for (const [id, url] of previewUrls) {
    if (!shown.some((p) => p.id === id)) {
      URL.revokeObjectURL(url);
      previewUrls.delete(id);
    }
  }
  if (!shown.length) {
    box.textContent = 'no pictures on this day';
    return;
  }
  box.replaceChildren(
    ...shown.map((p) => {
      const b = document.createElement('button');
      b.className = 'picture-thumb';
      b.dataset.id = p.id;
      b.title = `${p.type} ${new Date(p.at).toLocaleString()}`;
      const img = document.createElement('img');
      img.alt = p.type;
      const cap = document.createElement('span');
      cap.textContent = `${new Date(p.at).toLocaleTimeString()} ${p.type}`;
      b.append(img, cap);
      b.addEventListener('click', () => openPicture(p));
      const have = previewUrls.get(p.id);
      if (have) img.src = have;
      else
        blobUrl(`/api/pictures/${encodeURIComponent(p.id)}?width=160`)
          .then((url) => {
            previewUrls.set(p.id, url);
            img.src = url;
          })
          .catch(() => b.classList.add('failed')); // the caption still names it
      return b;
    }),
  );
}

async function openPicture(p) {
  clearError();
  try {
    const url = await blobUrl(`/api/pictures/${encodeURIComponent(p.id)}`);
    if (pictureUrl) URL.revokeObjectURL(pictureUrl);
    pictureUrl = url;
    pictureShown = p;
    $('picture-img').src = url;
    $('picture-view').dataset.id = p.id;
    const meta = Object.entries(p.meta || {}).map(([k, v]) => `${k}=${v}`);
    $('picture-caption').textContent = [p.camera, new Date(p.at).toLocaleString(), p.type, ...meta, `${p.bytes} bytes`].join(' · ');
    showLock(p);
    $('picture-download').href = url;
    $('picture-download').download = `${p.id}.jpg`;
    $('picture-view').hidden = false;
  } catch (err) {
    showError(err);
  }
}

/** The lock button says what a click does: lock, or unlock a picture whose lock holds. */
function showLock(p) {
  const locked = p.lockedUntil !== undefined;
  $('picture-lock').textContent = locked ? 'Unlock' : 'Lock';
  $('picture-lock').title = locked
    ? `locked${p.lockedUntil ? ` until ${new Date(p.lockedUntil).toLocaleString()}` : ''}: click to unlock`
    : 'Lock: cover never removes a locked picture';
  $('picture-view').dataset.locked = locked ? '1' : '';
}

async function toggleLock() {
  const p = pictureShown;
  if (!p) return;
  try {
    const { picture } = await apiJson(`/api/pictures/${encodeURIComponent(p.id)}/lock`, {
      method: p.lockedUntil !== undefined ? 'DELETE' : 'POST',
      ...(p.lockedUntil !== undefined ? {} : { headers: { 'content-type': 'application/json' }, body: '{}' }),
    });
    pictureShown = { ...p, ...picture };
    if (picture.lockedUntil === undefined) delete pictureShown.lockedUntil;
    showLock(pictureShown);
    refreshTimeline();
  } catch (err) {
    showError(err);
  }
}

// ---- nodes (GET /api/cluster/nodes) -----------------------------------------------------

async function refreshNodes() {
  if ($('nodes-panel').hidden) return;
  try {
    const { cluster, nodes, copies } = await apiJson('/api/cluster/nodes');
    const copyWork = copies
      ? `; this node copied ${copies.copied} segments, ${copies.pending ?? '?'} announcements pending${copies.failed ? `, ${copies.failed} pulls retried` : ''}`
      : '';
    $('nodes-mode').textContent = cluster ? `(a cluster of ${nodes.length}${copyWork})` : '(a single node, not in a cluster)';
    $('nodes').tBodies[0].replaceChildren(
      ...nodes.map((n) => {
        const tr = document.createElement('tr');
        tr.dataset.node = n.node;
        const stateText = !n.alive ? 'dead' : n.draining ? 'draining' : 'alive';
        tr.className = `node-${stateText}`;
        const cells = [
          `${n.node}${n.self ? ' (this node)' : ''}`,
          `${stateText}${n.alive && n.missedTicks ? ` (${n.missedTicks} heartbeats missed)` : ''}${n.pressure ? `, under pressure: ${n.pressure}` : ''}${n.weight && n.weight !== 1 ? `, weight ${n.weight}` : ''}`,
          String(n.cameras.length),
          n.http ?? '',
        ];
        for (const text of cells) {
          const td = document.createElement('td');
          td.textContent = text;
          tr.append(td);
        }
        tr.children[2].title = n.cameras.join(', ');
        return tr;
      }),
    );
  } catch (err) {
    showError(err);
  }
}

// ---- playback -----------------------------------------------------------------------

function trickOptions() {
  return { speed: Number($('speed').value), reverse: $('reverse').checked, iframes: $('iframes').checked };
}

function playRecording(camera, ms) {
  clearError();
  if (camera !== state.selected) selectCamera(camera, false);
  live.stop();
  state.mode = 'recording';
  state.playFrom = ms;
  const o = trickOptions();
  video.dataset.mode = 'recording';
  video.dataset.started = '';
  video.dataset.speed = String(o.speed);
  $('live').classList.remove('active');
  note(`${new Date(ms).toLocaleTimeString()}${o.speed !== 1 ? ` ×${o.speed}` : ''}${o.reverse ? ' reverse' : ''}${o.iframes ? ' I-frames' : ''}`);
  if (recorded === session) {
    session.play(camera, ms, o).then((ok) => {
      if (ok || state.mode !== 'recording') return;
      recorded = recording;
      recording.play(camera, ms, o);
    });
  } else {
    recording.play(camera, ms, o);
  }
  video.dataset.via = recorded === session ? 'session' : 'play';
  $('play-pause').disabled = false;
}

function startLive_() {
  if (!state.selected) return;
  clearError();
  recording.stop();
  session.stop();
  state.mode = 'live';
  video.dataset.mode = 'live';
  video.dataset.started = '';
  $('live').classList.add('active');
  $('play-pause').disabled = false;
  note('connecting…');
  live.start(state.selected);
}

function restartWithOptions() {
  if (state.mode !== 'recording') return;
  const wall = recorded.wallAt(video.currentTime) ?? state.playFrom;
  playRecording(state.selected, wall);
}

function updatePlayButton() {
  $('play-pause').textContent = video.paused ? 'Play' : 'Pause';
}

// ---- jump to an analytics object (smart stream) -------------------------------------

/** Plays from the previous/next smart-stream packet naming the class (GET …/smart/next). */
async function jumpToObject(direction) {
  if (!state.selected) return;
  clearError();
  // From live view: start at the end of the recorded video (the smart stream is stored
  // before the GOP it belongs to, so "now" could name a time with no video yet).
  const row = (state.rows || []).find((r) => r.camera === state.selected);
  const lastSpan = row && row.data && row.data.spans.length ? row.data.spans[row.data.spans.length - 1] : null;
  const here = state.mode === 'recording' ? (recorded.wallAt(video.currentTime) ?? state.playFrom) : lastSpan ? Date.parse(lastSpan.to) : Date.now() - 5000;
  const q = new URLSearchParams({ [direction === 'next' ? 'after' : 'before']: new Date(here + (direction === 'next' ? 1000 : -1000)).toISOString() });
  const cls = $('smart-class').value.trim();
  if (cls) q.set('class', cls);
  try {
    const { record } = await apiJson(`/api/cameras/${encodeURIComponent(state.selected)}/smart/next?${q}`);
    const at = Date.parse(record.at);
    video.dataset.jumpedTo = record.at;
    playRecording(state.selected, at);
  } catch (err) {
    showError(err);
  }
}

// ---- range download and hover thumbnails ---------------------------------------------

function selectRange(camera, fromMs, toMs) {
  state.selection = { camera, fromMs, toMs };
  const q = new URLSearchParams({ from: new Date(fromMs).toISOString(), to: new Date(toMs).toISOString() });
  const a = $('download');
  a.href = `/api/cameras/${encodeURIComponent(camera)}/video.mp4?${q}`;
  a.download = `${camera}-${new Date(fromMs).toISOString().replace(/[:.]/g, '-')}.mp4`;
  a.textContent = `Download ${new Date(fromMs).toLocaleTimeString()}–${new Date(toMs).toLocaleTimeString()}`;
  a.hidden = false;
}

// With a token the browser cannot put it on a plain link: fetch, then save the blob.
$('download').addEventListener('click', async (e) => {
  const a = e.currentTarget;
  if (!getToken() || a.dataset.blob) return;
  e.preventDefault();
  try {
    const blob = await (await apiFetch(a.href)).blob();
    const url = URL.createObjectURL(blob);
    const tmp = document.createElement('a');
    tmp.href = url;
    tmp.download = a.download;
    tmp.click();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (err) {
    showError(err);
  }
});

let hoverTimer = null;
let hoverUrl = null;
function inSpan(camera, ms) {
  const row = (state.rows || []).find((r) => r.camera === camera);
  return !!row?.data?.spans?.some((s) => Date.parse(s.from) <= ms && ms < Date.parse(s.to));
}

function hover(camera, ms, x) {
  const box = $('hover');
  box.hidden = false;
  box.style.left = `${x}px`;
  $('hover-time').textContent = new Date(ms).toLocaleTimeString();
  clearTimeout(hoverTimer);
  const img = $('hover-img');
  if (!inSpan(camera, ms)) {
    img.hidden = true;
    return;
  }
  hoverTimer = setTimeout(async () => {
    try {
      const res = await apiFetch(`/api/cameras/${encodeURIComponent(camera)}/frame.jpg?at=${new Date(ms).toISOString()}&width=160`);
      const url = URL.createObjectURL(await res.blob());
      if (hoverUrl) URL.revokeObjectURL(hoverUrl);
      hoverUrl = url;
      img.src = url;
      img.hidden = false;
    } catch {
      img.hidden = true; // a thumbnail is a nicety: the time alone still shows
    }
  }, 150);
}

// ---- wiring ---------------------------------------------------------------------------

function renderLegend() {
  const items = [
    ...Object.entries(TYPE_COLORS).map(([t, c]) => [t, c]),
    ['gap', 'repeating-linear-gradient(45deg,#a33 0 3px,#2a1c1c 3px 6px)'],
    ['back-filled', '#2f6b4f'],
    ['lock', '#e0b020'],
    ['label', '#7fb8ff'],
  ];
  $('legend').replaceChildren(
    ...items.map(([name, color]) => {
      const s = document.createElement('span');
      const i = document.createElement('i');
      i.style.background = color;
      s.append(i, name);
      return s;
    }),
  );
}

$('day').value = todayValue();
$('day').addEventListener('change', () => setDay($('day').value));
// Zoom around the playhead, else around now when the day is today.
const zoomCenter = () => timeline.playheadMs ?? (Date.now() >= state.dayFrom && Date.now() < state.dayTo ? Date.now() : undefined);
$('zoom-in').addEventListener('click', () => timeline.zoom(0.5, zoomCenter()));
$('zoom-out').addEventListener('click', () => timeline.zoom(2, zoomCenter()));
$('zoom-reset').addEventListener('click', () => timeline.resetZoom());
$('live').addEventListener('click', () => startLive_());
$('smart-next').addEventListener('click', () => jumpToObject('next'));
$('smart-prev').addEventListener('click', () => jumpToObject('previous'));
$('play-pause').addEventListener('click', () => {
  const viaSession = state.mode === 'recording' && recorded === session && session.active;
  if (video.paused) {
    if (viaSession) session.resume();
    else video.play().catch((err) => showError(new ApiError(0, 'PLAY_FAILED', err.message)));
  } else if (viaSession) {
    session.pause();
  } else {
    video.pause();
  }
});
for (const id of ['speed', 'reverse', 'iframes']) $(id).addEventListener('change', restartWithOptions);
video.addEventListener('play', updatePlayButton);
video.addEventListener('pause', updatePlayButton);
video.addEventListener('error', () => showError(new ApiError(0, 'MEDIA_ERROR', video.error?.message || `media error ${video.error?.code}`)));
video.addEventListener('timeupdate', () => {
  const wall = state.mode === 'recording' ? recorded.wallAt(video.currentTime) : state.mode === 'live' ? Date.now() : null;
  $('position').textContent = wall ? new Date(wall).toLocaleString() : '';
  timeline.setPlayhead(state.mode === 'recording' ? wall : null);
});
$('error').addEventListener('click', clearError);
$('picture-close').addEventListener('click', () => ($('picture-view').hidden = true));
$('picture-lock').addEventListener('click', toggleLock);
$('picture-play').addEventListener('click', () => {
  if (pictureShown) playRecording(pictureShown.camera, Date.parse(pictureShown.at));
});
const files = new FilesPanel(
  {
    body: document.querySelector('#files tbody'),
    path: $('files-path'),
    up: $('files-up'),
    upload: $('files-upload'),
    more: $('files-more'),
    status: $('files-status'),
  },
  showError,
);
$('files-button').addEventListener('click', () => {
  $('files-panel').hidden = !$('files-panel').hidden;
  $('files-button').classList.toggle('active', !$('files-panel').hidden);
  if (!$('files-panel').hidden) void files.show();
});
$('nodes-button').addEventListener('click', () => {
  $('nodes-panel').hidden = !$('nodes-panel').hidden;
  $('nodes-button').classList.toggle('active', !$('nodes-panel').hidden);
  refreshNodes();
});
$('token-button').addEventListener('click', () => ($('token-form').hidden = !$('token-form').hidden));
$('token-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  setToken($('token').value.trim());
  clearError();
  if (await refreshCameras()) refreshTimeline();
});

renderLegend();
[state.dayFrom, state.dayTo] = localDayBounds($('day').value);
timeline.setDay(state.dayFrom, state.dayTo);
(async () => {
  if (await refreshCameras()) await refreshTimeline();
})();
// Status and the timeline follow what is being recorded.
setInterval(async () => {
  if (!$('token-form').hidden) return;
  if (await refreshCameras()) await refreshTimeline();
  await refreshNodes();
}, 5000);
