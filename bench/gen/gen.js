#!/usr/bin/env node
'use strict';
// relay's fast load generator (plain Node 20, no build step). See README.md.
//
//   node gen.js MODE --ws ws://127.0.0.1:PORT/ws [--http http://127.0.0.1:PORT | --peer] [options]
//
// messages: --ws URL,URL,… spreads the pairs over several servers sharing one
// store (several relay processes): pair i's sender on URL[i % n], its
// receiver on URL[(i + floor(i / n)) % n], so about half the pairs cross.
//
// MODE is messages, echo, handshakes, idle or pair. The coordinator (this
// process) creates relay accounts if needed (--http), splits the work over
// --procs worker processes (forked copies of this file; with --procs 1 the
// work runs in this process), starts them together on one schedule, reads
// the server's CPU and RSS from /proc at the window's edges
// (--server-pid), and prints one JSON report (--json PATH, default stdout).

const { parseArgs } = require('node:util');
const { fork } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const { parseTarget, isLoopback } = require('./lib/target');
const { openAccounts } = require('./lib/accounts');
const stats = require('./lib/stats');

const MODES = {
  messages: require('./lib/modes/messages'),
  echo: require('./lib/modes/echo'),
  handshakes: require('./lib/modes/handshakes'),
  idle: require('./lib/modes/idle'),
  pair: require('./lib/modes/pair'),
};

const OPTIONS = {
  ws: { type: 'string' },
  http: { type: 'string' },
  peer: { type: 'boolean', default: false },
  procs: { type: 'string', default: '1' },
  sources: { type: 'string', default: '' },
  'server-pid': { type: 'string' },
  duration: { type: 'string', default: '10' },
  warmup: { type: 'string' },
  drain: { type: 'string', default: '5' },
  json: { type: 'string', default: '-' },
  'ready-file': { type: 'string' },
  'accounts-file': { type: 'string' },
  quiet: { type: 'boolean', default: false },
  // messages
  pairs: { type: 'string', default: '50' },
  rate: { type: 'string' },
  window: { type: 'string' },
  ack: { type: 'string', default: 'each' },
  'body-bytes': { type: 'string', default: '0' },
  'no-cross': { type: 'boolean', default: false },
  // echo, idle
  connections: { type: 'string', default: '100' },
  // handshakes
  concurrency: { type: 'string', default: '50' },
  accounts: { type: 'string', default: '8' },
  'no-ready': { type: 'boolean', default: false },
  timeout: { type: 'string', default: '10' },
  // idle
  hold: { type: 'string' },
  'per-account': { type: 'string', default: '64' },
  'open-concurrency': { type: 'string', default: '100' },
  worker: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
};

const USAGE = `usage: node gen.js MODE --ws URL [--http URL | --peer] [options]   (see README.md)
modes: messages (--pairs N --rate R | --window W, --ack each|batch|none;
                 --ws URL,URL,… [--no-cross])
       echo (--connections N --window W)
       handshakes (--concurrency C --accounts K [--no-ready])
       idle (--connections N --hold S --per-account C [--no-ready])
       pair (--rate R round trips/s)
common: --procs N --sources IP,IP --server-pid PID --duration S --warmup S --drain S --json PATH
        --accounts-file PATH (reuse/save relay accounts) --ready-file PATH (touched when set up)`;

function fail(message) {
  process.stderr.write(`gen: ${message}\n${USAGE}\n`);
  process.exit(2);
}

