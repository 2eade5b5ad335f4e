// One load-generator process: holds its share of the WebSocket connections, performs each
// server's handshake, and counts the benchmark payloads it receives. Controlled by main.mjs over
// IPC. The hot path never decodes a whole frame: it finds the burst id `"b":` and the send
// timestamp `"t":` in the raw bytes (the first payload of each connection is fully parsed once,
// to check that the server sends what we think it sends).
import fs from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { requireDep } from './deps.mjs';
import { calibrate, nowMs } from './clock.mjs';
import { Histogram } from './histogram.mjs';

const WebSocket = requireDep('ws');

const B_KEY = Buffer.from('"b":');
const T_KEY = Buffer.from('"t":');

let protocol = 'plain';
let conns = []; // index -> ws or null once closed
// Each Clarion connection's last `welcome` cursor (kept as sent, decoded only by a soak): a
// connection opened before the soak started resumes from it, not from the head.
let welcomes = [];
let open = 0;
let closed = 0;
const closeCodes = {};
let replayed = 0; // events received by resuming handshakes before their `unread`

// Current burst.
let burst = -1;
let expect = 0;
let counts = new Uint32Array(0);
let received = 0;
let first = 0;
let last = 0;
let complete = 0;
let stale = 0;
let bad = 0;
let hist = new Histogram();
let cpuAtArm = process.cpuUsage();
let collecting = null; // {deadline, idleMs, timer}
// How late this process runs its callbacks: a latency it measures can be off by this much, and a
// high figure means the generator, not the server, is the bottleneck (reported, never hidden).
const loopDelay = monitorEventLoopDelay({ resolution: 5 });
loopDelay.enable();

function saturation(cpuSince) {
  const cpu = process.cpuUsage(cpuSince);
  const out = {
    cpuMs: (cpu.user + cpu.system) / 1000,
    loopDelayMs: { p99: loopDelay.percentile(99) / 1e6, max: loopDelay.max / 1e6 },
  };
  loopDelay.reset();
  return out;
}

function send(msg) {
  process.send(msg);
}

function numberAt(buf, pos) {
  let i = pos;
  while (buf[i] === 0x20) i++;
  let end = i;
  while (end < buf.length) {
    const c = buf[end];
    if ((c >= 0x30 && c <= 0x39) || c === 0x2e || c === 0x2d || c === 0x2b || c === 0x65 || c === 0x45) end++;
    else break;
  }
  return end > i ? Number(buf.toString('latin1', i, end)) : NaN;
}

function payloadOk(buf) {
  try {
    let text = buf.toString('utf8');
    if (protocol === 'socketio') {
      if (!text.startsWith('42')) return false;
      const [name, data] = JSON.parse(text.slice(2));
      return name === 'bench' && typeof data.t === 'number';
    }
    const obj = JSON.parse(text);
    if (protocol === 'clarion') {
      return obj.type === 'notification' && typeof obj.stream === 'string' &&
        Number.isInteger(obj.seq) && typeof obj.notification?.data?.t === 'number';
    }
    return typeof obj.t === 'number';
  } catch {
    return false;
  }
}

function onPayload(id, buf) {
  if (soak) return soakPayload(id, buf, false);
  const bi = buf.indexOf(B_KEY);
  if (bi < 0) return; // welcome, unread, acks...: not ours
  if (numberAt(buf, bi + 4) !== burst) {
    stale++;
    return;
  }
  const now = nowMs();
  const ti = buf.indexOf(T_KEY);
  const t = ti < 0 ? NaN : numberAt(buf, ti + 4);
  if (received === 0) first = now;
  last = now;
  received++;
  if (t === t) hist.record(now - t);
  else bad++;
  const c = ++counts[id];
  if (c === 1 && !payloadOk(buf)) bad++;
  if (c === expect) {
    complete++;
    if (collecting && complete >= open) finish('complete');
  }
}

