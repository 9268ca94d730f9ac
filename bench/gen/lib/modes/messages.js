'use strict';
// messages: sender → receiver pairs speaking relay's protocol (or the
// peers' subset). Each send carries its send time in the body
// ({"k": seq, "t": epoch ms}); the receiver measures send → delivered from
// it and acks every message. Two ways to offer load:
//
//   --rate R     open loop: send k (all pairs together) is due at
//                go + k / R and goes to pair k % pairs, whatever the answers;
//   --window W   closed loop: each sender keeps W sends in flight and
//                issues a new one on each `accepted` (or error) it gets.
//
// Figures cover the measured window [t0, t1) (after --warmup): latencies of
// the sends made in it (a send never delivered ranks above every delivered
// one: it makes p99 "unanswered", not flattering), and deliveries that
// arrived in it (delivered/s).

const { pick, openAll } = require('../target');
const { nowMs, round3, summary } = require('../stats');
const { headline, bump, sumCounts, total, concatSamples, Ledger, ACCEPTED, REFUSED, DELIVERED } =
  require('./common');

const LATE_MS = 10; // an open-loop send leaving this late counts as late

function accountsNeeded(opts) {
  return 2 * opts.pairs;
}

// Pairs split over the processes (each pair whole in one process). With
// several --ws URLs (servers sharing a store and a bus), pair i's sender
// dials URL[i % n] and its receiver URL[(i + floor(i / n)) % n]: every
// server gets as many connections, and about half the pairs cross servers
// (with n = 2: pairs 0 and 1 stay, 2 and 3 cross, 4 and 5 stay, ...);
// --no-cross: none does (both ends of a pair on one server).
function split(opts, accounts, procs) {
  const n = opts.ws.split(',').length;
  const pairs = [];
  for (let i = 0; i < opts.pairs; i++) {
    const sender = opts.peer ? { username: `s${i}` } : accounts[2 * i];
    const receiver = opts.peer ? { username: `r${i}` } : accounts[2 * i + 1];
    pairs.push({ sender, receiver, to: receiver.username, source: pick(opts.sources, i),
      senderAt: i % n, receiverAt: opts.noCross ? i % n : (i + Math.floor(i / n)) % n });
  }
  return Array.from({ length: procs }, (_, w) => {
    const mine = pairs.filter((_, i) => i % procs === w);
    return { pairs: mine, rate: opts.rate ? (opts.rate * mine.length) / opts.pairs : null };
  });
}

async function setup(opts, share, target, targets = [target]) {
  const ledger = new Ledger();
  const st = {
    opts, share, ledger, pairs: [], running: false, t0: Infinity, t1: Infinity,
    sent: 0, accepted: 0, refused: 0, delivered: 0, duplicates: 0, unknown: 0, stale: 0,
    deliveredInWindow: 0, acceptedInWindow: 0, refusals: {}, disconnects: {},
    lateSends: 0, maxLagMs: 0, acksSent: 0,
  };
  const pad = opts.bodyBytes > 0 ? `,"p":"${'x'.repeat(opts.bodyBytes)}"` : '';
  st.pad = pad;
  // Client ids are unique per device across runs: relay answers a resent id
  // with the first message's id and never delivers it again.
  st.idPrefix = `${opts.runId.toString(36)}-`;
  const specs = [];
  for (const p of share.pairs) {
    const pair = { to: p.to, sender: null, receiver: null, inFlight: 0, acks: [] };
    st.pairs.push(pair);
    specs.push({ who: p.sender, source: p.source, target: targets[p.senderAt || 0],
      handlers: senderHandlers(st, pair) });
    specs.push({ who: p.receiver, source: p.source, target: targets[p.receiverAt || 0],
      handlers: receiverHandlers(st, pair) });
  }
  const { conns, failures } = await openAll(target, specs, {
    concurrency: opts.openConcurrency, expectReady: true,
  });
  st.pairs.forEach((pair, i) => {
    pair.sender = conns[2 * i];
    pair.receiver = conns[2 * i + 1];
  });
  st.active = st.pairs.filter((p) => p.sender && p.receiver);
  const crossing = share.pairs.filter((p) => (p.senderAt || 0) !== (p.receiverAt || 0)).length;
  return { state: st, info: { connected: conns.filter(Boolean).length, wanted: specs.length,
    failures, active_pairs: st.active.length, crossing_pairs: crossing } };
}

function disconnected(st) {
  return (conn) => {
    if (st.closing) return;
    bump(st.disconnects, conn.closeCode ? String(conn.closeCode) : conn.error || 'closed');
  };
}