// The options of a run as plain data (crosses to the workers).
function options(values, mode) {
  const num = (name) => {
    const v = Number(values[name]);
    if (!Number.isFinite(v) || v < 0) fail(`--${name} must be a number >= 0`);
    return v;
  };
  const opts = {
    mode, ws: values.ws, http: values.http || null, peer: values.peer,
    procs: Math.max(1, Math.floor(num('procs'))),
    sources: values.sources ? values.sources.split(',').filter(Boolean) : [],
    serverPid: values['server-pid'] ? Number(values['server-pid']) : null,
    duration: values.hold !== undefined ? num('hold') : num('duration'),
    drain: num('drain'),
    pairs: num('pairs'), rate: values.rate ? num('rate') : null,
    window: values.window ? num('window') : null, ack: values.ack,
    bodyBytes: num('body-bytes'), noCross: values['no-cross'], connections: num('connections'),
    concurrency: num('concurrency'), accounts: num('accounts'), noReady: values['no-ready'],
    timeout: num('timeout'), perAccount: Math.max(1, num('per-account')),
    openConcurrency: Math.max(1, num('open-concurrency')), quiet: values.quiet,
    readyFile: values['ready-file'] || null, accountsFile: values['accounts-file'] || null,
    // Tags this run's messages: a message replayed from an earlier run on
    // the same accounts is counted as stale, never as a delivery.
    runId: Math.floor(Math.random() * 2 ** 31),
  };
  const warmDefault = { messages: 1, echo: 1, handshakes: 0.5, idle: 0, pair: 0 }[mode];
  opts.warmup = values.warmup !== undefined ? num('warmup') : warmDefault;
  if (!opts.ws) fail('--ws is required');
  const urls = opts.ws.split(',');
  if (urls.length > 1 && mode !== 'messages') fail('several --ws URLs: messages mode only');
  for (const url of urls) {
    try {
      parseTarget(url, opts.peer);
    } catch (err) {
      fail(`--ws: ${err.message}`);
    }
  }
  if (!opts.peer && !opts.http && mode !== 'echo') fail('--http (relay) or --peer is required');
  if (opts.http && !isLoopback(new URL(opts.http).hostname)) fail('--http must be loopback');
  for (const s of opts.sources) if (!isLoopback(s)) fail(`--sources must be loopback: ${s}`);
  if (mode === 'messages' && !opts.rate === !opts.window) fail('messages: --rate or --window');
  if (mode === 'pair' && !opts.rate) opts.rate = 50;
  if (!['each', 'batch', 'none'].includes(opts.ack)) fail('--ack each|batch|none');
  if (mode === 'pair') opts.procs = 1;
  if (mode === 'echo') opts.peer = true;
  return opts;
}

function log(opts, text) {
  if (!opts.quiet) process.stderr.write(`gen ${opts.mode}: ${text}\n`);
}

// --- workers -------------------------------------------------------------------
// A worker runs one share: setup → (wait for the go) → run → teardown. The
// same steps run in-process for --procs 1; over IPC otherwise.

class LocalWorker {
  constructor(opts, share) {
    this.opts = opts;
    this.share = share;
  }

  async setup() {
    const mode = MODES[this.opts.mode];
    const targets = this.opts.ws.split(',').map((url) => parseTarget(url, this.opts.peer));
    const out = await mode.setup(this.opts, this.share, targets[0], targets);
    this.state = out.state;
    return out.info;
  }

  run(window) {
    return runMeasured(MODES[this.opts.mode], this.state, window);
  }

  teardown() {
    return MODES[this.opts.mode].teardown(this.state);
  }
}

// Run a share and measure this process's CPU and loop delay over [t0, t1).
// The marks are taken by the same wake-ups that release the mode (the
// window's `reached` promises), so a mode never gets past t1 before the
// closing mark is taken.
async function runMeasured(mode, state, window) {
  const marks = {};
  const reached = {
    go: stats.reach(window.go),
    t0: stats.reach(window.t0, () => {
      marks.cpu0 = stats.selfCpu();
      marks.sched0 = stats.procSched();
      marks.at0 = stats.nowMs();
      marks.delay = stats.loopDelay();
    }),
    t1: stats.reach(window.t1, () => {
      marks.cpu1 = stats.selfCpu();
      marks.sched1 = stats.procSched();
      marks.at1 = stats.nowMs();
      marks.delayed = marks.delay();
    }),
  };
  const part = await mode.run(state, { ...window, reached });
  await reached.t1;
  const wall = (marks.at1 - marks.at0) / 1000;
  part.cpu = {
    pid: process.pid,
    cpu_s: stats.round3(marks.cpu1 - marks.cpu0),
    share: stats.round3((marks.cpu1 - marks.cpu0) / Math.max(1e-9, wall)),
    runq_wait_share: marks.sched0 && marks.sched1 ? stats.round3(
      (marks.sched1.wait_ns - marks.sched0.wait_ns) / 1e9 / Math.max(1e-9, wall)) : null,
    loop_delay: marks.delayed,
    cpus_allowed: stats.allowedCpus(),
  };
  return part;
}

