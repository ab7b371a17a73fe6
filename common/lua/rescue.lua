-- RESCUE: one step of the janitor's walk over the history index, for jobs nothing would look at again. Every other
-- script keeps two facts together: a queued job is in its queue's RQ list, a started job is in its worker's
-- inflight list. A job found breaking one is put back: queued and in no list -> at the front of its queue and the
-- fair-share index, with a wake-up (as a re-queue: same attempt, no event); started and not in its worker's
-- inflight list -> listed there again (the worker's in-flight check re-queues it unless the worker runs it; the
-- janitor, when the worker is dead). Nothing else is written. The queue lists' lookups (LPOS, linear) walk at most
-- the budget's entries per step: a queue longer than that is not looked into (its jobs wait their turn meanwhile),
-- and the step ends early when the budget is spent.
--
-- ARG.cursor   the history rank to start at (0: the oldest job)
-- ARG.step     jobs looked at in this step
-- ARG.budget   queue list entries this step may walk
--
-- Returns {the rank to start the next step at (0: the walk starts over), {ids put back in their queue}, {ids
-- listed in flight again}}.

local cursor, count, budget = tonumber(ARG.cursor), tonumber(ARG.step), tonumber(ARG.budget)
local left = budget
local ids = redis.call('ZRANGE', HISTORY, cursor, cursor + count - 1)
local after = cursor + #ids
if #ids < count then after = 0 end
local queued, listed, now = {}, {}, nil
for i, id in ipairs(ids) do
  local st = redis.call('HMGET', job_key(id), 'status', 'origin', 'model', 'priority', 'submitter', 'worker_name')
  if st[1] == 'queued' and st[2] then
    local q = rq_queue_key(st[2])
    local n = redis.call('LLEN', q)
    if n > left and n <= budget then  -- the budget is spent: the next step starts with this job
      after = cursor + i - 1
      break
    end
    if n <= left then
      left = left - n
      if not redis.call('LPOS', q, id) then
        redis.call('LPUSH', q, id)
        if st[3] and st[4] and st[5] then index_push(st[3], st[4], st[5], id, true) end
        now = now or clock()
        wake(st[3] or '', now, id)
        queued[#queued + 1] = id
      end
    end
  elseif st[1] == 'started' and st[6] then
    local fk = inflight_key(st[6])
    if not redis.call('LPOS', fk, id) then
      redis.call('RPUSH', fk, id)
      listed[#listed + 1] = id
    end
  end
end
return {after, queued, listed}
