#!lua name=llmgate_v1
-- llmgate's shared counters: rate limits (GCRA) and team budgets (reserve, then settle).
--
-- The library name and every function name carry the version. A change of meaning gets a new
-- version (llmgate_v2, llmgate_admit_v2, ...) so that during a rolling deploy old and new
-- data planes each call the functions they were built for. Keys carry the same version.
--
-- Time is Redis's clock (TIME), so every data plane counts against one clock. Times are in
-- microseconds; money in millionths of a USD. Numbers handed to Redis commands go through
-- fmt(): Lua would otherwise print large ones as 1e+15. Replies are plain numbers (Redis turns
-- them into integers).

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function num(x)
  return tonumber(x) or 0
end

local function fmt(x)
  return string.format('%.0f', x)
end

-- A budget is a hash (spent, reserved, alert:<threshold>) and a sorted set of the reservations
-- it holds: member `<rid>:<amount>`, score the time the hold runs out.

-- Releases reservations whose holder died (their hold ran out without a settle).
local function purge(h, z, now)
  local gone = redis.call('ZRANGEBYSCORE', z, '-inf', fmt(now), 'LIMIT', 0, 256)
  if #gone == 0 then
    return
  end
  local total = 0
  for _, m in ipairs(gone) do
    total = total + (tonumber(string.match(m, ':(%d+)$')) or 0)
  end
  redis.call('ZREM', z, unpack(gone))
  redis.call('HINCRBY', h, 'reserved', fmt(-total))
end

-- GCRA: one stored value per counter, the theoretical arrival time (tat). A limit of l per
-- window w emits one unit every w/l; a request of cost c fits while tat + c*w/l - now <= w.
local function gcra_remaining(c, tat_after, now)
  return math.floor((c.w - (tat_after - now)) * c.l / c.w)
end

