// A day timeline, one row per camera, drawn as SVG from GET /api/recordings: spans
// coloured by record type (type runs), gaps by their back-fill state, locks and labels
// above, and the camera's pictures (GET /api/pictures) as dots coloured by their type.
// Click plays from that instant (or opens the picture under the pointer); drag selects
// a range; the wheel zooms.

const SVG = 'http://www.w3.org/2000/svg';
const ROW_H = 34;
const NAME_W = 90;
const AXIS_H = 18;

export const TYPE_COLORS = {
  timing: '#3d7be0',
  event: '#e07b3d',
  motion: '#e0a03d',
  alarm: '#e03d4f',
  vca: '#b05fe0',
  manual: '#3dc08a',
  backfill: '#7d8a99',
};

export function typeColor(type) {
  if (TYPE_COLORS[type]) return TYPE_COLORS[type];
  let h = 0;
  for (const c of String(type)) h = (h * 31 + c.charCodeAt(0)) % 360;
  return `hsl(${h} 60% 55%)`;
}

function el(name, attrs = {}, parent) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (parent) parent.appendChild(e);
  return e;
}

export class Timeline {
  /**
   * @param svg the <svg> element
   * @param handlers { onPlay(camera, ms), onSelect(camera, fromMs, toMs), onHover(camera, ms, x) , onLeave(), onPicture(camera, id) }
   */
  constructor(svg, handlers) {
    this.svg = svg;
    this.handlers = handlers;
    this.rows = []; // { camera, name, data: {spans, gaps} | null, error, pictures?: [{id, at, type}] }
    this.selectedCamera = null;
    this.dayFrom = 0;
    this.dayTo = 0;
    this.viewFrom = 0;
    this.viewTo = 0;
    this.playheadMs = null;
    this.selection = null; // { camera, fromMs, toMs }
    this.drag = null;
    svg.addEventListener('mousedown', (e) => this.onDown(e));
    window.addEventListener('mousemove', (e) => this.onMove(e));
    window.addEventListener('mouseup', (e) => this.onUp(e));
    svg.addEventListener('mouseleave', () => this.handlers.onLeave?.());
    svg.addEventListener(
      'wheel',
      (e) => {
        e.preventDefault();
        this.zoom(e.deltaY < 0 ? 0.5 : 2, this.xToMs(this.localX(e)));
      },
      { passive: false },
    );
    new ResizeObserver(() => this.render()).observe(svg);
  }

  setDay(fromMs, toMs) {
    this.dayFrom = this.viewFrom = fromMs;
    this.dayTo = this.viewTo = toMs;
    this.selection = null;
  }

  setRows(rows) {
    this.rows = rows;
    this.render();
  }

  zoom(factor, centerMs = (this.viewFrom + this.viewTo) / 2) {
    const span = Math.min(this.dayTo - this.dayFrom, Math.max(60_000, (this.viewTo - this.viewFrom) * factor));
    let from = centerMs - (centerMs - this.viewFrom) * (span / (this.viewTo - this.viewFrom));
    // Nothing is recorded after now: on today's timeline the view ends at most a tenth
    // of its width past now, so zooming in on "now" shows what was just recorded (just
    // after midnight, zooming at now would otherwise leave the past off the left edge).
    const latestEnd = Math.min(this.dayTo, Math.max(this.dayFrom + span, Date.now() + span / 10));
    from = Math.max(this.dayFrom, Math.min(from, latestEnd - span));
    this.viewFrom = from;
    this.viewTo = from + span;
    this.render();
  }

  resetZoom() {
    this.viewFrom = this.dayFrom;
    this.viewTo = this.dayTo;
    this.render();
  }

  setPlayhead(ms) {
    this.playheadMs = ms;
    const line = this.svg.querySelector('.playhead');
    if (!line) return;
    const visible = ms !== null && ms >= this.viewFrom && ms <= this.viewTo;
    line.setAttribute('visibility', visible ? 'visible' : 'hidden');
    if (visible) {
      const x = this.msToX(ms);
      line.setAttribute('x1', x);
      line.setAttribute('x2', x);
    }
  }

