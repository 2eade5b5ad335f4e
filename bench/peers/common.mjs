// What the Node peers share: the control endpoints and the benchmark payload.
//   POST /broadcast {"count": C, "size": S, "burst": B, "t": T?} -> broadcasts C payloads of about
//        S bytes to every client, each stamped with its send time `t` (or with the given T),
//        and answers {"sent": C, "clients": N, "ms": elapsed} when all are handed to the sockets.
//   GET /stats -> {"rss": bytes, "clients": N}
import { nowMs } from '../loadgen/clock.mjs';

export function payload(burst, seq, t, size) {
  const head = JSON.stringify({ type: 'bench', b: burst, seq, t, body: '' });
  return JSON.stringify({ type: 'bench', b: burst, seq, t, body: 'x'.repeat(Math.max(0, size - head.length)) });
}

export function payloadObject(burst, seq, t, size) {
  return JSON.parse(payload(burst, seq, t, size));
}

function readJson(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => { try { resolve(body ? JSON.parse(body) : {}); } catch (e) { reject(e); } });
  });
}

function reply(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

// Handles the control routes; `broadcast(spec)` returns a promise, `clients()` a number.
export function controlHandler({ broadcast, clients }) {
  return async (req, res) => {
    try {
      if (req.method === 'GET' && req.url === '/stats') {
        return reply(res, 200, { rss: process.memoryUsage.rss(), clients: clients() });
      }
      if (req.method === 'POST' && req.url === '/broadcast') {
        const spec = await readJson(req);
        const spec2 = {
          count: spec.count ?? 1, size: spec.size ?? 100, burst: spec.burst ?? 0, t: spec.t,
          coalesce: Boolean(spec.coalesce),
        };
        const t0 = nowMs();
        await broadcast(spec2);
        return reply(res, 200, { sent: spec2.count, clients: clients(), ms: nowMs() - t0 });
      }
      reply(res, 404, { error: 'not found' });
    } catch (err) {
      reply(res, 500, { error: String(err) });
    }
  };
}

export function stampOf(spec) {
  return spec.t ?? nowMs();
}

export function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

export const yieldToLoop = () => new Promise((r) => setImmediate(r));