// One send from *pair* now.
function sendOne(st, pair) {
  const t = nowMs();
  const k = st.ledger.add(t);
  pair.inFlight += 1;
  st.sent += 1;
  pair.sender.send(
    `{"type":"send","id":"${st.idPrefix}${k}","to":"${pair.to}","body":{"r":${st.opts.runId},"k":${k},"t":${t}${st.pad}}}`);
}

// The sequence number in a client id ("<run>-<seq>"); NaN if not ours.
function seqOf(st, id) {
  return id.startsWith(st.idPrefix) ? Number(id.slice(st.idPrefix.length)) : NaN;
}

function senderHandlers(st, pair) {
  return {
    onText(conn, text) {
      const now = nowMs();
      const frame = JSON.parse(text);
      const { ledger } = st;
      if (frame.type === 'accepted') {
        const k = seqOf(st, frame.id);
        if (!(k < ledger.length) || ledger.flags[k] & (ACCEPTED | REFUSED)) {
          st.unknown += 1;
          return;
        }
        ledger.flags[k] |= ACCEPTED;
        ledger.answeredAt[k] = now;
        st.accepted += 1;
        if (now >= st.t0 && now < st.t1) st.acceptedInWindow += 1;
      } else if (frame.type === 'error') {
        bump(st.refusals, frame.code);
        const k = frame.ref === undefined ? NaN : seqOf(st, frame.ref);
        if (!(k < ledger.length)) return;
        ledger.flags[k] |= REFUSED;
        ledger.answeredAt[k] = now;
        st.refused += 1;
      } else {
        return;
      }
      pair.inFlight -= 1;
      if (st.opts.window && st.running && now < st.t1) sendOne(st, pair);
    },
    onClose: disconnected(st),
  };
}

function receiverHandlers(st, pair) {
  const ackMode = st.opts.ack;
  return {
    onText(conn, text) {
      const now = nowMs();
      const frame = JSON.parse(text);
      if (frame.type !== 'message') return;
      const body = frame.body;
      const k = body && body.k;
      const { ledger } = st;
      if (!body || body.r !== st.opts.runId) {
        st.stale += 1; // replayed from an earlier run on these accounts
      } else if (typeof k !== 'number' || !(k < ledger.length)) {
        st.unknown += 1;
      } else if (ledger.flags[k] & DELIVERED) {
        st.duplicates += 1;
      } else {
        ledger.flags[k] |= DELIVERED;
        ledger.deliveredAt[k] = now;
        st.delivered += 1;
        if (now >= st.t0 && now < st.t1) st.deliveredInWindow += 1;
      }
      if (ackMode === 'each') {
        conn.send(`{"type":"ack","id":"${frame.id}"}`);
        st.acksSent += 1;
      } else if (ackMode === 'batch') { // every id read in this tick, one frame
        if (pair.acks.length === 0) process.nextTick(flushAcks, st, pair, conn);
        pair.acks.push(frame.id);
      }
    },
    onClose: disconnected(st),
  };
}

function flushAcks(st, pair, conn) {
  for (let i = 0; i < pair.acks.length; i += 256) {
    conn.send(JSON.stringify({ type: 'ack', ids: pair.acks.slice(i, i + 256) }));
    st.acksSent += 1;
  }
  pair.acks = [];
}

// Offer the load from *go* to *t1*, then drain; the partial result.
async function run(st, { go, t0, t1, reached }) {
  st.t0 = t0;
  st.t1 = t1;
  const { opts } = st;
  await reached.go;
  st.running = true;
  if (st.active.length === 0) {
    st.running = false;
  } else if (opts.window) {
    for (const pair of st.active) for (let i = 0; i < opts.window; i++) sendOne(st, pair);
  } else {
    await openLoop(st, go, t1);
  }
  await reached.t1;
  st.running = false;
  await drain(st, t1 + opts.drain * 1000);
  return result(st);
}

// Open loop: every millisecond or so, issue what is due by now.
function openLoop(st, go, t1) {
  const perMs = st.share.rate / 1000;
  const pairs = st.active;
  let issued = 0;
  return new Promise((resolve) => {
    const timer = setInterval(() => {
      const now = nowMs();
      const end = Math.min(now, t1);
      const due = Math.floor((end - go) * perMs);
      while (issued < due) {
        const lag = now - (go + issued / perMs);
        if (lag > LATE_MS) st.lateSends += 1;
        if (lag > st.maxLagMs) st.maxLagMs = lag;
        sendOne(st, pairs[issued % pairs.length]);
        issued += 1;
      }
      if (now >= t1) {
        clearInterval(timer);
        resolve();
      }
    }, 1);
  });
}

