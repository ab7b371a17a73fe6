-- ENQUEUE: submit one job: nothing -> queued (with a wake-up for idle workers), or nothing -> started when its
-- queue is idle and a live worker is parked for its model (push dispatch: the job is handed to that worker at
-- once, and never enters the queue).
-- Refused, in this order, with nothing written: no live worker holds the model (when checked), the queue is full,
-- the owner's quota is used up. The events it writes (queued, started) are not published on the job's reply_to:
-- the submitter has them from its own arguments and this reply, without a pub/sub delivery to wait for on the
-- time-to-first-token path.
--
-- KEY.queue         the model's RQ list
-- ARG.max_queue     the queue's length limit (0: none)
-- ARG.maxlen        the events stream's cap
-- ARG.ttl_ms        the events stream's expiry
-- ARG.history_min   the oldest history score kept (epoch s)
-- ARG.history_max   the most jobs the history keeps
-- ARG.quota         the owner's limit of queued + running jobs (0: none)
-- ARG.start_ts      now (RQ time format): the start of a job handed at once
-- ARG.checks        '1': refuse the job when no live worker holds its model ('0': it waits for one)
-- ARG.idem          the submit's Idempotency-Key ('': none)
-- ARG.digest        the digest of the submit's body (with idem)
-- ARG.idem_ttl      seconds the key is remembered
-- ARG.prefer        the parked worker the API sent the job to already, over the direct link ('': none): handed the
--                   job if it is parked for the model and as warm as the best parked worker (else the job goes the
--                   usual way, and that worker's early run is fenced off at its first event)
-- ARG...            the job block (JOB_BLOCK: id, event, deadline, model, priority, submitter, created, owner,
--                   hash; see push_job)
--
-- Returns {1 + queue position}, or {1, started event} for a job handed at once; {-3} when no live worker holds
-- the model, {-1, queue length} when the queue is full, {-2, active jobs} when the owner's quota is used up;
-- {-4, 'id|1 + queue position'} (nothing written) when the owner's idem names an earlier submit of the same body,
-- {-5} when of another body.

local job = job_blocks()[1]
local replay = idem_replay(job.owner, ARG.idem, ARG.digest)
if replay then return replay end
local m, now = job.model, clock()
local owned = job.owner ~= ''
-- a live parked worker to hand the job to holds the model: the served check is left for the other cases (when no
-- worker holds it, parked_worker may have dropped dead workers' parks before)
local check = ARG.checks == '1'
local quota = tonumber(ARG.quota)
if check and quota > 0 and owned then  -- (the quota's count drops ended jobs from the owner's set)
  if not served(m, now) then return {-3} end
  check = false
end
local limit = tonumber(ARG.max_queue)
local depth = redis.call('LLEN', KEY.queue)
if limit > 0 and depth >= limit then
  if check and not served(m, now) then return {-3} end
  return {-1, depth}
end
local active = over_quota(job.owner, quota, 1)
if active then return {-2, active} end
local wid, claim_ttl = false, nil
if depth == 0 then wid, claim_ttl = parked_worker(m, now, false, ARG.prefer) end
if not wid and check and not served(m, now) then return {-3} end
-- a worker handed a job of a model it has not loaded is loading it from now on: claimed at once, so the next job
-- of the model waits for it (the cold delay) rather than making another idle host load it too
if claim_ttl then redis.call('ZADD', warm_key(m), now + claim_ttl, wid) end
local handed = wid and {id = wid, ts = ARG.start_ts}
local n, fields = push_job(job, ARG.maxlen, ARG.ttl_ms, quota > 0 and owned, now, handed)
local out = {n}
if wid then
  local w = {id = wid, maxlen = ARG.maxlen, quiet = true, fresh = true, now = now}
  local st = {'queued', '1', fields.data, fields.run_timeout, m, fields.enqueued_at}
  hand(wid, start(job_key(job.id), job.id, st, m, w))
  out[2] = w.started
end
trim_lists(redis.call('HINCRBY', STATS, 'submitted', 1), 1, ARG.history_min, ARG.history_max)
idem_record(job.owner, ARG.idem, ARG.digest, ARG.idem_ttl, {job.id, n})
return out
