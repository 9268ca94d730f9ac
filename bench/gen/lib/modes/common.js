'use strict';
// What the modes share: growable per-message arrays, counters by key, and
// merging workers' partial results.

// Add *n* to counts[key].
function bump(counts, key, n = 1) {
  counts[key] = (counts[key] || 0) + n;
}

// Sum counters ({key: n}) of several partial results.
function sumCounts(list) {
  const out = {};
  for (const counts of list) for (const [k, v] of Object.entries(counts || {})) bump(out, k, v);
  return out;
}

// Sum a numeric field over partial results.
function total(parts, field) {
  return parts.reduce((acc, p) => acc + (p[field] || 0), 0);
}

// Concatenate Float64Array/array samples of several partial results.
function concatSamples(parts, field) {
  const length = parts.reduce((acc, p) => acc + p[field].length, 0);
  const out = new Float64Array(length);
  let at = 0;
  for (const p of parts) {
    out.set(p[field], at);
    at += p[field].length;
  }
  return out;
}

// Per-message arrays indexed by a worker's message sequence number, grown
// by doubling: send time, answer time, delivery time (epoch ms) and flags.
const ACCEPTED = 1;
const REFUSED = 2;
const DELIVERED = 4;

class Ledger {
  constructor(capacity = 1 << 16) {
    this.sentAt = new Float64Array(capacity);
    this.answeredAt = new Float64Array(capacity);
    this.deliveredAt = new Float64Array(capacity);
    this.flags = new Uint8Array(capacity);
    this.length = 0;
  }

  // A new message sent at *t*: its sequence number.
  add(t) {
    if (this.length === this.flags.length) this._grow();
    this.sentAt[this.length] = t;
    return this.length++;
  }

  _grow() {
    const n = this.flags.length * 2;
    for (const name of ['sentAt', 'answeredAt', 'deliveredAt']) {
      const bigger = new Float64Array(n);
      bigger.set(this[name]);
      this[name] = bigger;
    }
    const flags = new Uint8Array(n);
    flags.set(this.flags);
    this.flags = flags;
  }
}

// p50/p99/max of a latency summary, flat; p99_unanswered when the p99 rank
// falls among sends never answered (p99_ms is then null: "infinite").
function headline(s) {
  return {
    p50_ms: s ? s.p50_ms : null,
    p99_ms: s ? s.p99_ms : null,
    p99_unanswered: Boolean(s && s.p99_ms === null),
    max_ms: s ? s.max_ms : null,
  };
}

module.exports = { headline, bump, sumCounts, total, concatSamples, Ledger, ACCEPTED, REFUSED, DELIVERED };
