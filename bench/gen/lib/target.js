'use strict';
// Where and how to connect: relay (a Bearer token per connection) or a peer
// from bench/peers (no auth: `?user=NAME` names the connection), and opening
// many connections with a bounded number of handshakes in flight.

const { Conn } = require('./conn');

// Loopback only, as `relay flood` and the peers: this is a load generator.
function isLoopback(host) {
  return host === 'localhost' || host === '::1' || host === '[::1]' || /^127\./.test(host);
}

// {host, port, path, peer} from `ws://HOST:PORT/PATH`.
function parseTarget(url, peer) {
  const u = new URL(url);
  if (u.protocol !== 'ws:') throw new Error(`only ws:// URLs: ${url}`);
  if (!isLoopback(u.hostname)) throw new Error(`refusing a non-loopback target: ${u.hostname}`);
  return { host: u.hostname, port: Number(u.port || 80), path: u.pathname || '/', peer };
}

// Open one connection for *who* ({token, username} on relay; {username} on a peer).
function dial(target, who, handlers, { source = null, timeoutMs = 10000 } = {}) {
  const path = target.peer ? `${target.path}?user=${encodeURIComponent(who.username)}`
    : target.path;
  return new Conn({
    host: target.host, port: target.port, path, localAddress: source,
    token: target.peer ? null : who.token, timeoutMs,
  }, handlers);
}

// The `type` of a JSON frame (undefined if it is not a JSON object).
function frameType(text) {
  try {
    const frame = JSON.parse(text);
    return frame && typeof frame === 'object' ? frame.type : undefined;
  } catch {
    return undefined;
  }
}

// Round-robin over *sources* (local addresses); null: the kernel's choice.
function pick(sources, i) {
  return sources && sources.length ? sources[i % sources.length] : null;
}

// Open one connection per spec, *concurrency* handshakes in flight; resolve
// when every one is up (`ready` received if *expectReady*, else 101) or has
// failed. spec: {who, handlers, source, target} (target: this connection's
// server, default *target*). The caller's handlers get every frame after
// `ready`; onUp(conn) is called once a connection is up.
// Resolves {conns (null where failed), failures: {kind: n}}.
function openAll(target, specs, { concurrency = 100, expectReady = true, timeoutMs = 15000 }) {
  return new Promise((resolve) => {
    const conns = new Array(specs.length).fill(null);
    const failures = {};
    let next = 0;
    let settled = 0;
    let inFlight = 0;
    if (specs.length === 0) resolve({ conns, failures });

    function done(i, conn, kind) {
      if (kind) failures[kind] = (failures[kind] || 0) + 1;
      else conns[i] = conn;
      inFlight -= 1;
      settled += 1;
      if (settled === specs.length) resolve({ conns, failures });
      else launch();
    }

    function start(i) {
      const spec = specs[i];
      let up = false;
      const h = spec.handlers;
      const setupHandlers = {
        onOpen(conn) {
          if (!expectReady) {
            up = true;
            conn.h = h;
            conn.deadline(0);
            if (h.onUp) h.onUp(conn);
            done(i, conn, null);
          } else {
            conn.deadline(timeoutMs);
          }
        },
        onText(conn, text) { // the first frame must be `ready`
          if (up) return;
          up = true;
          conn.deadline(0);
          conn.h = h;
          if (frameType(text) !== 'ready') {
            conn.destroy();
            done(i, null, 'no_ready');
            return;
          }
          if (h.onUp) h.onUp(conn);
          done(i, conn, null);
        },
        onRefused(conn, status) {
          up = true;
          done(i, null, String(status));
        },
        onClose(conn) {
          if (up) {
            if (h.onClose) h.onClose(conn);
            return;
          }
          up = true;
          done(i, null, conn.error || (conn.closeCode ? `close:${conn.closeCode}` : 'closed'));
        },
      };
      dial(spec.target || target, spec.who, setupHandlers, { source: spec.source, timeoutMs });
    }

    function launch() {
      while (inFlight < concurrency && next < specs.length) {
        inFlight += 1;
        start(next++);
      }
    }
    launch();
  });
}

module.exports = { parseTarget, dial, pick, openAll, isLoopback };