class RemoteWorker {
  constructor(opts, share, index) {
    this.child = fork(__filename, ['--worker'], { serialization: 'advanced' });
    this.waiting = null;
    this.child.on('message', (msg) => {
      const w = this.waiting;
      this.waiting = null;
      if (w) (msg.error ? w.reject(new Error(msg.error)) : w.resolve(msg.value));
    });
    this.child.on('exit', (code) => {
      if (this.waiting) this.waiting.reject(new Error(`worker ${index} exited (${code})`));
    });
    this.opts = opts;
    this.share = share;
  }

  call(cmd, arg) {
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
      this.child.send({ cmd, arg });
    });
  }

  setup() {
    return this.call('setup', { opts: this.opts, share: this.share });
  }

  run(window) {
    return this.call('run', window);
  }

  async teardown() {
    await this.call('teardown');
    this.child.disconnect();
  }
}

function workerMain() {
  let local = null;
  process.on('message', async ({ cmd, arg }) => {
    try {
      let value;
      if (cmd === 'setup') {
        local = new LocalWorker(arg.opts, arg.share);
        value = await local.setup();
      } else if (cmd === 'run') {
        value = await local.run(arg);
      } else if (cmd === 'teardown') {
        value = await local.teardown();
      }
      process.send({ value });
    } catch (err) {
      process.send({ error: String(err && err.stack ? err.stack : err) });
    }
  });
}

// --- the coordinator --------------------------------------------------------------

// The server's CPU seconds and RSS now (null without --server-pid).
function serverSample(pid) {
  if (!pid) return null;
  return { at: stats.nowMs(), cpu_s: stats.procCpu(pid), rss_kb: stats.procRssKb(pid),
    sched: stats.procSched(pid) };
}

// What else ran on a group of CPUs: their busy share (summed, in cores) less
// what *used* (the server's or the generator's CPU share, in cores) took.
function othersOn(cpus, shares, used) {
  if (!cpus.length || cpus.some((c) => shares[c] === undefined)) return null;
  const busy = cpus.reduce((acc, c) => acc + shares[c], 0);
  return stats.round3(Math.max(0, busy - used));
}

// Which side bounded the figure: a side whose CPU use reached 90% of what
// it may use ("server", "generator", "both"), or that used less only because
// other processes took the rest of its core(s) (its CPU + the others' on the
// same cores >= 90%: "… (core shared)"); "neither" when both had room (the
// figure is then set by latency, e.g. the closed loop's window, a commit
// delay, an fsync, not by a CPU).
function verdict(server, genShare, genOthers, genCores) {
  const busy = (cpu, others, cores) => {
    if (cpu === null || cpu === undefined) return 0;
    if (cpu >= 0.9 * cores) return 2;
    return others !== null && others !== undefined && cpu + others >= 0.9 * cores ? 1 : 0;
  };
  const s = busy(server.cpu_share, server.others_on_its_cores, 1);
  const g = busy(genShare, genOthers, genCores);
  const names = [];
  if (s) names.push(s === 2 ? 'server' : 'server (core shared)');
  if (g) names.push(g === 2 ? 'generator' : 'generator (core shared)');
  return names.length ? names.join(' + ') : 'neither';
}

