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
        if (obj.type === 'welcome' && !cursor) ok();
        else if (obj.type === 'welcome') welcomed = true;
        else if (obj.type === 'notification' && welcomed) replayed++;
        else if (obj.type === 'unread' && welcomed) ok();
        else if (obj.type === 'error') fail(`error:${obj.code}`);
      }
    }
    function onClose(code) {
      if (!ready) return fail(`close:${code}`);
      conns[id] = null;
      open--;
      closed++;
      closeCodes[code] = (closeCodes[code] || 0) + 1;
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

process.on('message', (msg) => {
  if (msg.cmd === 'connect') connect(msg);
  else if (msg.cmd === 'arm') arm(msg);
  else if (msg.cmd === 'collect') collect(msg);
  else if (msg.cmd === 'status') send({ ev: 'status', open, closed, closeCodes });
  else if (msg.cmd === 'close') close();
});
process.on('disconnect', () => process.exit(0));
