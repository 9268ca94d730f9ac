#!/usr/bin/env node
'use strict';
// Checks lib/conn.js (the generator's own WebSocket client) against a real
// server, the `ws` package's, in this process: upgrade and accept key,
// masked text of every length class (7-bit, 16-bit, 64-bit lengths) both
// ways, a fragmented message, ping → pong, close handshakes started by
// either side, a refused upgrade (429), the Bearer header. Prints PASS or
// FAIL per check; exit status 1 on any failure.
//
//   node selftest.js

const assert = require('node:assert/strict');
const { WebSocketServer } = require('ws');
const { Conn } = require('./lib/conn');

const results = [];

function open(port, handlers, extra = {}) {
  return new Conn({ host: '127.0.0.1', port, path: '/ws', timeoutMs: 5000, ...extra }, handlers);
}

// Resolve with what *body* resolves, or reject after 5 s.
function within(body) {
  let timer;
  return new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error('timed out')), 5000);
    body(resolve, reject);
  }).finally(() => clearTimeout(timer));
}

async function check(name, fn) {
  try {
    await fn();
    results.push([name, 'PASS']);
  } catch (err) {
    results.push([name, `FAIL: ${err.message}`]);
  }
}

async function main() {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false,
    verifyClient: (info, cb) => (info.req.url.includes('refuse') ? cb(false, 429) : cb(true)) });
  await new Promise((r) => wss.on('listening', r));
  const { port } = wss.address();
  let lastHeaders = null;
  let lastPong = null;
  wss.on('connection', (ws, req) => {
    lastHeaders = req.headers;
    ws.on('pong', (data) => { lastPong = data.toString(); });
    ws.on('message', (data, isBinary) => {
      const text = data.toString();
      if (text === 'fragment') { // three frames, one message
        ws.send('ab', { fin: false });
        ws.send('cd', { fin: false });
        ws.send('ef', { fin: true });
      } else if (text === 'ping') {
        ws.ping('hello');
        setTimeout(() => ws.send(`pong:${lastPong}`), 50);
      } else if (text === 'close-me') {
        ws.close(4000, 'bye');
      } else {
        ws.send(data, { binary: isBinary });
      }
    });
  });

  await check('echo of 7-bit, 16-bit and 64-bit lengths, with a Bearer header', () => within((ok, ko) => {
    const sizes = [5, 125, 126, 1000, 65535, 65536, 200000];
    const got = [];
    open(port, {
      onOpen(c) { for (const n of sizes) c.send(`${'x'.repeat(n - 1)}y`); },
      onText(c, text) {
        got.push(text.length);
        if (got.length === sizes.length) {
          try {
            assert.deepEqual(got, sizes);
            assert.equal(lastHeaders.authorization, 'Bearer tok');
            c.close();
          } catch (e) { ko(e); }
        }
      },
      onClose(c) { (c.closeCode === 1000 ? ok : () => ko(new Error(`close ${c.closeCode}`)))(); },
    }, { token: 'tok' });
  }));

  await check('utf-8 text both ways', () => within((ok, ko) => {
    open(port, {
      onOpen(c) { c.send('{"body":"héllo ✓ 😀"}'); },
      onText(c, text) {
        try { assert.equal(text, '{"body":"héllo ✓ 😀"}'); c.close(); } catch (e) { ko(e); }
      },
      onClose: () => ok(),
    });
  }));

  await check('fragmented message reassembled', () => within((ok, ko) => {
    open(port, {
      onOpen(c) { c.send('fragment'); },
      onText(c, text) { try { assert.equal(text, 'abcdef'); c.close(); } catch (e) { ko(e); } },
      onClose: () => ok(),
    });
  }));

  await check('ping answered with its data', () => within((ok, ko) => {
    let pings = 0;
    open(port, {
      onOpen(c) { c.send('ping'); },
      onPing() { pings += 1; },
      onText(c, text) {
        try { assert.equal(text, 'pong:hello'); assert.equal(pings, 1); c.close(); } catch (e) { ko(e); }
      },
      onClose: () => ok(),
    });
  }));

  await check('close started by the server: code seen, answered', () => within((ok, ko) => {
    open(port, {
      onOpen(c) { c.send('close-me'); },
      onClose(c) {
        try { assert.equal(c.closeCode, 4000); assert.equal(c.error, null); ok(); } catch (e) { ko(e); }
      },
    });
  }));

  await check('refused upgrade reports its status', () => within((ok, ko) => {
    let refused = 0;
    new Conn({ host: '127.0.0.1', port, path: '/ws?refuse', timeoutMs: 5000 }, {
      onOpen: () => ko(new Error('opened')),
      onRefused(c, status) { refused = status; },
      onClose() { try { assert.equal(refused, 429); ok(); } catch (e) { ko(e); } },
    });
  }));

  await check('connection refused is an error, not a hang', () => within((ok, ko) => {
    new Conn({ host: '127.0.0.1', port: 1, path: '/', timeoutMs: 5000 }, {
      onClose(c) { try { assert.equal(c.error, 'ECONNREFUSED'); ok(); } catch (e) { ko(e); } },
    });
  }));

  wss.close();
  for (const [name, verdict] of results) process.stdout.write(`${verdict.slice(0, 4)}  ${name}${verdict.length > 4 ? ` (${verdict})` : ''}\n`);
  process.exit(results.every(([, v]) => v === 'PASS') ? 0 : 1);
}

main();