function cpuCount(list) {
  if (!list) return os.cpus().length;
  let n = 0;
  for (const part of list.split(',')) {
    const [a, b] = part.split('-').map(Number);
    n += b === undefined ? 1 : b - a + 1;
  }
  return n;
}

// *n* logged-in relay accounts: from --accounts-file when it holds enough
// for this relay (tokens live 15 minutes: reuse them within one figure
// only), else made now (and saved there).
async function relayAccounts(opts, n) {
  const file = opts.accountsFile;
  if (file && fs.existsSync(file)) {
    const saved = JSON.parse(fs.readFileSync(file, 'utf8'));
    if (saved.http === opts.http && saved.accounts.length >= n) {
      return { accounts: saved.accounts.slice(0, n), tally: { reused: n, file } };
    }
  }
  log(opts, `creating ${n} accounts on ${opts.http}`);
  const made = await openAccounts(opts.http, n, { concurrency: 8 });
  if (made.accounts.length < n) {
    throw new Error(`only ${made.accounts.length}/${n} accounts: ${JSON.stringify(made.tally)}`);
  }
  if (file) fs.writeFileSync(file, JSON.stringify({ http: opts.http, accounts: made.accounts }));
  await stats.sleep(500); // let the login traffic settle (idle reads RSS next)
  return made;
}

