"""The Lua scripts of the Redis Limits adapter: each one key, each atomic.

Each script is the arithmetic of the pure class it mirrors (``TokenBucket``,
``Lockout``, ``KnownSources``, ``RevocationList``), transcribed line for
line (``Places`` gains leases, which only a shared store needs), so that the
two adapters give the same answers to the same calls at the same times
(``tests/unit/limits/test_contract.py`` holds them to it).

Conventions shared by every script:

- ``ARGV[1]`` is *now* in seconds, or ``""`` for the server's clock
  (``TIME``): one clock for every relay process. Tests pass their own.
- Numbers go back and forth as ``%.17g`` strings, never as Lua numbers:
  Redis converts a Lua number to a reply integer (truncating it) and to a
  command argument with 14 significant digits; 17 digits round-trip a double.
- The stored state says when it stops mattering; ``PEXPIRE`` then removes
  it (a full bucket, an expired lock, an expired revocation), plus *slack*
  seconds (``ARGV[2]``) so that a key never vanishes while it still
  matters. The stored times, not the TTL, decide every answer.
- Each script touches only ``KEYS[1]``, so they also run on Redis Cluster.
"""

from __future__ import annotations

_COMMON = """
local function now_from(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function num(x) return string.format('%.17g', x) end
local function expire(key, seconds, slack)
  redis.call('PEXPIRE', key, string.format('%d', math.ceil((seconds + slack) * 1000)))
end
-- math.ulp: the gap between |x| and the next double.
local function ulp(x)
  local _, e = math.frexp(math.abs(x))
  return 2 ^ (e - 53)
end
local now = now_from(ARGV[1])
local slack = tonumber(ARGV[2])
"""

TAKE = (
    _COMMON
    + """
-- TokenBucket.take, then how long until one token is there (for blocked_for).
-- ARGV: now, slack, rate, burst, cost. Returns {granted (0/1), wait or ''}:
-- refused: the seconds until *cost* tokens are there; granted: until 1 is.
local rate, burst, cost = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local state = redis.call('HMGET', KEYS[1], 't', 'u')
local tokens, updated = burst, now
if state[1] then tokens, updated = tonumber(state[1]), tonumber(state[2]) end
if now > updated then
  tokens = math.min(burst, tokens + (now - updated) * rate)
  updated = now
end
local tolerance = math.max(1e-9, 4 * ulp(now)) * rate
local granted = 0
local shortfall = cost - tokens
if shortfall <= tolerance then
  tokens = math.max(0, tokens - cost)
  granted = 1
  shortfall = 1 - tokens
end
if tokens >= burst then
  redis.call('DEL', KEYS[1])  -- full: indistinguishable from no bucket at all
else
  redis.call('HSET', KEYS[1], 't', num(tokens), 'u', num(updated))
  expire(KEYS[1], (burst - tokens) / rate, slack)
end
if shortfall <= tolerance then return {granted, ''} end
return {granted, num(shortfall / rate)}
"""
)

LOCKED_FOR = (
    _COMMON
    + """
-- Lockout.locked_for. ARGV: now, slack, duration. Returns the seconds left, or nil.
local locked_at = redis.call('HGET', KEYS[1], 'l')
if not locked_at then return nil end
local remaining = tonumber(ARGV[3]) - (now - tonumber(locked_at))
if remaining > 0 then return num(remaining) end
return nil
"""
)

RECORD_FAILURE = (
    _COMMON
    + """
-- Lockout.record_failure. ARGV: now, slack, threshold, window, duration.
-- State: 'l' the locking failure's time, 'f' the failures inside the window
-- (ascending, comma-separated; never threshold of them between calls).
-- Returns the lock's seconds if this failure locked the key, else nil.
local threshold, window, duration = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local state = redis.call('HMGET', KEYS[1], 'l', 'f')
if state[1] and duration - (now - tonumber(state[1])) > 0 then
  return nil  -- locked: ignored, neither extending the lock nor counting
end
local failures = {}
if state[2] then
  for stamp in string.gmatch(state[2], '[^,]+') do
    local t = tonumber(stamp)
    if now - t < window then failures[#failures + 1] = stamp end
  end
end
failures[#failures + 1] = num(now)
if #failures >= threshold then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'l', num(now))
  expire(KEYS[1], duration, slack)
  return num(duration)
end
redis.call('HDEL', KEYS[1], 'l')
redis.call('HSET', KEYS[1], 'f', table.concat(failures, ','))
expire(KEYS[1], window, slack)
return nil
"""
)

