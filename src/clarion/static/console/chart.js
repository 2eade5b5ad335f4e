// <console-chart>: a small SVG line chart of a few series over the last N samples.
//
// Why SVG of our own and not a charting library: the Live page draws at most four series of
// 120 points each, once a second. That is one <polyline> per series; a library (uPlot is the
// lightest good one, ~45 kB) would add a dependency to vendor and keep current for no visible
// gain, and the console, like the widget, ships with no build step.

const SVG = 'http://www.w3.org/2000/svg';
const W = 600;
const H = 150;
const PAD = 4;

/** @param {string} tag @param {Record<string, string | number>} attrs */
function svg(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

/** A number as people read it on a dashboard: 0, 12, 3.4k, 1.2M. */
export function compact(/** @type {number} */ n, digits = 1) {
  if (!Number.isFinite(n)) return '–';
  const abs = Math.abs(n);
  if (abs >= 1e6) return `${(n / 1e6).toFixed(digits)}M`;
  if (abs >= 1e4) return `${(n / 1e3).toFixed(digits)}k`;
  if (abs >= 100 || Number.isInteger(n)) return String(Math.round(n));
  return n.toFixed(digits);
}

export class ConsoleChart extends HTMLElement {
  constructor() {
    super();
    /** @type {{name: string, color: string, values: number[], dashed?: boolean}[]} */
    this.series = [];
    this.unit = '';
  }

  connectedCallback() {
    if (this.svg) return;
    this.classList.add('chart');
    const title = document.createElement('h2');
    title.textContent = this.getAttribute('label') || '';
    this.legend = document.createElement('div');
    this.legend.className = 'legend';
    this.svg = svg('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img' });
    this.svg.setAttribute('aria-label', this.getAttribute('label') || 'chart');
    this.max = document.createElement('span');
    this.max.className = 'chart-max';
    const frame = document.createElement('div');
    frame.className = 'chart-frame';
    frame.append(this.svg, this.max);
    this.append(title, frame, this.legend);
  }

  /**
   * @param {{name: string, color: string, values: number[], dashed?: boolean}[]} series
   * @param {string} unit
   * @param {number} capacity how many samples fill the width
   */
  draw(series, unit, capacity) {
    if (!this.svg || !this.legend || !this.max) return;
    const top = Math.max(1, ...series.flatMap((s) => s.values.filter(Number.isFinite)));
    const step = (W - 2 * PAD) / Math.max(1, capacity - 1);
    this.svg.replaceChildren();
    for (const y of [0.25, 0.5, 0.75]) {
      this.svg.append(svg('line', { x1: 0, x2: W, y1: H * y, y2: H * y, class: 'grid' }));
    }
    for (const s of series) {
      const start = capacity - s.values.length;
      const points = s.values
        .map((v, i) => `${(PAD + (start + i) * step).toFixed(1)},${(H - PAD - (Math.max(0, v) / top) * (H - 2 * PAD)).toFixed(1)}`)
        .join(' ');
      /** @type {Record<string, string | number>} */
      const line = { points, fill: 'none', stroke: s.color, 'stroke-width': 2, 'vector-effect': 'non-scaling-stroke', 'stroke-linejoin': 'round' };
      if (s.dashed) line['stroke-dasharray'] = '6 4'; // drawn over another series it may equal
      this.svg.append(svg('polyline', line));
    }
    this.max.textContent = `${compact(top)}${unit}`;
    this.legend.replaceChildren(
      ...series.map((s) => {
        const item = document.createElement('span');
        const dot = document.createElement('i');
        dot.style.background = s.color;
        const last = s.values.length ? s.values[s.values.length - 1] : NaN;
        item.append(dot, `${s.name} ${compact(last)}${unit}`);
        return item;
      }),
    );
  }
}

customElements.define('console-chart', ConsoleChart);
