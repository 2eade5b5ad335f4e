// Peer: a Socket.IO 4 server on Node.js, broadcasting with io.emit (WebSocket transport only,
// as the load generator connects straight over WebSocket), the way its docs broadcast: one
// io.emit after the other, with no pause between them. With --paused it yields to the event loop
// (setImmediate) after each emit, as this peer did before issue #17: kept as a second row.
import http from 'node:http';
import { requireDep } from '../loadgen/deps.mjs';
import { arg, controlHandler, payloadObject, stampOf, yieldToLoop } from './common.mjs';

const { Server } = requireDep('socket.io');
const port = Number(arg('port', 9002));
const paused = process.argv.includes('--paused');

let io;
async function broadcast({ count, size, burst, t }) {
  for (let seq = 1; seq <= count; seq++) {
    io.emit('bench', payloadObject(burst, seq, stampOf({ t }), size));
    if (paused) await yieldToLoop();
  }
}

const server = http.createServer(controlHandler({ broadcast, clients: () => io.engine.clientsCount }));
io = new Server(server, { transports: ['websocket'], serveClient: false, perMessageDeflate: false });
server.listen(port, '127.0.0.1', 4096, () => console.error(`node_socketio${paused ? ' (paused)' : ''} on ${port}`));
