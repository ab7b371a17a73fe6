-- POP: a worker takes the next job of its model queues: queued -> started (see start). Or, first, a job an
-- enqueue handed it while it was parked, whose message it has not seen. Or, at its model capacity, a signal to
-- switch to a model nobody serves. Or, with nothing to take, it parks for its models (push dispatch: the next
-- enqueue of one of them hands its job straight here; with no queue keys, POP only ends the park: unpark).
--
-- KEY.inflight        the worker's inflight list (start pushes each job it starts)
-- KEY...              the model queues, in the order to try, after the named keys
-- ARG.worker          the worker id
-- ARG.now             the worker's clock (RQ time format): the started_at of a job it starts
-- ARG.maxlen          the events stream's cap
-- ARG.ttl_ms          the events stream's expiry
-- ARG.flags           one character per model queue (schedule.plan_pop): '1' warm: claim and take; '0' cold:
--                     take after the cold delay, when no warm queue has a job; 'c' cold with room on the host:
--                     the same, and before the warm queues when no worker serves the model and its oldest job has
--                     waited the switch delay; 'e' cold, the host full of loaded models not all running: as
--                     'c', but after the switch delay (taking it evicts a loaded model); 'r' reserved: claim
--                     only; 't' the target of a switch, now with room: claim and take first; 's' switch
--                     probe: the worker is at its model capacity
-- ARG.cold_delay      seconds a cold worker leaves a job to warm ones: one number for every queue, or one per
--                     queue, space-separated (delays.Delays: derived from each model's load time)
-- ARG.warm_ttl        seconds a warm claim lasts
-- ARG.switch_delay    seconds a model's oldest job waits, unserved, before a worker switches to it (as cold_delay)
-- ARG.aging           priority aging, seconds (0: strict priorities)
-- ARG.park_slots      free slots to park with when nothing can be taken (0: do not park)
-- ARG.park_ttl        seconds the park lasts
-- ARG.seen            the id of the last job handed to this worker that it has seen
--
-- Returns {id, attempt, data, timeout, model, enqueued_at, seq of the started event}; or {'switch', model, then
-- for each warm model: name, queued, other live claims} when a probed model has waited the switch delay and no
-- worker claims it (the model is then claimed for this worker); or, when only jobs a cold worker must not take
-- yet are queued, the milliseconds until the first may be taken; or false.

local now = clock()
local w = {id = ARG.worker, ts = ARG.now, maxlen = ARG.maxlen, ttl = ARG.ttl_ms, aging = tonumber(ARG.aging),
           now = now}
local qp = #queue_key('') + 1
local function model(i) return string.sub(KEYS[i], qp) end
local function flag(i) return string.sub(ARG.flags, i - KEY_REST + 1, i - KEY_REST + 1) end
local function claim(m) redis.call('ZADD', warm_key(m), now + tonumber(ARG.warm_ttl), ARG.worker) end
local function per_queue(s)
  local t = {}
  for v in string.gmatch(s, '%S+') do t[#t + 1] = tonumber(v) end
  return t
end
local cold_delays, switch_delays = per_queue(ARG.cold_delay), per_queue(ARG.switch_delay)
-- queue i's delay: its own, else the one given for every queue
local function delay(t, i) return t[i - KEY_REST + 1] or t[1] end

-- the job an enqueue handed to this worker while it was parked, if it has not seen its message (its park ends)
local function handed_job()
  local handed, handed_id = unpark(w.id)
  if handed and handed_id ~= ARG.seen then
    local job = cjson.decode(handed)
    local cur = redis.call('HMGET', job_key(handed_id), 'status', 'worker_name', 'attempt')
    if cur[1] == 'started' and cur[2] == w.id and cur[3] == job[2] then return job end
  end
  return nil
end

-- whether model m's oldest job has waited the switch delay with no worker claiming the model
local function unserved(i)
  local age = head_age(KEYS[i], now)
  return age and age >= delay(switch_delays, i) and live_claims(model(i), now) == 0
end

-- at capacity: a probed model that is unserved makes this worker switch (it stops taking one of its models and
-- takes this one once that has drained); nil when none is
local function switch_signal()
  for i = KEY_REST, #KEYS do
    local m = model(i)
    if flag(i) == 's' and unserved(i) then
      claim(m)
      local out = {'switch', m}
      for j = KEY_REST, #KEYS do
        if flag(j) == '1' then
          local h = model(j)
          out[#out + 1] = h
          out[#out + 1] = redis.call('LLEN', KEYS[j])
          out[#out + 1] = live_claims(h, now) - 1
        end
      end
      return out
    end
  end
  return nil
end

-- first a switch's target ('t') or a cold model with room ('c', 'e') that is unserved, then warm models ('1'),
-- then cold ones ('0', 'c') after the cold delay and ('e') after the switch delay. Returns the job started, or nil
-- and the seconds until a cold worker may take one (nil: nothing to wait for)
local function take_next()
  local wait = nil
  for pass = 1, 2 do
    for i = KEY_REST, #KEYS do
      local m, f, left = model(i), flag(i), -1
      if pass == 1 then
        if f == 't' or ((f == 'c' or f == 'e') and unserved(i)) then left = 0 end
      elseif f == '0' or f == 'c' then
        left = cold_wait(m, KEYS[i], now, delay(cold_delays, i))
      elseif f == 'e' then
        left = cold_wait(m, KEYS[i], now, delay(switch_delays, i))
      elseif f == '1' then
        left = 0
      end
      if left == 0 then
        local job = take(KEYS[i], m, now, w)
        if job then
          -- a cold model taken is being loaded here from now on: claimed at once (not at this worker's next pop,
          -- which may be a whole job away when its slots are full), so other workers wait the cold delay for it
          if f ~= '1' then claim(m) end
          return job
        end
      elseif left > 0 and (wait == nil or left < wait) then
        wait = left
      end
    end
  end
  return nil, wait
end

-- park for the models this worker may take, a warm one scored above every cold one (see parked_worker)
local function park()
  local slots = tonumber(ARG.park_slots) or 0
  if slots <= 0 then return end
  local parked = {}
  for i = KEY_REST, #KEYS do
    local f = flag(i)
    if f == '1' or f == '0' or f == 'c' or f == 'e' then
      parked[#parked + 1] = model(i)
      local score = slots
      if f == '1' then score = WARM_PARK + slots end
      redis.call('ZADD', parked_key(parked[#parked]), score, w.id)
    end
  end
  if #parked > 0 then
    local pk = park_key(w.id)
    redis.call('HSET', pk, 'models', table.concat(parked, ' '),
               'until', string.format('%.3f', now + tonumber(ARG.park_ttl)), 'claim', ARG.warm_ttl)
    redis.call('PEXPIRE', pk, PARK_KEEP_MS)
  end
end

local handed = handed_job()
if handed then return handed end
for i = KEY_REST, #KEYS do
  if flag(i) == '1' or flag(i) == 'r' or flag(i) == 't' then claim(model(i)) end
end
local signal = switch_signal()
if signal then return signal end
local job, wait = take_next()
if job then return job end
park()
if wait then return math.ceil(wait * 1000) end
return false
