// Load generator: spreads N WebSocket connections over K worker processes (each well under the
// per-process file limit, and sharing the generator's CPU), and speaks JSON lines with the
// driver: commands on stdin, events on stdout. Run it pinned to the core the server does not use.
//
//   node main.mjs --workers K
//   stdin:  {"cmd":"connect","url":"ws://...","protocol":"plain|socketio|clarion","n":10000,
//            "tokensFile":null,"concurrency":200,"timeoutMs":15000,"retries":2,
//            "localAddresses":["127.0.0.2",...],   optional: worker i connects from address i % len
//            "cursor":"..."}   optional (clarion): resume from it, ready at `unread` after the replay
//           {"cmd":"arm","burst":1,"expect":20}          expect = payloads per connection (0: unknown)
//           {"cmd":"collect","timeoutMs":30000,"idleMs":3000}
//           {"cmd":"status"}  {"cmd":"close"}
//           soak (bench/soak.py): {"cmd":"soak"} (check every frame's seq from now on),
//           {"cmd":"churn","fraction":0.05,"concurrency":20} (reopen a share with its cursor),
//           {"cmd":"sample"} (counters, and histograms since the last sample), {"cmd":"verify"}
//   stdout: {"ev":"progress",...} {"ev":"connected",...} {"ev":"armed"} {"ev":"collected",...}
import { fork } from 'node:child_process';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { Histogram } from './histogram.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const K = Number(argv[argv.indexOf('--workers') + 1]) || 1;

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const workers = [];
for (let i = 0; i < K; i++) {
  const w = fork(path.join(here, 'worker.mjs'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  w.progress = { ok: 0, failed: 0 };
  workers.push(w);
}

let pending = null; // {ev, replies: [], resolve}
for (const w of workers) {
  w.on('message', (msg) => {
    if (msg.ev === 'progress') {
      w.progress = msg;
      const ok = workers.reduce((s, x) => s + x.progress.ok, 0);
      const failed = workers.reduce((s, x) => s + x.progress.failed, 0);
      emit({ ev: 'progress', ok, failed });
      return;
    }
    if (pending && msg.ev === pending.ev) {
      pending.replies.push(msg);
      if (pending.replies.length === workers.length) {
        const { replies, done } = pending;
        pending = null;
        done(replies);
      }
    }
  });
  w.on('exit', (code) => {
    if (code) emit({ ev: 'error', message: `worker exited with ${code}` });
  });
}

function all(ev, makeMsg) {
  return new Promise((done) => {
    pending = { ev, replies: [], done };
    workers.forEach((w, i) => w.send(makeMsg(i)));
  });
}

function sumBy(replies, key) {
  return replies.reduce((s, r) => s + r[key], 0);
}

// The generator's own load: CPU per worker and how late its event loops ran, so that the driver
// can say when a figure is the generator's limit rather than the server's.
function generatorLoad(replies) {
  return {
    workerCpuMs: replies.map((r) => r.cpuMs),
    loopDelayMs: {
      p99: Math.max(...replies.map((r) => r.loopDelayMs.p99)),
      max: Math.max(...replies.map((r) => r.loopDelayMs.max)),
    },
  };
}

function mergeCounts(replies, key) {
  const out = {};
  for (const r of replies) for (const [k, v] of Object.entries(r[key])) out[k] = (out[k] || 0) + v;
  return out;
}

async function handle(cmd) {
  if (cmd.cmd === 'connect') {
    const share = Math.floor(cmd.n / K);
    const addrs = cmd.localAddresses || [];
    const replies = await all('connected', (i) => ({
      ...cmd,
      start: i * share,
      count: i === K - 1 ? cmd.n - share * (K - 1) : share,
      localAddress: addrs.length ? addrs[i % addrs.length] : undefined,
    }));
    const hist = new Histogram();
    for (const r of replies) hist.merge(r.hist);
    emit({
      ev: 'connected', ok: sumBy(replies, 'ok'), failed: sumBy(replies, 'failed'),
      errors: mergeCounts(replies, 'errors'), ms: Math.max(...replies.map((r) => r.ms)),
      handshakeMs: { p50: hist.quantile(0.5), p99: hist.quantile(0.99), max: hist.max },
      replayed: sumBy(replies, 'replayed'),
      ...generatorLoad(replies),
    });
  } else if (cmd.cmd === 'arm') {
    await all('armed', () => cmd);
    emit({ ev: 'armed' });
  } else if (cmd.cmd === 'collect') {
    const replies = await all('collected', () => cmd);
    const hist = new Histogram();
    for (const r of replies) hist.merge(r.hist);
    const got = replies.filter((r) => r.received > 0);
    const first = got.length ? Math.min(...got.map((r) => r.first)) : 0;
    const last = got.length ? Math.max(...got.map((r) => r.last)) : 0;
    const received = sumBy(replies, 'received');
    const q = (x) => hist.quantile(x);
    emit({
      ev: 'collected',
      reasons: replies.map((r) => r.reason),
      received, expected: sumBy(replies, 'expected'), open: sumBy(replies, 'open'),
      complete: sumBy(replies, 'complete'), stale: sumBy(replies, 'stale'),
      bad: sumBy(replies, 'bad'), closed: sumBy(replies, 'closed'),
      closeCodes: mergeCounts(replies, 'closeCodes'),
      first, last, spanMs: last - first,
      rate: last > first ? received / ((last - first) / 1000) : null,
      latencyMs: {
        p50: q(0.5), p90: q(0.9), p99: q(0.99), p999: q(0.999),
        max: hist.max, mean: hist.total ? hist.sum / hist.total : null,
      },
      // A few points of the latency CDF, for plots: [quantile, ms].
      cdf: [0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9999]
        .map((x) => [x, q(x)]),
      ...generatorLoad(replies),
      workers: replies.map((r) => ({ received: r.received, first: r.first, last: r.last, cpuMs: r.cpuMs })),
    });
  } else if (cmd.cmd === 'status') {
    const replies = await all('status', () => cmd);
    emit({ ev: 'status', open: sumBy(replies, 'open'), closed: sumBy(replies, 'closed'),
      closeCodes: mergeCounts(replies, 'closeCodes') });
  } else if (cmd.cmd === 'soak') {
    await all('soaking', () => cmd);
    emit({ ev: 'soaking' });
  } else if (cmd.cmd === 'churn') {
    const replies = await all('churning', () => cmd);
    emit({ ev: 'churning', n: sumBy(replies, 'n') });
  } else if (cmd.cmd === 'sample') {
    const replies = await all('sampled', () => cmd);
    const lag = new Histogram();
    const hs = new Histogram();
    for (const r of replies) { lag.merge(r.lag); hs.merge(r.handshakes); }
    emit({
      ev: 'sampled', open: sumBy(replies, 'open'), received: sumBy(replies, 'received'),
      dups: sumBy(replies, 'dups'), gaps: sumBy(replies, 'gaps'), bad: sumBy(replies, 'bad'),
      reconnects: sumBy(replies, 'reconnects'), reconnectFailed: sumBy(replies, 'reconnectFailed'),
      errors: mergeCounts(replies, 'errors'), closeCodes: mergeCounts(replies, 'closeCodes'),
      lagMs: { p50: lag.quantile(0.5), p99: lag.quantile(0.99), max: lag.max, n: lag.total },
      handshakeMs: { p50: hs.quantile(0.5), p99: hs.quantile(0.99), max: hs.max, n: hs.total },
      ...generatorLoad(replies),
    });
  } else if (cmd.cmd === 'verify') {
    const replies = await all('verified', () => cmd);
    replies.sort((a, b) => a.start - b.start);
    // Where the gaps were found: on a live frame or in a replay, on `all` or the user's stream.
    // `reopened`: the gaps found on connections that had reconnected at least once.
    const gapsBy = { live: { all: 0, own: 0 }, replay: { all: 0, own: 0 }, reopened: 0 };
    for (const r of replies) {
      for (const k of ['live', 'replay']) for (const s of ['all', 'own']) gapsBy[k][s] += r.gapsBy[k][s];
      gapsBy.reopened += r.gapsBy.reopened;
    }
    emit({ ev: 'verified', open: sumBy(replies, 'open'), rows: replies.flatMap((r) => r.rows), gapsBy });
  } else if (cmd.cmd === 'close') {
    await Promise.all(workers.map((w) => new Promise((r) => { w.once('exit', r); w.send(cmd); })));
    emit({ ev: 'closed' });
    process.exit(0);
  }
}

// Commands are handled one at a time, in order.
let chain = Promise.resolve();
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (!line.trim()) return;
  const cmd = JSON.parse(line);
  chain = chain.then(() => handle(cmd)).catch((err) => emit({ ev: 'error', message: String(err) }));
});
rl.on('close', () => {
  for (const w of workers) w.kill();
  process.exit(0);
});
emit({ ev: 'ready', workers: K });
