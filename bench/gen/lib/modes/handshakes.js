'use strict';
// handshakes: closed loop, C attempts in flight. One attempt = TCP connect +
// upgrade (Bearer token on relay) + wait for `ready` (unless --no-ready: a
// bare echo server sends nothing) + close handshake (our close frame, the
// server's close, its hang-up). An attempt counts as `ok` when all of that
// happened; otherwise by the HTTP status (429, 503, …), the socket error, or
// `timeout`. Rate = attempts completed ok within [t0, t1).

const { pick, dial } = require('../target');
const { nowMs, round3, summary, Samples } = require('../stats');
const { headline, bump, sumCounts, total, concatSamples } = require('./common');

function accountsNeeded(opts) {
  return opts.accounts;
}

function split(opts, accounts, procs) {
  const whos = opts.peer ? [{ username: 'hs' }] : accounts;
  return Array.from({ length: procs }, (_, w) => ({
    whos,
    concurrency: Math.floor(opts.concurrency / procs) + (w < opts.concurrency % procs ? 1 : 0),
    offset: w,
  }));
}

async function setup(opts, share, target) {
  return { state: { opts, share, target, outcomes: {}, okInWindow: 0, attempts: 0,
    ready: new Samples(), cycle: new Samples(), unclean: 0 }, info: {} };
}

// One attempt; resolves when its socket is closed.
function attempt(st, i) {
  const { opts, target, share } = st;
  const started = nowMs();
  let readyAt = 0;
  const expectReady = !opts.noReady;
  return new Promise((resolve) => {
    dial(target, share.whos[i % share.whos.length], {
      onOpen(conn) {
        if (!expectReady) {
          readyAt = nowMs();
          conn.close(1000);
        }
      },
      onText(conn) {
        if (!readyAt) {
          readyAt = nowMs();
          conn.close(1000);
        }
      },
      onClose(conn) {
        const now = nowMs();
        let outcome;
        if (conn.status === 101 && readyAt) {
          outcome = 'ok';
          if (!conn.closeCode) st.unclean += 1; // hung up without a close frame
        } else if (conn.status && conn.status !== 101) {
          outcome = String(conn.status);
        } else if (conn.status === 101) {
          outcome = conn.error === 'timeout' ? 'timeout_after_101' : 'closed_before_ready';
        } else {
          outcome = conn.error || 'closed';
        }
        bump(st.outcomes, outcome);
        if (outcome === 'ok' && now >= st.t0 && now < st.t1) {
          st.okInWindow += 1;
          st.ready.add(readyAt - started);
          st.cycle.add(now - started);
        }
        resolve();
      },
    }, { source: pick(opts.sources, i + share.offset), timeoutMs: opts.timeout * 1000 });
  });
}

async function run(st, { t0, t1, reached }) {
  st.t0 = t0;
  st.t1 = t1;
  await reached.go;
  // C loops; loop j makes attempts j, j + C, j + 2C, … so that sources and
  // tokens rotate over every loop.
  const c = st.share.concurrency;
  await Promise.all(Array.from({ length: c }, async (_, j) => {
    for (let n = 0; nowMs() < t1; n++) {
      st.attempts += 1;
      await attempt(st, j + c * n);
    }
  }));
  return { ok_in_window: st.okInWindow, attempts: st.attempts, outcomes: st.outcomes,
    unclean_closes: st.unclean, ready_latency: st.ready.values(), cycle_latency: st.cycle.values() };
}

async function teardown() {}

function merge(opts, parts, seconds) {
  const out = { ok_in_window: total(parts, 'ok_in_window'), attempts: total(parts, 'attempts'),
    unclean_closes: total(parts, 'unclean_closes'),
    outcomes: sumCounts(parts.map((p) => p.outcomes)) };
  out.handshakes_per_s = round3(out.ok_in_window / seconds);
  out.latency_ms = {
    open_to_ready: summary(concatSamples(parts, 'ready_latency')),
    full_cycle: summary(concatSamples(parts, 'cycle_latency')),
  };
  Object.assign(out, headline(out.latency_ms.open_to_ready));
  out.count = out.ok_in_window;
  return out;
}

module.exports = { accountsNeeded, split, setup, run, teardown, merge };
