'use strict';
// Peer: Node 20 + ws (see README.md). Everything is non-blocking `ws.send`.
// Usage: node node_ws_peer.js [--host 127.0.0.1] [--port N] [--echo]
const { parseArgs } = require('node:util');
const { WebSocketServer } = require('ws');

const { values: args } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '0' },
    echo: { type: 'boolean', default: false },
  },
});
if (!(args.host === 'localhost' || args.host === '::1' || /^127\./.test(args.host))) {
  console.error(`--host must be a loopback address, not ${args.host}`);
  process.exit(2);
}

const byUser = new Map(); // user -> Set<WebSocket>
let connections = 0;
let messages = 0;

function ignore() {} // a socket error is followed by 'close'

function error(message) {
  return JSON.stringify({ type: 'error', code: 'invalid_frame', message });
}

function relay(ws, req) {
  const query = new URL(req.url, 'http://peer').searchParams;
  const user = query.get('user') || query.get('access_token') || 'anonymous';
  const n = ++connections;
  const device = `d-${n}`;
  ws.on('error', ignore);
  if (!byUser.has(user)) byUser.set(user, new Set());
  byUser.get(user).add(ws);
  ws.on('close', () => {
    const conns = byUser.get(user);
    conns.delete(ws);
    if (conns.size === 0) byUser.delete(user);
  });
  ws.send(JSON.stringify({ type: 'ready', user, device, session: `s-${n}` }));
  ws.on('message', (data, isBinary) => {
    if (isBinary) return ws.send(error('binary frames are not supported'));
    let frame;
    try {
      frame = JSON.parse(data.toString());
    } catch (e) {
      return ws.send(error(`frame is not valid JSON: ${e.message}`));
    }
    const type = frame !== null && typeof frame === 'object' ? frame.type : undefined;
    if (type === 'ack') return;
    if (type !== 'send' || typeof frame.id !== 'string' || typeof frame.to !== 'string' ||
        frame.body === undefined || frame.body === null) {
      return ws.send(error('frame must be a send or ack object'));
    }
    const id = String(++messages);
    ws.send(JSON.stringify({ type: 'accepted', id: frame.id, message_id: id }));
    const message = JSON.stringify({
      type: 'message', id, from: user, from_device: device, body: frame.body,
      sent_at: Date.now() / 1000,
    });
    for (const target of byUser.get(frame.to) ?? []) target.send(message);
  });
}

function echo(ws) {
  ws.on('error', ignore);
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
}

const wss = new WebSocketServer({
  host: args.host, port: Number(args.port), perMessageDeflate: false, clientTracking: false,
});
wss.on('connection', args.echo ? echo : relay);
wss.on('listening', () => process.stdout.write(`LISTENING ${wss.address().port}\n`));
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