  get width() {
    return Math.max(200, this.svg.clientWidth || 800);
  }

  msToX(ms) {
    return NAME_W + ((ms - this.viewFrom) / (this.viewTo - this.viewFrom)) * (this.width - NAME_W);
  }

  xToMs(x) {
    return this.viewFrom + ((x - NAME_W) / (this.width - NAME_W)) * (this.viewTo - this.viewFrom);
  }

  localX(e) {
    return e.clientX - this.svg.getBoundingClientRect().left;
  }

  rowAt(e) {
    const y = e.clientY - this.svg.getBoundingClientRect().top - AXIS_H;
    const i = Math.floor(y / ROW_H);
    return i >= 0 && i < this.rows.length ? this.rows[i] : null;
  }

  onDown(e) {
    if (e.button !== 0) return;
    const picture = e.target instanceof Element ? e.target.closest('.picture') : null;
    if (picture) {
      this.handlers.onPicture?.(picture.getAttribute('data-camera'), picture.getAttribute('data-id'));
      return;
    }
    const row = this.rowAt(e);
    const x = this.localX(e);
    if (!row || x < NAME_W) return;
    this.drag = { camera: row.camera, x0: x, ms0: this.xToMs(x), moved: false };
  }

  onMove(e) {
    const inside = e.target instanceof Node && this.svg.contains(e.target);
    if (this.drag) {
      const x = this.localX(e);
      if (Math.abs(x - this.drag.x0) > 4) this.drag.moved = true;
      if (this.drag.moved) {
        const ms = Math.max(this.viewFrom, Math.min(this.viewTo, this.xToMs(x)));
        this.selection = { camera: this.drag.camera, fromMs: Math.min(ms, this.drag.ms0), toMs: Math.max(ms, this.drag.ms0) };
        this.render();
      }
      return;
    }
    if (!inside) return;
    const row = this.rowAt(e);
    const x = this.localX(e);
    if (row && x >= NAME_W) this.handlers.onHover?.(row.camera, this.xToMs(x), x);
    else this.handlers.onLeave?.();
  }

  onUp() {
    const d = this.drag;
    this.drag = null;
    if (!d) return;
    if (d.moved && this.selection) this.handlers.onSelect?.(this.selection.camera, this.selection.fromMs, this.selection.toMs);
    else this.handlers.onPlay?.(d.camera, d.ms0);
  }

