// Log-bucketed latency histogram: 1% relative resolution from 1 microsecond to ~30 minutes,
// small enough to ship from every worker to the parent and merge there.
const PER_E = 100; // buckets per factor e
const SIZE = 2200;

export class Histogram {
  constructor() {
    this.counts = new Float64Array(SIZE);
    this.total = 0;
    this.sum = 0;
    this.max = 0;
  }

  record(ms) {
    const us = ms > 0 ? ms * 1000 : 0;
    const idx = us < 1 ? 0 : Math.min(SIZE - 1, 1 + Math.floor(Math.log(us) * PER_E));
    this.counts[idx] += 1;
    this.total += 1;
    this.sum += ms > 0 ? ms : 0;
    if (ms > this.max) this.max = ms;
  }

  toJSON() {
    const pairs = [];
    for (let i = 0; i < SIZE; i++) if (this.counts[i]) pairs.push([i, this.counts[i]]);
    return { pairs, total: this.total, sum: this.sum, max: this.max };
  }

  merge(json) {
    for (const [i, c] of json.pairs) this.counts[i] += c;
    this.total += json.total;
    this.sum += json.sum;
    if (json.max > this.max) this.max = json.max;
  }

  // Value (ms) at quantile q, the geometric middle of its bucket.
  quantile(q) {
    if (!this.total) return null;
    const rank = Math.max(1, Math.ceil(q * this.total));
    let seen = 0;
    for (let i = 0; i < SIZE; i++) {
      seen += this.counts[i];
      if (seen >= rank) return i === 0 ? 0 : Math.min(this.max, Math.exp((i - 0.5) / PER_E) / 1000);
    }
    return this.max;
  }
}
