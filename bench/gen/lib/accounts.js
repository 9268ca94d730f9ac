'use strict';
// Throw-away relay accounts: POST /api/accounts, then POST /api/login (one
// device each). A 429 (login or registration limit) is waited out for its
// Retry-After and counted; the bench's relay config lifts those limits, so
// none should appear there.

const crypto = require('node:crypto');
const { sleep } = require('./stats');

async function post(http, path, body) {
  const res = await fetch(http + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = null;
  }
  return { status: res.status, json, retryAfter: Number(res.headers.get('retry-after')) || 1 };
}

// Post until the answer is not a 429 (each 429 waited out and counted).
async function postPatiently(http, path, body, tally) {
  for (;;) {
    const res = await post(http, path, body);
    if (res.status !== 429) return res;
    tally.rate_limited += 1;
    await sleep(res.retryAfter * 1000);
  }
}

// Register and log in *count* accounts, *concurrency* at a time.
// Returns {accounts: [{username, token, user_id, device_id}], tally}.
async function openAccounts(http, count, { prefix = 'gen', concurrency = 8 } = {}) {
  const run = crypto.randomBytes(3).toString('hex');
  const tally = { wanted: count, registered: 0, logged_in: 0, rate_limited: 0, failures: {} };
  const accounts = new Array(count);
  const started = Date.now();
  let next = 0;
  const fail = (kind) => { tally.failures[kind] = (tally.failures[kind] || 0) + 1; };

  async function one(i) {
    const username = `${prefix}-${run}-${i}`;
    const password = crypto.randomBytes(12).toString('base64url');
    const reg = await postPatiently(http, '/api/accounts', { username, password }, tally);
    if (reg.status !== 201) return fail(`register:${reg.status}`);
    tally.registered += 1;
    const login = await postPatiently(
      http, '/api/login', { username, password, device_name: 'bench-gen' }, tally);
    if (login.status !== 200 || !login.json) return fail(`login:${login.status}`);
    tally.logged_in += 1;
    accounts[i] = {
      username, token: login.json.access_token, user_id: login.json.user_id,
      device_id: login.json.device_id,
    };
    return undefined;
  }

  async function worker() {
    while (next < count) {
      const i = next++;
      try {
        await one(i);
      } catch (err) {
        fail(err.cause?.code || err.name || 'error');
      }
    }
  }

  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  tally.seconds = (Date.now() - started) / 1000;
  return { accounts: accounts.filter(Boolean), tally };
}

module.exports = { openAccounts };