// Opens one connection and performs the server's handshake; resolves null once it is ready, or
// a failure reason.
// With `cursor` (Clarion), the auth frame resumes from it and the handshake ends at `unread`,
// which follows the replay; `replayed` counts the events the replay brought.
function openOne(id, url, token, timeoutMs, localAddress, cursor) {
  return new Promise((resolve) => {
    let ready = false;
    let welcomed = false;
    let done = false;
    let conn = null;
    const timer = setTimeout(() => fail('handshake-timeout'), timeoutMs);
    function fail(reason) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (conn) conn.terminate();
      resolve(reason);
    }
    function ok() {
      if (done) return;
      done = true;
      ready = true;
      clearTimeout(timer);
      conns[id] = conn;
      open++;
      resolve(null);
    }
    function onOpen() {
      if (protocol === 'plain') ok();
      else if (protocol === 'clarion') {
        conn.send(JSON.stringify(cursor ? { type: 'auth', token, cursor } : { type: 'auth', token }));
      }
    }
    function onMessage(data) {
      if (ready) {
        // Engine.IO v4 heartbeat: the server pings with "2", we answer "3".
        if (protocol === 'socketio' && data.length === 1 && data[0] === 0x32) conn.send('3');
        else onPayload(id, data);
        return;
      }
      const text = data.toString();
      if (protocol === 'socketio') {
        if (text[0] === '0') conn.send('40'); // Engine.IO open -> Socket.IO connect to "/"
        else if (text.startsWith('40')) ok();
        else if (text.startsWith('44')) fail('socketio-connect-error');
      } else if (protocol === 'clarion') {
        let obj;
        try { obj = JSON.parse(text); } catch { return fail('bad-json'); }
        // The welcome's cursor is the position a soak connection folds its events into.
        if (obj.type === 'welcome' && obj.cursor) {
          if (soak) soak.positions[id] = unfold(obj.cursor);
          else welcomes[id] = obj.cursor;
        }
        if (obj.type === 'welcome' && !cursor) ok();
        else if (obj.type === 'welcome') welcomed = true;
        else if (obj.type === 'notification' && welcomed) {
          replayed++;
          if (soak) soakPayload(id, data, true);
        }
        else if (obj.type === 'unread' && welcomed) ok();
        else if (obj.type === 'error') fail(`error:${obj.code}`);
      }
    }
    function onClose(code) {
      if (!ready) return fail(`close:${code}`);
      if (conns[id] !== conn) return; // a soak reconnect closed it on purpose
      conns[id] = null;
      open--;
      closed++;
      closeCodes[code] = (closeCodes[code] || 0) + 1;
      if (soak) reopen(id); // as clarion.js does: back with its cursor
      if (collecting && complete >= open) finish('complete');
    }
    conn = new WebSocket(url, {
      perMessageDeflate: false, skipUTF8Validation: true, handshakeTimeout: timeoutMs, maxPayload: 1 << 20,
      // Several loopback source addresses (127.0.0.2, ...) give each its own ephemeral ports.
      ...(localAddress ? { localAddress } : {}),
    });
    conn.on('open', onOpen);
    conn.on('message', onMessage);
    conn.on('error', (err) => fail(err.code || err.message));
    conn.on('close', onClose);
  });
}