  render() {
    const svg = this.svg;
    const w = this.width;
    const h = AXIS_H + Math.max(1, this.rows.length) * ROW_H + 4;
    svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
    svg.setAttribute('height', h);
    svg.replaceChildren();
    const defs = el('defs', {}, svg);
    for (const [id, color] of [
      ['gap-hatch', '#a33'],
      ['gap-hatch-busy', '#c90'],
    ]) {
      const p = el('pattern', { id, width: 6, height: 6, patternUnits: 'userSpaceOnUse', patternTransform: 'rotate(45)' }, defs);
      el('rect', { width: 6, height: 6, fill: '#2a1c1c' }, p);
      el('line', { x1: 0, y1: 0, x2: 0, y2: 6, stroke: color, 'stroke-width': 3 }, p);
    }
    if (this.viewTo <= this.viewFrom) return;

    // Hour (or finer) ticks in local time.
    const span = this.viewTo - this.viewFrom;
    const steps = [60_000, 5 * 60_000, 15 * 60_000, 3600_000, 3 * 3600_000];
    const step = steps.find((s) => span / s <= 12) ?? 3 * 3600_000;
    const first = Math.ceil(this.viewFrom / step) * step;
    for (let t = first; t <= this.viewTo; t += step) {
      const x = this.msToX(t);
      el('line', { class: 'tick', x1: x, x2: x, y1: AXIS_H - 4, y2: h }, svg);
      const label = el('text', { x: x + 2, y: AXIS_H - 6 }, svg);
      label.textContent = new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    }

    const clipX = (ms) => Math.max(NAME_W, Math.min(w, this.msToX(ms)));
    this.rows.forEach((row, i) => {
      const y = AXIS_H + i * ROW_H;
      const g = el('g', { class: 'row', 'data-camera': row.camera }, svg);
      el('rect', { class: `row-bg${row.camera === this.selectedCamera ? ' selected' : ''}`, x: 0, y, width: w, height: ROW_H - 2 }, g);
      const name = el('text', { class: 'row-name', x: 4, y: y + ROW_H / 2 + 4 }, g);
      name.textContent = row.name;
      if (row.error) {
        const t = el('text', { x: NAME_W + 4, y: y + ROW_H / 2 + 4, fill: '#f88' }, g);
        t.textContent = row.error;
        return;
      }
      const data = row.data;
      if (!data) return;
      const barY = y + 9;
      const barH = ROW_H - 14;
      for (const gap of data.gaps || []) {
        const a = clipX(Date.parse(gap.from));
        const b = clipX(Date.parse(gap.to));
        if (b <= a) continue;
        const r = el('rect', { class: 'gap', 'data-state': gap.state || 'open', x: a, y: barY, width: Math.max(1, b - a), height: barH }, g);
        el('title', {}, r).textContent = `gap ${gap.state || ''}${gap.reason ? `: ${gap.reason}` : ''}`;
      }
      for (const span of data.spans || []) {
        const a = clipX(Date.parse(span.from));
        const b = clipX(Date.parse(span.to));
        if (b < NAME_W || a > w) continue;
        const sg = el('g', { class: 'span', 'data-from': span.from, 'data-to': span.to }, g);
        const runs = span.types && span.types.length ? span.types : [{ type: 'timing', from: span.from, to: span.to }];
        for (const run of runs) {
          const ra = clipX(Date.parse(run.from));
          const rb = clipX(Date.parse(run.to));
          if (rb <= ra - 1) continue;
          const r = el(
            'rect',
            { class: 'run', 'data-type': run.type, x: ra, y: barY, width: Math.max(1, rb - ra), height: barH, fill: typeColor(run.type) },
            sg,
          );
          el('title', {}, r).textContent = `${run.type} ${new Date(run.from).toLocaleTimeString()}–${new Date(run.to).toLocaleTimeString()}`;
        }
        for (const lock of span.locks || []) {
          const la = clipX(Date.parse(lock.from));
          const lb = clipX(Date.parse(lock.to));
          const r = el('rect', { class: 'lock', x: la, y: y + 3, width: Math.max(2, lb - la), height: 4 }, sg);
          el('title', {}, r).textContent = `locked${lock.until ? ` until ${new Date(lock.until).toLocaleString()}` : ''}`;
        }
        for (const label of span.labels || []) {
          const la = clipX(Date.parse(label.from));
          const lb = clipX(Date.parse(label.to ?? label.from));
          const r = el('rect', { class: 'label', x: la, y: y + ROW_H - 6, width: Math.max(3, lb - la), height: 3 }, sg);
          el('title', {}, r).textContent = label.text ?? 'label';
        }
      }
      for (const p of row.pictures || []) {
        const at = Date.parse(p.at);
        if (at < this.viewFrom || at > this.viewTo) continue;
        const c = el(
          'circle',
          { class: 'picture', 'data-id': p.id, 'data-camera': row.camera, cx: this.msToX(at), cy: y + 5, r: 3.5, fill: typeColor(p.type) },
          g,
        );
        el('title', {}, c).textContent = `${p.type} picture ${new Date(at).toLocaleTimeString()}`;
      }
    });

    if (this.selection) {
      const i = this.rows.findIndex((r) => r.camera === this.selection.camera);
      if (i >= 0) {
        const a = clipX(this.selection.fromMs);
        const b = clipX(this.selection.toMs);
        el('rect', { class: 'selection', x: a, y: AXIS_H + i * ROW_H + 1, width: Math.max(1, b - a), height: ROW_H - 4 }, svg);
      }
    }
    el('line', { class: 'playhead', x1: 0, x2: 0, y1: AXIS_H - 4, y2: h, visibility: 'hidden' }, svg);
    this.setPlayhead(this.playheadMs);
  }
}
