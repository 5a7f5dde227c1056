#!lua name=llmgate_v1
-- llmgate's shared counters: rate limits (GCRA) and team budgets (reserve, then settle).
--
-- The library name and every function name carry the version. A change of meaning gets a new
-- version (llmgate_v2, llmgate_admit_v2, ...) so that during a rolling deploy old and new
-- data planes each call the functions they were built for. Keys carry the same version.
--
-- Time is Redis's clock (TIME), so every data plane counts against one clock. Times are in
-- microseconds; money in millionths of a USD. Numbers handed to Redis go through fmt(): Lua
-- would otherwise print large ones as 1e+15.

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

-- Releases reservations whose holder died (their hold ran out without a settle).
local function purge(h, z, now)
  local ids = redis.call('ZRANGEBYSCORE', z, '-inf', fmt(now), 'LIMIT', 0, 256)
  for _, id in ipairs(ids) do
    local held = redis.call('HGET', h, 'r:' .. id)
    if held then
      redis.call('HDEL', h, 'r:' .. id)
      redis.call('HINCRBY', h, 'reserved', fmt(-tonumber(held)))
    end
    redis.call('ZREM', z, id)
  end
end

-- GCRA: one stored value per counter, the theoretical arrival time (tat). A limit of l per
-- window w emits one unit every w/l; a request of cost c fits while tat + c*w/l - now <= w.
local function gcra_remaining(c, tat_after, now)
  return math.floor((c.w - (tat_after - now)) * c.l / c.w)
end

-- KEYS: every key the checks name. ARGV[1]: reservation id. ARGV[2]: JSON array of candidates,
-- each an array of checks:
--   {"t":"r","k":i,"w":window_us,"l":limit,"c":cost}                       rate limit
--   {"t":"b","k":i,"z":j,"l":limit,"c":cost,"h":hold_us,"e":expire_at_ms}  budget
--     with "p":prompt_cost,"o":price_per_output_token,"m":min_tokens to clamp: a request the
--     budget cannot cover in full is admitted with the output tokens it can pay for
-- The first candidate whose budgets all fit is admitted: its checks are applied and the reply is
-- {1, candidate, remaining_1, reset_us_1, remaining_2, reset_us_2, ...} (for a budget the
-- second number is the output tokens it was clamped to, 0 when not clamped). A rate limit that does
-- not fit stops the walk: {0, candidate, check, retry_after_us, remaining, reset_us}. When no
-- candidate fits its budgets: {2, candidate, check, left}.
local function admit(keys, args)
  local now = now_us()
  local rid = args[1]
  local cands = cjson.decode(args[2])
  local exhausted = nil
  for ci, checks in ipairs(cands) do
    local state = {}
    local fits = true
    for i, c in ipairs(checks) do
      if c.t == 'r' then
        local tat = math.max(num(redis.call('GET', keys[c.k])), now)
        local after = tat + c.c * c.w / c.l
        if after - now > c.w then
          return {0, ci, i, fmt(after - now - c.w), fmt(math.max(gcra_remaining(c, tat, now), 0)),
            fmt(tat - now)}
        end
        state[i] = after
      else
        local h, z = keys[c.k], keys[c.z]
        purge(h, z, now)
        local left = c.l - num(redis.call('HGET', h, 'spent')) - num(redis.call('HGET', h, 'reserved'))
        local clamped = 0
        if c.c > left and c.p and c.o > 0 then
          local n = math.floor((left - c.p) / c.o)
          if n >= c.m then
            clamped = n
          end
        end
        if c.c > left and clamped == 0 then
          fits = false
          exhausted = {2, ci, i, fmt(left)}
          break
        end
        state[i] = {left, clamped}
      end
    end
    if fits then
      local out = {1, ci}
      for i, c in ipairs(checks) do
        if c.t == 'r' then
          local after = state[i]
          redis.call('SET', keys[c.k], fmt(after), 'PX', fmt(math.ceil((after - now) / 1000) + 1000))
          out[#out + 1] = fmt(gcra_remaining(c, after, now))
          out[#out + 1] = fmt(after - now)
        else
          local h, z = keys[c.k], keys[c.z]
          local left, clamped = state[i][1], state[i][2]
          local cost = c.c
          if clamped > 0 then
            cost = math.ceil(c.p + clamped * c.o)
          end
          redis.call('HINCRBY', h, 'reserved', fmt(cost))
          redis.call('HSET', h, 'r:' .. rid, fmt(cost), 'limit', fmt(c.l))
          redis.call('ZADD', z, fmt(now + c.h), rid)
          redis.call('PEXPIREAT', h, fmt(c.e))
          redis.call('PEXPIREAT', z, fmt(c.e))
          out[#out + 1] = fmt(left - cost)
          out[#out + 1] = fmt(clamped)
        end
      end
      return out
    end
  end
  return exhausted
end

-- ARGV[1]: JSON array of items, each settling one counter:
--   {"t":"r","k":i,"w":window_us,"l":limit,"d":delta}     rate limit: units used beyond (or,
--                                                          negative, short of) the admission
--   {"t":"b","k":i,"z":j,"r":rid,"a":actual,"l":limit,"th":[50,80],"e":expire_at_ms}
--                                                          budget: release the reservation and
--                                                          charge the actual cost. With a rid the
--                                                          charge happens only while the
--                                                          reservation is held, so a settle that
--                                                          arrives twice (a retry after a
--                                                          timeout) charges once.
-- Either may carry "o": a key set once per item; an item whose key is already set is skipped
-- (counts replayed after an outage). Reply: one array per item; for budgets
-- {spent, reserved, threshold crossed first here, ...}.
local function settle(keys, args)
  local now = now_us()
  local items = cjson.decode(args[1])
  local out = {}
  for n, it in ipairs(items) do
    out[n] = {}
    local fresh = true
    if it.o then
      fresh = redis.call('SET', keys[it.o], '1', 'NX', 'PX', '86400000') ~= false
    end
    if fresh and it.t == 'r' then
      local k = keys[it.k]
      local tat = math.max(num(redis.call('GET', k)), now)
      local after = math.max(tat + it.d * it.w / it.l, now)
      if after > now then
        redis.call('SET', k, fmt(after), 'PX', fmt(math.ceil((after - now) / 1000) + 1000))
      else
        redis.call('DEL', k)
      end
    elseif fresh then
      local h, z = keys[it.k], keys[it.z]
      local charge = true
      if it.r ~= '' then
        local held = redis.call('HGET', h, 'r:' .. it.r)
        if held then
          redis.call('HDEL', h, 'r:' .. it.r)
          redis.call('HINCRBY', h, 'reserved', fmt(-tonumber(held)))
        else
          charge = false
        end
        redis.call('ZREM', z, it.r)
      end
      local spent = num(redis.call('HGET', h, 'spent'))
      if charge then
        spent = redis.call('HINCRBY', h, 'spent', fmt(it.a))
      end
      redis.call('HSET', h, 'limit', fmt(it.l))
      redis.call('PEXPIREAT', h, fmt(it.e))
      local reply = {spent, num(redis.call('HGET', h, 'reserved'))}
      for _, th in ipairs(it.th) do
        if spent * 100 >= it.l * th and redis.call('HSETNX', h, 'alert:' .. th, fmt(now)) == 1 then
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
