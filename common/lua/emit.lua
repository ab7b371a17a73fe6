-- EMIT: publish events of a running job (its chunks); the job stays started.
-- Fenced: nothing is written unless the job is started and its attempt and worker are the caller's, so a worker
-- presumed dead never writes into a job that another worker now runs.
--
-- KEY.job        the job hash
-- ARG.id         the job id
-- ARG.attempt    the caller's attempt (the fence)
-- ARG.worker     the caller's worker id (the fence)
-- ARG.maxlen     the events stream's cap
-- ARG.ttl_ms     the events stream's expiry, renewed every 16 events (every other script renews it each time)
-- ARG...         one or more event bodies (JSON objects), after the named arguments
--
-- Returns -1 when fenced off (nothing written), 1 when a cancel was asked, else 0.

local cur = redis.call('HMGET', KEY.job, 'attempt', 'worker_name', 'status', 'cancel', 'reply_to')
if cur[1] ~= ARG.attempt or cur[2] ~= ARG.worker or cur[3] ~= 'started' then return -1 end
local n = #ARGV - ARG_REST + 1
local seq = redis.call('HINCRBY', KEY.job, 'seq', n) - n
for i = ARG_REST, #ARGV do
  local ttl = seq % 16 == 0 and ARG.ttl_ms
  emit(KEY.job, ARG.id, ARG.attempt, ARGV[i], ARG.maxlen, ttl, false, cur[5], seq)
  seq = seq + 1
end
if cur[4] then return 1 end
return 0
