-- ENQUEUE_BATCH: submit jobs all or none (all of one owner): nothing -> queued for each.
-- Refused with nothing written when a job needs a live worker holding its model and none does, when one model
-- queue would pass its limit, or when the owner's quota would.
--
-- ARG.max_queue     each queue's length limit (0: none)
-- ARG.maxlen        the events stream's cap
-- ARG.ttl_ms        the events stream's expiry
-- ARG.history_min   the oldest history score kept (epoch s)
-- ARG.history_max   the most jobs the history keeps
-- ARG.quota         the owner's limit of queued + running jobs (0: none)
-- ARG.start_ts      (unused: a batch hands no job at once)
-- ARG.checks        one character per job: '1' to refuse the batch when no live worker holds the job's model
-- ARG.idem          the submit's Idempotency-Key ('': none)
-- ARG.digest        the digest of the submit's body (with idem)
-- ARG.idem_ttl      seconds the key is remembered
-- ARG.prefer        (ENQUEUE's; not used here)
-- ARG...            the job blocks (JOB_BLOCK each, see enqueue.lua)
--
-- Returns {1 + queue position of each job...}; {-3, index of the first unserved job}, {-1, model, its queue's
-- length} or {-2, active jobs} when refused; {-4, 'id|1 + queue position|...'} (nothing written) when the owner's
-- idem names an earlier submit of the same body, {-5} when of another body.

local jobs, now = job_blocks(), clock()
local owner = ''
if #jobs > 0 then owner = jobs[1].owner end
local replay = idem_replay(owner, ARG.idem, ARG.digest)
if replay then return replay end
local holds = {}
for i, job in ipairs(jobs) do
  local m = job.model
  if string.sub(ARG.checks, i, i) == '1' then
    if holds[m] == nil then holds[m] = served(m, now) end
    if not holds[m] then return {-3, i - 1} end
  end
end
local limit = tonumber(ARG.max_queue)
if limit > 0 then
  local extra = {}
  for _, job in ipairs(jobs) do extra[job.model] = (extra[job.model] or 0) + 1 end
  for m, k in pairs(extra) do
    local depth = redis.call('LLEN', queue_key(m))
    if depth + k > limit then return {-1, m, depth} end
  end
end
local quota = tonumber(ARG.quota)
local active = over_quota(owner, quota, #jobs)
if active then return {-2, active} end
local out, parts = {}, {}
for _, job in ipairs(jobs) do
  out[#out + 1] = push_job(job, ARG.maxlen, ARG.ttl_ms, quota > 0 and owner ~= '', now)  -- (the first value)
  parts[#parts + 1] = job.id
  parts[#parts + 1] = out[#out]
end
trim_lists(redis.call('HINCRBY', STATS, 'submitted', #out), #out, ARG.history_min, ARG.history_max)
idem_record(owner, ARG.idem, ARG.digest, ARG.idem_ttl, parts)
return out