CLEAR_FAILURES = """
-- Lockout.clear: forget the failures; a key holding a lock keeps it.
if redis.call('HEXISTS', KEYS[1], 'l') == 0 then redis.call('DEL', KEYS[1]) end
return nil
"""

REMEMBER = (
    _COMMON
    + """
-- KnownSources.remember. ARGV: now, slack, member, ttl, per_key.
-- A sorted set: member -> until. Expired members go; past per_key members,
-- those expiring first go (the least recently remembered, as every caller
-- remembers with the same ttl).
local member, ttl, per_key = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZADD', KEYS[1], 'GT', num(now + ttl), member)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', num(now))
local extra = redis.call('ZCARD', KEYS[1]) - per_key
if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, extra - 1) end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then expire(KEYS[1], tonumber(last[2]) - now, slack) end
return nil
"""
)

KNOWS = (
    _COMMON
    + """
-- KnownSources.knows. ARGV: now, slack, member. Returns 1 or 0.
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[3])
if expiry and now < tonumber(expiry) then return 1 end
return 0
"""
)

REVOKE = (
    _COMMON
    + """
-- RevocationList.revoke: revoked until now + ttl, never shortened.
-- ARGV: now, slack, ttl. The key lives as long as the revocation (+ slack).
local ttl = tonumber(ARGV[3])
local current = redis.call('GET', KEYS[1])
if current and tonumber(current) >= now + ttl then return nil end
redis.call('SET', KEYS[1], num(now + ttl))
expire(KEYS[1], ttl, slack)
return nil
"""
)

IS_REVOKED = (
    _COMMON
    + """
-- RevocationList.is_revoked. ARGV: now, slack. Returns 1 or 0.
local expiry = redis.call('GET', KEYS[1])
if expiry and now < tonumber(expiry) then return 1 end
return 0
"""
)

OCCUPY = (
    _COMMON
    + """
-- Places.occupy, with leases. ARGV: now, slack, cap, lease, holder.
-- A sorted set: holder -> until (its lease). A lease not renewed in time
-- (its process died) frees the place. Returns 1 if held, 0 if all are taken.
local cap, lease, holder = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', num(now))
if not redis.call('ZSCORE', KEYS[1], holder) and redis.call('ZCARD', KEYS[1]) >= cap then
  return 0
end
redis.call('ZADD', KEYS[1], num(now + lease), holder)
expire(KEYS[1], lease, slack)
return 1
"""
)

VACATE = """
-- Places.vacate. ARGV: now, slack, holder. An empty sorted set is no key at all.
redis.call('ZREM', KEYS[1], ARGV[3])
return nil
"""

RENEW = (
    _COMMON
    + """
-- Extend the leases of one process's holders of one key. ARGV: now, slack,
-- lease, restore, holder... With restore '0' only places still held are
-- extended (XX: a place vacated meanwhile stays vacated); with '1' (Redis
-- came back, or lost its data) they are written again.
local lease, restore = tonumber(ARGV[3]), ARGV[4] == '1'
local expiry = num(now + lease)
for i = 5, #ARGV do
  if restore then
    redis.call('ZADD', KEYS[1], expiry, ARGV[i])
  else
    redis.call('ZADD', KEYS[1], 'XX', expiry, ARGV[i])
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', num(now))
if redis.call('EXISTS', KEYS[1]) == 1 then expire(KEYS[1], lease, slack) end
return nil
"""
)
