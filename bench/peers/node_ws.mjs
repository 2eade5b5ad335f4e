// Peer: a plain Node.js `ws` server broadcasting with the library's idiomatic loop
// (encode the payload once, `client.send` it to every open client), as its README shows it:
// one payload after the other, with no pause between them. With --paused it yields to the event
// loop (setImmediate) after each payload, as this peer did before issue #17: the slower variant,
// kept as a second row.
//
// With --raw it is the generator-ceiling peer instead: each payload is pre-encoded once as a
// complete WebSocket frame and written straight to every client's TCP socket, one write per
// client per payload like any real server, but with no per-client framing or bookkeeping: the
// most a server doing one write per delivery can reach here (the loopback ceiling). With
// {"coalesce": true} it writes a whole burst to each client at once instead, which measures
// what the load generator can receive at all (the generator ceiling).
import http from 'node:http';
import { requireDep } from '../loadgen/deps.mjs';
import { arg, controlHandler, payload, stampOf, yieldToLoop } from './common.mjs';

const { WebSocketServer, WebSocket } = requireDep('ws');
const port = Number(arg('port', 9001));
const raw = process.argv.includes('--raw');
const paused = process.argv.includes('--paused');

function frame(text) {
  const data = Buffer.from(text);
  const n = data.length;
  const head = n < 126 ? Buffer.from([0x81, n]) : n < 65536 ? Buffer.from([0x81, 126, n >> 8, n & 255]) : null;
  if (!head) throw new Error('payload too large for the ceiling peer');
  return Buffer.concat([head, data]);
}

let wss;
async function broadcast({ count, size, burst, t, coalesce }) {
  if (raw && coalesce) {
    // Generator ceiling: the whole burst in one write per client.
    const stamp = stampOf({ t });
    const frames = [];
    for (let seq = 1; seq <= count; seq++) frames.push(frame(payload(burst, seq, stamp, size)));
    const all = Buffer.concat(frames);
    for (const client of wss.clients) if (client.readyState === WebSocket.OPEN) client._socket.write(all);
    return;
  }
  if (raw) {
    const sockets = [];
    for (const client of wss.clients) if (client.readyState === WebSocket.OPEN) sockets.push(client._socket);
    for (let seq = 1; seq <= count; seq++) {
      const data = frame(payload(burst, seq, stampOf({ t }), size));
      for (const socket of sockets) socket.write(data);
      await yieldToLoop();
    }
    return;
  }
  for (let seq = 1; seq <= count; seq++) {
    const data = Buffer.from(payload(burst, seq, stampOf({ t }), size));
    for (const client of wss.clients) if (client.readyState === WebSocket.OPEN) client.send(data, { binary: false });
    if (paused) await yieldToLoop();
  }
}

const server = http.createServer(controlHandler({ broadcast, clients: () => wss.clients.size }));
wss = new WebSocketServer({ server, perMessageDeflate: false });
wss.on('connection', (ws) => ws.on('error', () => {}));
server.listen(port, '127.0.0.1', 4096, () => console.error(`node_ws${raw ? ' (raw)' : ''}${paused ? ' (paused)' : ''} on ${port}`));
