-- RESCUE: one step of the janitor's walk over the history index, for jobs nothing would look at again. Every other
-- script keeps these facts together: a queued job is in its queue's RQ list and in the fair-share index (its
-- submitter's sub-queue, the submitter in its level's active set, which is all the pop serves before the RQ list
-- itself), a started job is in its worker's inflight list. A job found breaking one is put back: queued and in no
-- list -> at the front of its queue and the fair-share index, with a wake-up (as a re-queue: same attempt, no
-- event); queued in its queue but out of the index (a hand re-queue, RQ's tools, a script stopped half-way: the pop
-- would reach it only once every other submitter's jobs of the model were gone) -> at the front of its sub-queue,
-- the submitter active, with a wake-up; started and not in its worker's inflight list -> listed there again (the
-- worker's in-flight check re-queues it unless the worker runs it; the janitor, when the worker is dead). Nothing
-- else is written. The lists' lookups (LPOS, linear) walk at most the budget's entries per step: a list longer than
-- that is not looked into (its jobs wait their turn meanwhile), and the step ends early when the budget is spent.
--
-- ARG.cursor   the history rank to start at (0: the oldest job)
-- ARG.step     jobs looked at in this step
-- ARG.budget   queue list entries this step may walk
--
-- Returns {the rank to start the next step at (0: the walk starts over), {ids put back in their queue}, {ids
-- listed in flight again}, {ids put back in the fair-share index}}.

local cursor, count, budget = tonumber(ARG.cursor), tonumber(ARG.step), tonumber(ARG.budget)
local left = budget
local ids = redis.call('ZRANGE', HISTORY, cursor, cursor + count - 1)
local after = cursor + #ids
if #ids < count then after = 0 end
local queued, listed, indexed, now = {}, {}, {}, nil
-- whether list key may be walked: 1 yes (its length is taken from the budget), 0 the budget is spent (the next
-- step starts with this job), -1 never (longer than the whole budget)
local function affords(key)
  local n = redis.call('LLEN', key)
  if n > budget then return -1 end
  if n > left then return 0 end
  left = left - n
  return 1
end
for i, id in ipairs(ids) do
  local st = redis.call('HMGET', job_key(id), 'status', 'origin', 'model', 'priority', 'submitter', 'worker_name')
  local m, p, s = st[3], st[4], st[5]
  if st[1] == 'queued' and st[2] then
    local q = rq_queue_key(st[2])
    local sq = m and p and s and subqueue_key(m, p, s)
    local walk = affords(q)
    if walk == 1 and not redis.call('LPOS', q, id) then
      redis.call('LPUSH', q, id)
      if sq then index_push(m, p, s, id, true) end
      now = now or clock()
      wake(m or '', now, id)
      queued[#queued + 1] = id
    elseif walk == 1 and sq then  -- in its queue: does the fair-share index reach it?
      walk = affords(sq)
      local at = walk == 1 and redis.call('LPOS', sq, id)
      if walk == 1 and not (at and redis.call('ZSCORE', active_key(m, p), s)) then
        if not at then redis.call('LPUSH', sq, id) end
        activate(m, p, s)
        now = now or clock()
        wake(m, now, id)
        indexed[#indexed + 1] = id
      end
    end
    if walk == 0 then
      after = cursor + i - 1
      break
    end
  elseif st[1] == 'started' and st[6] then
    local fk = inflight_key(st[6])
    if not redis.call('LPOS', fk, id) then
      redis.call('RPUSH', fk, id)
      listed[#listed + 1] = id
    end
  end
end
return {after, queued, listed, indexed}
