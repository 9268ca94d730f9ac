'use strict';
// echo: for an echo server (bench/peers/*_peer --echo: no `ready`, every
// frame sent back as is). N connections each keep W frames in flight and
// send a new one as each echo comes back (closed loop). The frame has the
// shape and size of a relay `send`. Round trip = send → its echo (echoes
// come back in order per connection, so no parsing is needed).

const { pick, openAll } = require('../target');
const { nowMs, round3, summary, Samples } = require('../stats');
const { headline, bump, total, concatSamples } = require('./common');
const { closeAll } = require('./messages');

function accountsNeeded() {
  return 0;
}

function split(opts, _accounts, procs) {
  return Array.from({ length: procs }, (_, w) => {
    const mine = [];
    for (let i = w; i < opts.connections; i += procs) mine.push(i);
    return { conns: mine.map((i) => ({ who: { username: `e${i}` }, source: pick(opts.sources, i) })) };
  });
}

async function setup(opts, share, target) {
  const st = { opts, running: false, t0: Infinity, t1: Infinity, seq: 0, echoes: 0,
    echoesInWindow: 0, sent: 0, lat: new Samples(1 << 16), disconnects: {}, unmatched: 0 };
  const specs = share.conns.map((c) => ({ who: c.who, source: c.source, handlers: {
    onText: (conn) => onEcho(st, conn),
    onBinary: (conn) => onEcho(st, conn),
    onClose(conn) {
      if (!st.closing) bump(st.disconnects, conn.closeCode ? String(conn.closeCode) : conn.error || 'closed');
    },
  } }));
  const { conns, failures } = await openAll(target, specs, {
    concurrency: opts.openConcurrency, expectReady: false,
  });
  st.conns = conns.filter(Boolean);
  for (const c of st.conns) c.user = [];
  return { state: st, info: { connected: st.conns.length, wanted: specs.length, failures } };
}

function sendOne(st, conn) {
  const t = nowMs();
  const k = st.seq++;
  conn.user.push(t);
  st.sent += 1;
  conn.send(`{"type":"send","id":"${k}","to":"u1","body":{"k":${k},"t":${t}}}`);
}

function onEcho(st, conn) {
  const now = nowMs();
  const t = conn.user.shift();
  if (t === undefined) {
    st.unmatched += 1;
    return;
  }
  st.echoes += 1;
  if (now >= st.t0 && now < st.t1) st.echoesInWindow += 1;
  if (t >= st.t0 && t < st.t1) st.lat.add(now - t);
  if (st.running && now < st.t1) sendOne(st, conn);
}

async function run(st, { t0, t1, reached }) {
  st.t0 = t0;
  st.t1 = t1;
  await reached.go;
  st.running = true;
  for (const conn of st.conns) for (let i = 0; i < st.opts.window; i++) sendOne(st, conn);
  await reached.t1;
  st.running = false;
  // Wait (at most --drain) for the last echoes, so that none is left unanswered.
  const until = t1 + st.opts.drain * 1000;
  while (st.conns.some((c) => c.user.length && c.open) && nowMs() < until) {
    await new Promise((r) => setTimeout(r, 10));
  }
  let unanswered = 0;
  for (const c of st.conns) for (const t of c.user) if (t >= t0 && t < t1) unanswered += 1;
  return { echoes_in_window: st.echoesInWindow, echoes: st.echoes, sent: st.sent,
    unanswered, unmatched: st.unmatched, disconnects: st.disconnects, latency: st.lat.values() };
}

async function teardown(st) {
  st.closing = true;
  await closeAll(st.conns);
}

function merge(opts, parts, seconds) {
  const out = {};
  for (const f of ['echoes_in_window', 'echoes', 'sent', 'unanswered', 'unmatched']) {
    out[f] = total(parts, f);
  }
  out.disconnects = {};
  for (const p of parts) for (const [k, v] of Object.entries(p.disconnects)) bump(out.disconnects, k, v);
  out.echoed_per_s = round3(out.echoes_in_window / seconds);
  out.latency_ms = { round_trip: summary(concatSamples(parts, 'latency'), out.unanswered) };
  Object.assign(out, headline(out.latency_ms.round_trip));
  out.count = out.echoes_in_window;
  return out;
}

module.exports = { accountsNeeded, split, setup, run, teardown, merge };
