'use strict';
// idle: open N connections (relay: authenticated, spread over accounts,
// --per-account each), wait for `ready` (or the 101 on a bare echo server:
// --no-ready), then hold them for the window, reading and answering pings,
// sending nothing. Reports survivors, drops by close code, pings answered;
// the coordinator reads the server's RSS before the ramp and at the end of
// the hold (--server-pid).

const { pick, openAll } = require('../target');
const { nowMs, round3 } = require('../stats');
const { bump, sumCounts, total } = require('./common');
const { closeAll } = require('./messages');

function accountsNeeded(opts) {
  return Math.ceil(opts.connections / opts.perAccount);
}

function split(opts, accounts, procs) {
  return Array.from({ length: procs }, (_, w) => {
    const conns = [];
    for (let i = w; i < opts.connections; i += procs) {
      const who = opts.peer ? { username: `i${i % 1000}` } : accounts[i % accounts.length];
      conns.push({ who, source: pick(opts.sources, i) });
    }
    return { conns };
  });
}

async function setup(opts, share, target) {
  const st = { opts, pings: 0, dropped: {}, droppedInHold: 0, holding: false, closing: false };
  const started = nowMs();
  const specs = share.conns.map((c) => ({ who: c.who, source: c.source, handlers: {
    onPing() { st.pings += 1; },
    onClose(conn) {
      if (st.closing) return;
      bump(st.dropped, conn.closeCode ? String(conn.closeCode) : conn.error || 'closed');
      if (st.holding) st.droppedInHold += 1;
    },
  } }));
  const { conns, failures } = await openAll(target, specs, {
    concurrency: opts.openConcurrency, expectReady: !opts.noReady, timeoutMs: opts.timeout * 1000,
  });
  st.conns = conns.filter(Boolean);
  return { state: st, info: { established: st.conns.length, wanted: specs.length, failures,
    ramp_s: round3((nowMs() - started) / 1000) } };
}

async function run(st, { reached }) {
  await reached.go;
  st.holding = true;
  const pings0 = st.pings;
  await reached.t1;
  st.holding = false;
  return { survived: st.conns.filter((c) => c.open).length, established: st.conns.length,
    pings_in_hold: st.pings - pings0, dropped: st.dropped, dropped_in_hold: st.droppedInHold };
}

async function teardown(st) {
  st.closing = true;
  await closeAll(st.conns);
}

function merge(opts, parts) {
  return {
    connections: opts.connections,
    established: total(parts, 'established'),
    survived: total(parts, 'survived'),
    pings_in_hold: total(parts, 'pings_in_hold'),
    dropped_in_hold: total(parts, 'dropped_in_hold'),
    dropped: sumCounts(parts.map((p) => p.dropped)),
    count: total(parts, 'survived'),
  };
}

module.exports = { accountsNeeded, split, setup, run, teardown, merge };
