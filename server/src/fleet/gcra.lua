--! GCRA over one limited key, taking up to `want` units at once (the lease script of
--! server/src/fleet/lease.rs, which mirrors it in `gcra_take`).
--
-- KEYS[1]  sz:rl:{<rule>:<key>}: the key's TAT in microseconds of Redis's clock (a string)
-- ARGV[1]  emission interval in microseconds (1/rate, rounded up, >= 1)
-- ARGV[2]  burst (>= 1)
-- ARGV[3]  want (>= 1)
-- returns  {granted, retry_after_ms, remaining}
--
-- Time is Redis's own (TIME), so the nodes' clocks never matter. With the limit's tolerance
-- tau = burst * interval, `available = floor((now + tau - max(tat, now)) / interval)` units
-- may be taken now; the script grants min(want, available) and moves the TAT by that many
-- intervals, so over any span t Redis grants at most burst + t / interval units. All numbers
-- stay below 2^53 (now ~ 1.8e15 us, tau <= 1e6 * 1e9 us), so Lua's doubles are exact.
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tau = burst * interval
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then
  tat = now
end
local available = math.floor((now + tau - tat) / interval)
if available < 0 then
  available = 0
end
local granted = want
if granted > available then
  granted = available
end
if granted > 0 then
  tat = tat + granted * interval
  -- The key vanishes once its TAT is in the past: an absent key and a TAT <= now are the
  -- same state (the whole burst available).
  local ttl_ms = math.ceil((tat - now) / 1000) + 1
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', string.format('%.0f', ttl_ms))
end
local remaining = math.floor((now + tau - tat) / interval)
local retry_after_ms = 0
if granted == 0 then
  retry_after_ms = math.ceil((tat + interval - tau - now) / 1000)
  if retry_after_ms < 1 then
    retry_after_ms = 1
  end
end
return {granted, retry_after_ms, remaining}