async function coordinate(opts, argv) {
  const mode = MODES[opts.mode];
  const started = new Date().toISOString();
  const cpu0 = stats.selfCpu();
  let accounts = [];
  let setupAccounts = null;
  if (!opts.peer && opts.http) {
    const n = mode.accountsNeeded(opts);
    if (n > 0) {
      const made = await relayAccounts(opts, n);
      accounts = made.accounts;
      setupAccounts = made.tally;
    }
  }
  const before = serverSample(opts.serverPid);
  const shares = mode.split(opts, accounts, opts.procs);
  const workers = shares.map((share, i) => (shares.length === 1
    ? new LocalWorker(opts, share) : new RemoteWorker(opts, share, i)));
  log(opts, `setting up ${workers.length} worker(s)`);
  const setupStarted = stats.nowMs();
  const infos = await Promise.all(workers.map((w) => w.setup()));
  const setupS = (stats.nowMs() - setupStarted) / 1000;
  const go = stats.nowMs() + 200;
  const t0 = go + opts.warmup * 1000;
  const t1 = t0 + opts.duration * 1000;
  const marks = {};
  const rssDuring = [];
  const serverMarks = [
    stats.reach(t0, () => {
      marks.s0 = serverSample(opts.serverPid);
      marks.cpus0 = stats.cpuTimes();
    }),
    stats.reach(t1, () => {
      marks.s1 = serverSample(opts.serverPid);
      marks.cpus1 = stats.cpuTimes();
    }),
  ];
  const rssTimer = opts.serverPid ? setInterval(() => {
    const now = stats.nowMs();
    if (now >= t0 && now < t1) rssDuring.push(stats.procRssKb(opts.serverPid));
  }, 250) : null;
  if (opts.readyFile) fs.writeFileSync(opts.readyFile, `${go}\n`);
  log(opts, `running: warm-up ${opts.warmup} s, window ${opts.duration} s`);
  const parts = await Promise.all(workers.map((w) => w.run({ go, t0, t1 })));
  await Promise.all(serverMarks);
  if (rssTimer) clearInterval(rssTimer);
  const seconds = (t1 - t0) / 1000;
  const result = mode.merge(opts, parts, seconds);
  await Promise.all(workers.map((w) => w.teardown()));

  const genCpu = parts.reduce((acc, p) => acc + p.cpu.cpu_s, 0);
  const genShare = genCpu / seconds;
  const genWait = parts.every((p) => p.cpu.runq_wait_share !== null)
    ? parts.reduce((acc, p) => acc + p.cpu.runq_wait_share, 0) : null;
  const cpus = parts[0].cpu.cpus_allowed;
  const genCores = Math.min(cpuCount(cpus), opts.procs);
  const server = { pid: opts.serverPid };
  const coresBusy = stats.busyShares(marks.cpus0 || {}, marks.cpus1 || {});
  const serverCpus = opts.serverPid ? stats.cpusOf(opts.serverPid) : [];
  const genCpus = stats.cpusOf();
  if (marks.s0 && marks.s1 && marks.s0.cpu_s !== null && marks.s1.cpu_s !== null) {
    const wall = (marks.s1.at - marks.s0.at) / 1000;
    server.cpu_s = stats.round3(marks.s1.cpu_s - marks.s0.cpu_s);
    server.cpu_share = stats.round3(server.cpu_s / wall);
    if (marks.s0.sched && marks.s1.sched) { // time its main thread waited for a CPU
      server.runq_wait_share = stats.round3(
        (marks.s1.sched.wait_ns - marks.s0.sched.wait_ns) / 1e9 / wall);
    }
    server.cpu_us_per_op = result.count ? stats.round3((1e6 * server.cpu_s) / result.count) : null;
    // Other processes' (and the kernel's) use of the server's core(s): a
    // server below 90% whose core was full anyway shared it.
    server.cpus = serverCpus;
    server.others_on_its_cores = othersOn(serverCpus, coresBusy, server.cpu_share);
    server.rss_before_setup_kb = before && before.rss_kb;
    server.rss_at_t0_kb = marks.s0.rss_kb;
    server.rss_at_t1_kb = marks.s1.rss_kb;
    server.rss_max_window_kb = rssDuring.length ? Math.max(...rssDuring) : null;
  }
  const generator = {
    procs: opts.procs,
    cpus_allowed: cpus,
    cpu_s: stats.round3(genCpu),
    cpu_share: stats.round3(genShare),
    runq_wait_share: genWait === null ? null : stats.round3(genWait),
    cpus: genCpus,
    others_on_its_cores: othersOn(genCpus, coresBusy, genShare),
    cores: genCores,
    per_process: parts.map((p) => p.cpu),
    coordinator_cpu_s: stats.round3(stats.selfCpu() - cpu0),
  };
  for (const p of parts) delete p.cpu;
  return {
    tool: 'bench/gen', mode: opts.mode, command: argv, started_at: started,
    finished_at: new Date().toISOString(),
    target: { ws: opts.ws, http: opts.http, peer: opts.peer },
    params: opts, window_s: stats.round3(seconds), setup_s: stats.round3(setupS),
    accounts: setupAccounts, setup: infos, results: result, server, generator,
    cores_busy: coresBusy,
    bound_by: verdict(server, genShare, generator.others_on_its_cores, genCores),
  };
}

async function main() {
  let parsed;
  try {
    parsed = parseArgs({ options: OPTIONS, allowPositionals: true });
  } catch (err) {
    fail(err.message);
  }
  const { values, positionals } = parsed;
  if (values.worker) return workerMain();
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return undefined;
  }
  const mode = positionals[0];
  if (!MODES[mode]) fail(`unknown mode ${mode}`);
  const opts = options(values, mode);
  const report = await coordinate(opts, process.argv.slice(1));
  const text = `${JSON.stringify(report, null, 1)}\n`;
  if (opts.json === '-' || values.json === '-') process.stdout.write(text);
  else fs.writeFileSync(values.json, text);
  const r = report.results;
  log(opts, `done: ${r.count} in ${report.window_s} s; p99 ${r.p99_ms} ms; server ` +
    `${report.server.cpu_share ?? '?'} core, generator ${report.generator.cpu_share} ` +
    `(bound by ${report.bound_by})`);
  return undefined;
}

main().catch((err) => {
  process.stderr.write(`gen: ${err.stack || err}\n`);
  process.exit(1);
});
