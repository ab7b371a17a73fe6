-- POSITION: where a queued job stands (read only): the jobs expected to start before it (fair_position), and the
-- model's latest start times for the estimate of when it starts (common/schedule.py).
--
-- ARG.id   the job id
--
-- Returns false when the job is not queued, else {position, model, starts...} (starts newest first).

local st = redis.call('HMGET', job_key(ARG.id), 'status', 'model', 'priority', 'submitter', 'origin')
if st[1] ~= 'queued' then return false end
local m, p, s = st[2], st[3], st[4]
local pos = nil
local i = nil
if m and p and s then i = redis.call('LPOS', subqueue_key(m, p, s), ARG.id) end
if i then
  pos = fair_position(m, p, s, i)
else
  pos = redis.call('LPOS', rq_queue_key(st[5] or ''), ARG.id) or 0
end
local out = {pos, m or ''}
for _, x in ipairs(redis.call('LRANGE', starts_key(m or ''), 0, -1)) do out[#out + 1] = x end
return out