// Wait until every send is answered and every accepted one delivered, or *until*.
function drain(st, until) {
  return new Promise((resolve) => {
    const check = () => {
      const settled = st.accepted + st.refused >= st.sent && st.delivered >= st.accepted;
      if (settled || nowMs() >= until) resolve((st.drainedAt = nowMs()));
      else setTimeout(check, 10);
    };
    check();
  });
}

// Figures of the sends made in [t0, t1): worker-local, merged by merge().
function result(st) {
  const { ledger, t0, t1 } = st;
  const lat = [];
  const acc = [];
  let sent = 0;
  let accepted = 0;
  let refused = 0;
  let delivered = 0;
  let lost = 0;
  let unanswered = 0;
  let undelivered = 0;
  for (let k = 0; k < ledger.length; k++) {
    const t = ledger.sentAt[k];
    if (t < t0 || t >= t1) continue;
    sent += 1;
    const f = ledger.flags[k];
    if (f & ACCEPTED) {
      accepted += 1;
      acc.push(ledger.answeredAt[k] - t);
    } else if (f & REFUSED) {
      refused += 1;
    } else {
      unanswered += 1;
    }
    if (f & DELIVERED) {
      delivered += 1;
      lat.push(ledger.deliveredAt[k] - t);
    } else if (!(f & REFUSED)) {
      undelivered += 1;
      if (f & ACCEPTED) lost += 1;
    }
  }
  return {
    sent, accepted, refused, delivered, lost, unanswered, undelivered,
    delivered_in_window: st.deliveredInWindow,
    accepted_in_window: st.acceptedInWindow,
    all_sent: st.sent, all_delivered: st.delivered, duplicates: st.duplicates,
    unknown: st.unknown, stale: st.stale, acks_sent: st.acksSent, refusals: st.refusals,
    disconnects: st.disconnects, late_sends: st.lateSends, max_lag_ms: round3(st.maxLagMs),
    drain_ms: round3((st.drainedAt || t1) - t1),
    latency: Float64Array.from(lat), accepted_latency: Float64Array.from(acc),
  };
}

async function teardown(st) {
  st.closing = true;
  const conns = st.pairs.flatMap((p) => [p.sender, p.receiver]).filter(Boolean);
  await closeAll(conns);
}

// Close handshakes on every connection; give up on stragglers after 3 s.
function closeAll(conns) {
  return new Promise((resolve) => {
    let left = conns.filter((c) => c.state !== 3).length;
    if (left === 0) return resolve();
    const timer = setTimeout(resolve, 4000);
    for (const c of conns) {
      if (c.state === 3) continue;
      const prev = c.h.onClose;
      c.h = { onClose: (conn) => {
        if (prev) prev(conn);
        if (--left === 0) { clearTimeout(timer); resolve(); }
      } };
      c.closeWithin(3000);
    }
    return undefined;
  });
}

function merge(opts, parts, seconds) {
  const lat = concatSamples(parts, 'latency');
  const acc = concatSamples(parts, 'accepted_latency');
  const out = {};
  for (const f of ['sent', 'accepted', 'refused', 'delivered', 'lost', 'unanswered',
    'undelivered', 'delivered_in_window', 'accepted_in_window', 'all_sent', 'all_delivered',
    'duplicates', 'unknown', 'stale', 'acks_sent', 'late_sends']) out[f] = total(parts, f);
  out.refusals = sumCounts(parts.map((p) => p.refusals));
  out.disconnects = sumCounts(parts.map((p) => p.disconnects));
  out.max_lag_ms = Math.max(0, ...parts.map((p) => p.max_lag_ms));
  out.drain_ms = Math.max(0, ...parts.map((p) => p.drain_ms));
  out.offered_per_s = opts.rate || null;
  out.sent_per_s = round3(out.sent / seconds);
  out.delivered_per_s = round3(out.delivered_in_window / seconds);
  out.accepted_per_s = round3(out.accepted_in_window / seconds);
  out.latency_ms = {
    send_to_delivered: summary(lat, out.undelivered),
    send_to_accepted: summary(acc, out.unanswered),
  };
  Object.assign(out, headline(out.latency_ms.send_to_delivered));
  out.count = out.delivered_in_window;
  return out;
}

module.exports = { accountsNeeded, split, setup, run, teardown, merge, closeAll };
