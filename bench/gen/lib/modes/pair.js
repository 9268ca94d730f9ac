'use strict';
// pair: one established pair, alice and bob, ping-ponging through the
// server at --rate round trips/s (open loop). alice sends ping n to bob; bob
// acks it and sends pong n back; alice acks the pong and records the round
// trip (send of the ping → arrival of the pong: two trips through the
// server, each stored durably on relay). Pings sent in the window and never
// answered rank above every answered one (an unanswered p99 is reported as
// such, never as a flattering number). Used to watch a flood.

const { pick, openAll } = require('../target');
const { nowMs, summary, Samples } = require('../stats');
const { headline, bump } = require('./common');
const { closeAll } = require('./messages');

function accountsNeeded() {
  return 2;
}

function split(opts, accounts) {
  const alice = opts.peer ? { username: 'alice' } : accounts[0];
  const bob = opts.peer ? { username: 'bob' } : accounts[1];
  return [{ alice, bob }];
}

async function setup(opts, share, target) {
  const st = { opts, sentAt: [], rtt: new Samples(), t0: Infinity, t1: Infinity,
    disconnects: {}, refusals: {}, closing: false };
  const onClose = (conn) => {
    if (!st.closing) bump(st.disconnects, conn.closeCode ? String(conn.closeCode) : conn.error || 'closed');
  };
  const specs = [
    { who: share.alice, source: pick(opts.sources, 0), handlers: {
      onText(conn, text) {
        const now = nowMs();
        const f = JSON.parse(text);
        if (f.type === 'error') bump(st.refusals, f.code);
        if (f.type !== 'message') return;
        conn.send(`{"type":"ack","id":"${f.id}"}`);
        if (f.body.r !== st.opts.runId) return; // replayed from an earlier run
        const t = st.sentAt[f.body.pong];
        if (t >= st.t0 && t < st.t1 && !st.answered.has(f.body.pong)) {
          st.answered.add(f.body.pong);
          st.rtt.add(now - t);
        }
      },
      onClose } },
    { who: share.bob, source: pick(opts.sources, 1), handlers: {
      onText(conn, text) {
        const f = JSON.parse(text);
        if (f.type === 'error') bump(st.refusals, f.code);
        if (f.type !== 'message') return;
        conn.send(`{"type":"ack","id":"${f.id}"}`);
        if (f.body.r !== st.opts.runId) return; // replayed from an earlier run
        conn.send(`{"type":"send","id":"${st.opts.runId}b${f.body.ping}","to":"${st.aliceName}",` +
          `"body":{"r":${st.opts.runId},"pong":${f.body.ping}}}`);
      },
      onClose } },
  ];
  st.bobName = share.bob.username;
  st.aliceName = share.alice.username;
  st.answered = new Set();
  const { conns, failures } = await openAll(target, specs, { concurrency: 2, expectReady: true });
  [st.alice, st.bob] = conns;
  return { state: st, info: { connected: conns.filter(Boolean).length, wanted: 2, failures } };
}

async function run(st, { go, t0, t1, reached }) {
  st.t0 = t0;
  st.t1 = t1;
  await reached.go;
  const every = 1000 / st.opts.rate;
  let n = 0;
  if (st.alice && st.bob) {
    await new Promise((resolve) => {
      const tick = () => {
        const now = nowMs();
        while (go + n * every <= Math.min(now, t1 - 0.001)) {
          st.sentAt[n] = nowMs();
          st.alice.send(`{"type":"send","id":"${st.opts.runId}a${n}","to":"${st.bobName}",` +
            `"body":{"r":${st.opts.runId},"ping":${n}}}`);
          n += 1;
        }
        if (now >= t1) resolve();
        else setTimeout(tick, Math.max(1, go + n * every - nowMs()));
      };
      tick();
    });
  }
  // Give the last pongs --drain seconds to come back.
  const until = t1 + st.opts.drain * 1000;
  const pings = st.sentAt.filter((t) => t >= t0 && t < t1).length;
  while (st.answered.size < pings && nowMs() < until) await new Promise((r) => setTimeout(r, 10));
  return { pings, answered: st.answered.size, rtt: st.rtt.values(), disconnects: st.disconnects,
    refusals: st.refusals };
}

async function teardown(st) {
  st.closing = true;
  await closeAll([st.alice, st.bob].filter(Boolean));
}

function merge(opts, parts) {
  const p = parts[0];
  const s = summary(p.rtt, p.pings - p.answered);
  return { pings: p.pings, answered: p.answered, rate: opts.rate, disconnects: p.disconnects,
    refusals: p.refusals, latency_ms: { round_trip: s }, ...headline(s), count: p.answered };
}

module.exports = { accountsNeeded, split, setup, run, teardown, merge };
