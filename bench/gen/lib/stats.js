'use strict';
// Figures: exact percentiles over every sample, CPU of this process and of
// another one (read from /proc), the event loop's delay, the clock.

const fs = require('node:fs');
const { performance, monitorEventLoopDelay } = require('node:perf_hooks');

// Milliseconds since the Unix epoch, sub-millisecond, monotonic within a
// process and comparable across processes of one machine.
const ORIGIN = performance.timeOrigin;
function nowMs() {
  return ORIGIN + performance.now();
}

// A growable array of float samples (milliseconds).
class Samples {
  constructor(capacity = 1024) {
    this.data = new Float64Array(capacity);
    this.length = 0;
  }

  add(value) {
    if (this.length === this.data.length) {
      const bigger = new Float64Array(this.data.length * 2);
      bigger.set(this.data);
      this.data = bigger;
    }
    this.data[this.length++] = value;
  }

  values() {
    return this.data.subarray(0, this.length);
  }
}

// Nearest-rank percentiles (always an observed value) of *values*, plus
// *infinite* samples that rank above every value (sends never answered).
// Returns null without samples.
function summary(values, infinite = 0) {
  const sorted = Float64Array.from(values).sort();
  const count = sorted.length + infinite;
  if (count === 0) return null;
  const rank = (q) => {
    const i = Math.max(0, Math.ceil((q / 100) * count) - 1);
    return i < sorted.length ? round3(sorted[i]) : null; // null: an unanswered one
  };
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    count,
    unanswered: infinite,
    min_ms: sorted.length ? round3(sorted[0]) : null,
    mean_ms: sorted.length ? round3(sum / sorted.length) : null,
    p50_ms: rank(50),
    p90_ms: rank(90),
    p99_ms: rank(99),
    p999_ms: rank(99.9),
    max_ms: infinite ? null : sorted.length ? round3(sorted[sorted.length - 1]) : null,
    max_answered_ms: sorted.length ? round3(sorted[sorted.length - 1]) : null,
  };
}

function round3(x) {
  return Math.round(x * 1000) / 1000;
}

// CPU seconds (user + system) of this process, all its threads.
function selfCpu() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

const CLK_TCK = 100; // USER_HZ on Linux
// CPU seconds of another process from /proc/<pid>/stat (utime + stime); null if gone.
function procCpu(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return null;
  }
}

// Nanoseconds a task spent on a CPU and waiting in a run queue for one
// (/proc/<pid>/schedstat; the main thread of a process). The wait is what
// "the core is shared" costs: a server that waits a lot was not free to run.
function procSched(pid = 'self') {
  try {
    const [run, wait] = fs.readFileSync(`/proc/${pid}/schedstat`, 'latin1').split(' ');
    return { run_ns: Number(run), wait_ns: Number(wait) };
  } catch {
    return null;
  }
}

// Busy and total jiffies of every CPU (/proc/stat): {cpu0: [busy, total], ...}.
// Busy = everything but idle and iowait (softirq included).
function cpuTimes() {
  const out = {};
  try {
    for (const line of fs.readFileSync('/proc/stat', 'latin1').split('\n')) {
      const m = /^(cpu\d+)\s+(.*)$/.exec(line);
      if (!m) continue;
      const f = m[2].trim().split(/\s+/).slice(0, 8).map(Number);
      const total = f.reduce((a, b) => a + b, 0);
      out[m[1]] = [total - f[3] - f[4], total];
    }
  } catch {
    // not Linux: no per-CPU figures
  }
  return out;
}

// Busy share of each CPU between two cpuTimes() readings.
function busyShares(before, after) {
  const out = {};
  for (const [cpu, [busy1, total1]] of Object.entries(after)) {
    if (!before[cpu]) continue;
    const [busy0, total0] = before[cpu];
    out[cpu] = round3((busy1 - busy0) / Math.max(1, total1 - total0));
  }
  return out;
}

// The CPUs a process may run on (its Cpus_allowed_list), as ['cpu0', ...].
function cpusOf(pid = 'self') {
  try {
    const m = /Cpus_allowed_list:\s*(\S+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'latin1'));
    const cpus = [];
    for (const part of m[1].split(',')) {
      const [a, b] = part.split('-').map(Number);
      for (let c = a; c <= (b === undefined ? a : b); c++) cpus.push(`cpu${c}`);
    }
    return cpus;
  } catch {
    return [];
  }
}

// VmRSS of another process in KiB; null if gone.
function procRssKb(pid) {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'latin1');
    const m = /VmRSS:\s+(\d+)/.exec(status);
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

// The CPUs this process may run on (from /proc/self/status), e.g. "1" or "0-1".
function allowedCpus() {
  try {
    const m = /Cpus_allowed_list:\s*(\S+)/.exec(fs.readFileSync('/proc/self/status', 'latin1'));
    return m ? m[1] : null;
  } catch {
    return null;
  }
}

// The event loop's delay over a window: a busy generator shows it first.
// Node's histogram records each sampling timer's whole interval, so the
// resolution is taken off: what is left is the lag.
const RESOLUTION_MS = 2;
function loopDelay() {
  const h = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
  h.enable();
  return () => {
    h.disable();
    return {
      p50_ms: lag(h.percentile(50)),
      p99_ms: lag(h.percentile(99)),
      max_ms: lag(h.max),
    };
  };
}

function lag(ns) {
  return round3(Math.max(0, ns / 1e6 - RESOLUTION_MS));
}

// Sleep until the epoch-ms time *at* (at once if it has passed).
function sleepUntil(at) {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, at - nowMs())));
}

// A promise resolved once the clock has reached *at* (never early: a timer
// that fires early is re-armed), after calling *fn* there.
function reach(at, fn = null) {
  return new Promise((resolve) => {
    const check = () => {
      const left = at - nowMs();
      if (left > 0) {
        setTimeout(check, left);
      } else {
        if (fn) fn();
        resolve();
      }
    };
    check();
  });
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

module.exports = {
  nowMs, Samples, summary, round3, selfCpu, procCpu, procSched, procRssKb, cpuTimes, busyShares, cpusOf, allowedCpus, loopDelay,
  sleepUntil, sleep, reach,
};
