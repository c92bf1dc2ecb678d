// Hand-written canvas line charts: a fixed time window, one line per series, and
// vertical markers for faults and actions so cause and effect line up on the time axis.
// No dependency: a few hundred points per chart need nothing more.

const PALETTE = ['#58a6ff', '#3fb950', '#d29922', '#f85149', '#bc8cff', '#39c5cf', '#ff7b72', '#e3b341'];
const MARKER_COLOURS = { fault: '#f85149', action: '#3fb950' };

export class LineChart {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{title: string, unit?: string, windowMs?: number, min?: number, format?: (v: number) => string}} opts
   */
  constructor(canvas, opts) {
    this.canvas = canvas;
    this.title = opts.title;
    this.unit = opts.unit ?? '';
    this.windowMs = opts.windowMs ?? 3 * 60 * 1000;
    this.min = opts.min ?? 0;
    this.format = opts.format ?? ((v) => (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(1)));
    /** @type {Map<string, {colour: string, points: Array<[number, number|null]>}>} */
    this.series = new Map();
    /** @type {Array<{ts: number, kind: string, label: string}>} */
    this.markers = [];
    this.pushes = 0;
  }

  /** One sample: `values` maps a series name to a number or null (a gap). */
  push(ts, values) {
    for (const [name, v] of Object.entries(values)) {
      let s = this.series.get(name);
      if (!s) {
        s = { colour: PALETTE[this.series.size % PALETTE.length], points: [] };
        this.series.set(name, s);
      }
      s.points.push([ts, typeof v === 'number' && Number.isFinite(v) ? v : null]);
    }
    const oldest = ts - this.windowMs;
    for (const s of this.series.values()) {
      while (s.points.length && s.points[0][0] < oldest) s.points.shift();
    }
    this.pushes += 1;
    this.now = ts;
    // What a test (or a curious person) can read without decoding pixels.
    this.canvas.dataset.samples = String(this.pushes);
    const first = this.series.values().next().value;
    const last = first?.points.at(-1)?.[1];
    this.canvas.dataset.last = last == null ? '' : String(last);
    this.draw();
  }

  setMarkers(markers) {
    this.markers = markers;
    this.canvas.dataset.markers = String(markers.length);
    this.draw();
  }

  draw() {
    const c = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const w = c.clientWidth || c.width;
    const h = c.clientHeight || c.height;
    if (c.width !== Math.round(w * ratio)) { c.width = Math.round(w * ratio); c.height = Math.round(h * ratio); }
    const g = c.getContext('2d');
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, w, h);
    const pad = { l: 44, r: 8, t: 20, b: 18 };
    const pw = w - pad.l - pad.r;
    const ph = h - pad.t - pad.b;
    const end = this.now ?? Date.now();
    const start = end - this.windowMs;
    // At least one unit of scale: an all-zero error rate should read 0 to 1, not 0 to 0.
    let max = this.min + 1;
    for (const s of this.series.values()) {
      for (const [, v] of s.points) if (v != null && v > max) max = v;
    }
    max = niceCeil(max);
    const x = (ts) => pad.l + ((ts - start) / this.windowMs) * pw;
    const y = (v) => pad.t + ph - ((v - this.min) / (max - this.min)) * ph;

    g.font = '11px system-ui, sans-serif';
    g.fillStyle = '#d8dee6';
    const title = this.title + (this.unit ? ` (${this.unit})` : '');
    g.fillText(title, pad.l, 13);
    // Grid and y labels.
    g.strokeStyle = '#2a323c';
    g.fillStyle = '#8893a0';
    g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const v = this.min + ((max - this.min) * i) / 4;
      const yy = Math.round(y(v)) + 0.5;
      g.beginPath(); g.moveTo(pad.l, yy); g.lineTo(pad.l + pw, yy); g.stroke();
      g.fillText(this.format(v), 2, yy + 4);
    }
    // Time labels: one a minute.
    for (let t = Math.ceil(start / 60000) * 60000; t <= end; t += 60000) {
      const xx = x(t);
      const d = new Date(t);
      g.fillText(`${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`, xx - 14, h - 4);
    }
    // Markers.
    for (const m of this.markers) {
      if (m.ts < start || m.ts > end) continue;
      const xx = Math.round(x(m.ts)) + 0.5;
      g.strokeStyle = MARKER_COLOURS[m.kind] ?? '#8893a0';
      g.setLineDash([3, 3]);
      g.beginPath(); g.moveTo(xx, pad.t); g.lineTo(xx, pad.t + ph); g.stroke();
      g.setLineDash([]);
    }
    // Lines.
    let lx = pad.l + g.measureText(title).width + 16;
    for (const [name, s] of this.series) {
      g.strokeStyle = s.colour;
      g.lineWidth = 1.5;
      g.beginPath();
      let pen = false;
      for (const [ts, v] of s.points) {
        if (v == null) { pen = false; continue; }
        if (pen) g.lineTo(x(ts), y(v)); else { g.moveTo(x(ts), y(v)); pen = true; }
      }
      g.stroke();
      if (this.series.size > 1) {
        g.fillStyle = s.colour;
        g.fillText(name, lx, 13);
        lx += g.measureText(name).width + 12;
      }
    }
  }
}

function niceCeil(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}