async function connect(msg) {
  protocol = msg.protocol;
  const { url, start, count, concurrency, timeoutMs, retries } = msg;
  let tokens = null;
  if (msg.tokensFile) {
    tokens = fs.readFileSync(msg.tokensFile, 'utf8').split('\n').slice(start, start + count);
  }
  link = { url, tokens, timeoutMs, start, localAddress: msg.localAddress };
  conns = new Array(count).fill(null);
  counts = new Uint32Array(count);
  let ok = 0;
  let failed = 0;
  const errors = {};
  // Handshake latency: from opening the TCP connection to ready (`welcome`, Socket.IO's `40`,
  // the upgrade for plain WebSocket; `unread` when resuming), successful attempts only.
  const handshakes = new Histogram();
  replayed = 0;
  const t0 = Date.now();
  const cpu0 = process.cpuUsage();
  loopDelay.reset();
  const progress = setInterval(() => send({ ev: 'progress', ok, failed }), 250);
  let next = 0;
  async function lane() {
    while (next < count) {
      const id = next++;
      let reason = null;
      for (let attempt = 0; attempt <= retries; attempt++) {
        const t = nowMs();
        reason = await openOne(
          id, url, tokens ? tokens[id] : null, timeoutMs, msg.localAddress, msg.cursor || null,
        );
        if (reason === null) {
          handshakes.record(nowMs() - t);
          break;
        }
        await new Promise((r) => setTimeout(r, 50 * (attempt + 1)));
      }
      if (reason === null) ok++;
      else {
        failed++;
        errors[reason] = (errors[reason] || 0) + 1;
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, lane));
  clearInterval(progress);
  send({
    ev: 'connected', ok, failed, errors, ms: Date.now() - t0, hist: handshakes.toJSON(), replayed,
    ...saturation(cpu0),
  });
}

function arm(msg) {
  burst = msg.burst;
  expect = msg.expect;
  counts.fill(0);
  received = 0;
  first = 0;
  last = 0;
  complete = 0;
  stale = 0;
  bad = 0;
  hist = new Histogram();
  calibrate();
  cpuAtArm = process.cpuUsage();
  loopDelay.reset();
  send({ ev: 'armed' });
}

function finish(reason) {
  if (!collecting) return;
  clearInterval(collecting.timer);
  collecting = null;
  send({
    ev: 'collected', reason, received, expected: open * expect, first, last, complete, open,
    stale, bad, closed, closeCodes, hist: hist.toJSON(), ...saturation(cpuAtArm),
  });
}

// expect = 0 (arm) means a connection's count is not known in advance (personal notifications to
// random users): collection then ends when nothing arrived for idleMs, counted from the collect
// command itself if nothing arrived at all.
function collect(msg) {
  const deadline = Date.now() + msg.timeoutMs;
  const since = nowMs();
  collecting = { timer: null };
  collecting.timer = setInterval(() => {
    if (Date.now() > deadline) finish('timeout');
    else if (received > 0 && nowMs() - last > msg.idleMs) finish('idle');
    else if (expect === 0 && received === 0 && nowMs() - since > msg.idleMs) finish('idle');
  }, 20);
  if (complete >= open) finish('complete');
}

function close() {
  for (const ws of conns) if (ws) ws.terminate();
  setTimeout(() => process.exit(0), 100);
}

// Soak (bench/soak.py): every notification frame is checked against its stream's `seq`, which
// is gap-free per stream, so one counter per connection and stream finds a loss (a gap) or a
// duplicate (a seq not above the last one) without keeping what arrived. A share of the
// connections is closed and reopened with its last cursor (`churn`), as a tab reload does; a
// connection the server closes is reopened the same way. Slot 2*id is `all`, 2*id+1 the user's own.
let soak = null;
let link = null; // how `connect` reached the server, for reconnects

function startSoak() {
  const n = conns.length;
  soak = {
    last: new Uint32Array(2 * n), got: new Uint32Array(2 * n), dups: new Uint32Array(n),
    gaps: 0, gapsBy: { live: { all: 0, own: 0 }, replay: { all: 0, own: 0 }, reopened: 0 },
    reopened: new Uint8Array(n), lag: new Histogram(), handshakes: new Histogram(),
    positions: Array.from({ length: n }, (_, id) => (welcomes[id] ? unfold(welcomes[id]) : null)),
    reconnects: 0, reconnectFailed: 0, unexpected: 0, errors: {},
  };
  send({ ev: 'soaking' });
}

// A WebSocket event carries its own stream and seq, not the connection's cursor (the same bytes
// go to every follower): the client folds them into its position (docs/protocol.md), as
// clarion.js does, and resumes from that.
function unfold(cursor) {
  return JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
}

function fold(position) {
  const sorted = Object.fromEntries(Object.entries(position).sort(([a], [b]) => (a < b ? -1 : 1)));
  return Buffer.from(JSON.stringify(sorted)).toString('base64url');
}

function soakPayload(id, buf, replay) {
  let obj;
  try { obj = JSON.parse(buf.toString('utf8')); } catch { bad++; return; }
  if (typeof obj.stream === 'string' && typeof obj.seq === 'number' && soak.positions[id]) {
    soak.positions[id][obj.stream] = Math.max(soak.positions[id][obj.stream] || 0, obj.seq);
  }
  if (obj.type !== 'notification') return;
  const slot = 2 * id + (obj.stream === 'all' ? 0 : 1);
  if (obj.seq <= soak.last[slot]) soak.dups[id]++;
  else {
    if (obj.seq > soak.last[slot] + 1) {
      soak.gaps += obj.seq - soak.last[slot] - 1;
      soak.gapsBy[replay ? 'replay' : 'live'][slot % 2 ? 'own' : 'all'] += obj.seq - soak.last[slot] - 1;
      if (soak.reopened[id]) soak.gapsBy.reopened += obj.seq - soak.last[slot] - 1;
    }
    soak.last[slot] = obj.seq;
    soak.got[slot]++;
  }
  const t = obj.notification?.data?.t;
  if (!replay && typeof t === 'number') soak.lag.record(nowMs() - t);
}

// Reopens connection `id` from its last cursor; the handshake (to `unread`, after the replay)
// is timed.
async function reopen(id) {
  soak.reconnects++;
  soak.reopened[id] = 1;
  // Without a cursor the server would start this connection at the head: a generator fault.
  if (!soak.positions[id]) soak.errors['no-cursor'] = (soak.errors['no-cursor'] || 0) + 1;
  for (let attempt = 0; attempt < 5; attempt++) {
    const t = nowMs();
    const reason = await openOne(
      id, link.url, link.tokens ? link.tokens[id] : null, link.timeoutMs, link.localAddress,
      soak.positions[id] ? fold(soak.positions[id]) : null,
    );
    if (reason === null) return soak.handshakes.record(nowMs() - t);
    soak.errors[reason] = (soak.errors[reason] || 0) + 1;
    await new Promise((r) => setTimeout(r, 200 * (attempt + 1)));
  }
  soak.reconnectFailed++;
}

// Closes `fraction` of the open connections (normal closure, as a closing tab) and reopens each
// with its cursor, `concurrency` at a time; answers at once.
function churn(msg) {
  const ids = [];
  conns.forEach((c, id) => { if (c && Math.random() < msg.fraction) ids.push(id); });
  let next = 0;
  async function lane() {
    while (next < ids.length) {
      const id = ids[next++];
      const conn = conns[id];
      if (!conn) continue;
      conns[id] = null;
      open--;
      await new Promise((r) => {
        const timer = setTimeout(() => { conn.terminate(); r(); }, 2000);
        conn.once('close', () => { clearTimeout(timer); r(); });
        conn.close(1000);
      });
      await reopen(id);
    }
  }
  for (let i = 0; i < Math.min(msg.concurrency, ids.length); i++) lane();
  send({ ev: 'churning', n: ids.length });
}

// Counters so far, and the histograms of the window since the last sample (then reset).
function sample() {
  let received = 0;
  for (const g of soak.got) received += g;
  let dups = 0;
  for (const d of soak.dups) dups += d;
  send({
    ev: 'sampled', open, received, dups, gaps: soak.gaps, bad, reconnects: soak.reconnects,
    reconnectFailed: soak.reconnectFailed, errors: soak.errors, closeCodes,
    lag: soak.lag.toJSON(), handshakes: soak.handshakes.toJSON(), ...saturation(cpuAtArm),
  });
  soak.lag = new Histogram();
  soak.handshakes = new Histogram();
  cpuAtArm = process.cpuUsage();
}

// Per connection (index from `start`): [last seq of `all`, distinct `all` events, last seq of
// its own stream, distinct own events, duplicates].
function verify() {
  const rows = conns.map((_, id) => [
    soak.last[2 * id], soak.got[2 * id], soak.last[2 * id + 1], soak.got[2 * id + 1], soak.dups[id],
  ]);
  send({ ev: 'verified', start: link.start, open, rows, gapsBy: soak.gapsBy });
}

process.on('message', (msg) => {
  if (msg.cmd === 'soak') startSoak();
  else if (msg.cmd === 'churn') churn(msg);
  else if (msg.cmd === 'sample') sample();
  else if (msg.cmd === 'verify') verify();
  if (msg.cmd === 'connect') connect(msg);
  else if (msg.cmd === 'arm') arm(msg);
  else if (msg.cmd === 'collect') collect(msg);
  else if (msg.cmd === 'status') send({ ev: 'status', open, closed, closeCodes });
  else if (msg.cmd === 'close') close();
});
process.on('disconnect', () => process.exit(0));