-- Arguments are flat lists of strings (no JSON to decode on every call). Keys are passed as
-- 1-based indexes into KEYS.
--
-- admit: ARGV = rid, number of candidates, then per candidate its number of checks and each
-- check:
--   r, key, window_us, limit, cost                                        rate limit
--   b, key, holds_key, limit, cost, hold_us, expire_at_ms, p, o, m        budget; p, o, m
--     (prompt cost, price per output token, min tokens) clamp a request the budget cannot
--     cover in full to the output tokens it can pay for; p = '-' turns that off
-- The first candidate whose budgets all fit is admitted: its checks are applied and the reply is
-- {1, candidate, remaining_1, second_1, remaining_2, second_2, ...} where second is the reset
-- time in µs for a rate limit and the clamped output tokens (0: not clamped) for a budget. A
-- rate limit that does not fit stops the walk: {0, candidate, check, retry_after_us, remaining,
-- reset_us}. When no candidate fits its budgets: {2, candidate, check, left}.
local function admit(keys, args)
  local now = now_us()
  local rid = args[1]
  local ncand = tonumber(args[2])
  local at = 3
  local exhausted = nil
  for ci = 1, ncand do
    local n = tonumber(args[at])
    at = at + 1
    local checks = {}
    for i = 1, n do
      if args[at] == 'r' then
        checks[i] = {t = 'r', k = keys[tonumber(args[at + 1])], w = tonumber(args[at + 2]),
          l = tonumber(args[at + 3]), c = tonumber(args[at + 4])}
        at = at + 5
      else
        checks[i] = {t = 'b', k = keys[tonumber(args[at + 1])], z = keys[tonumber(args[at + 2])],
          l = tonumber(args[at + 3]), c = tonumber(args[at + 4]), h = tonumber(args[at + 5]),
          e = args[at + 6], p = tonumber(args[at + 7]), o = tonumber(args[at + 8]),
          m = tonumber(args[at + 9])}
        at = at + 10
      end
    end
    local state = {}
    local fits = true
    for i, c in ipairs(checks) do
      if c.t == 'r' then
        local tat = math.max(num(redis.call('GET', c.k)), now)
        local after = tat + c.c * c.w / c.l
        if after - now > c.w then
          return {0, ci, i, math.floor(after - now - c.w), math.max(gcra_remaining(c, tat, now), 0),
            math.floor(tat - now)}
        end
        state[i] = after
      else
        purge(c.k, c.z, now)
        local sr = redis.call('HMGET', c.k, 'spent', 'reserved')
        local left = c.l - num(sr[1]) - num(sr[2])
        local clamped = 0
        if c.c > left and c.p and c.o > 0 then
          local tokens = math.floor((left - c.p) / c.o)
          if tokens >= c.m then
            clamped = tokens
          end
        end
        if c.c > left and clamped == 0 then
          fits = false
          exhausted = {2, ci, i, math.floor(left)}
          break
        end
        state[i] = {left, clamped, sr[1] == false and sr[2] == false}
      end
    end
    if fits then
      local out = {1, ci}
      for i, c in ipairs(checks) do
        if c.t == 'r' then
          local after = state[i]
          redis.call('SET', c.k, fmt(after), 'PX', fmt(math.ceil((after - now) / 1000) + 1000))
          out[#out + 1] = gcra_remaining(c, after, now)
          out[#out + 1] = math.floor(after - now)
        else
          local left, clamped, new = state[i][1], state[i][2], state[i][3]
          local cost = c.c
          if clamped > 0 then
            cost = math.ceil(c.p + clamped * c.o)
          end
          redis.call('HINCRBY', c.k, 'reserved', fmt(cost))
          redis.call('ZADD', c.z, fmt(now + c.h), rid .. ':' .. fmt(cost))
          redis.call('PEXPIREAT', c.z, c.e)
          if new then
            redis.call('HSET', c.k, 'limit', fmt(c.l))
            redis.call('PEXPIREAT', c.k, c.e)
          end
          out[#out + 1] = math.floor(left - cost)
          out[#out + 1] = clamped
        end
      end
      return out
    end
  end
  return exhausted
end

-- settle: ARGV = number of items, then each item:
--   r, key, window_us, limit, delta, once                  rate limit: units used beyond (or,
--                                                           negative, short of) the admission
--   b, key, holds_key, rid, held, actual, limit, expire_at_ms, once, n, th_1..th_n
--                                                           (held: the amount reserved)
--                                                           budget: release the reservation and
--                                                           charge the actual cost
-- once is a key index (0: none): an item whose key is already set is skipped (counts replayed
-- after an outage). With a rid, a budget is charged only while the reservation is held, so a
-- settle that arrives twice (a retry after a timeout) charges once. Reply: one array per item;
-- for budgets {spent, reserved, threshold crossed first here, ...}.
local function settle(keys, args)
  local now = now_us()
  local count = tonumber(args[1])
  local at = 2
  local out = {}
  for n = 1, count do
    out[n] = {}
    local kind = args[at]
    local once = 0
    local it
    if kind == 'r' then
      it = {k = keys[tonumber(args[at + 1])], w = tonumber(args[at + 2]), l = tonumber(args[at + 3]),
        d = tonumber(args[at + 4])}
      once = tonumber(args[at + 5])
      at = at + 6
    else
      it = {k = keys[tonumber(args[at + 1])], z = keys[tonumber(args[at + 2])], r = args[at + 3],
        held = args[at + 4], a = args[at + 5], l = tonumber(args[at + 6]), e = args[at + 7], th = {}}
      once = tonumber(args[at + 8])
      local nth = tonumber(args[at + 9])
      for j = 1, nth do
        it.th[j] = tonumber(args[at + 9 + j])
      end
      at = at + 10 + nth
    end
    local fresh = true
    if once > 0 then
      fresh = redis.call('SET', keys[once], '1', 'NX', 'PX', '86400000') ~= false
    end
    if fresh and kind == 'r' then
      local tat = math.max(num(redis.call('GET', it.k)), now)
      local after = math.max(tat + it.d * it.w / it.l, now)
      if after > now then
        redis.call('SET', it.k, fmt(after), 'PX', fmt(math.ceil((after - now) / 1000) + 1000))
      else
        redis.call('DEL', it.k)
      end
    elseif fresh then
      local charge = true
      local reserved = nil
      if it.r ~= '' then
        if redis.call('ZREM', it.z, it.r .. ':' .. it.held) == 1 then
          reserved = redis.call('HINCRBY', it.k, 'reserved', '-' .. it.held)
        else
          charge = false
        end
      end
      local spent
      if charge then
        spent = redis.call('HINCRBY', it.k, 'spent', it.a)
      else
        spent = num(redis.call('HGET', it.k, 'spent'))
      end
      if reserved == nil then
        -- No reservation released here (a replayed charge): the hash may be new.
        reserved = num(redis.call('HGET', it.k, 'reserved'))
        redis.call('PEXPIREAT', it.k, it.e)
      end
      local reply = {spent, reserved}
      for _, th in ipairs(it.th) do
        if spent * 100 >= it.l * th and redis.call('HSETNX', it.k, 'alert:' .. th, fmt(now)) == 1 then
          reply[#reply + 1] = th
        end
      end
      out[n] = reply
    end
  end
  return out
end

redis.register_function('llmgate_admit_v1', admit)
redis.register_function('llmgate_settle_v1', settle)
