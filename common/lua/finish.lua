-- FINISH: end a running job: started -> finished | failed | canceled (RQ's statuses), with its last events, and
-- record its timing in the fleet-wide histograms in the same command.
-- Fenced: the job leaves the worker's inflight list (unless another attempt of it runs on this worker), but nothing
-- else is written unless the job is started and its attempt and worker are the caller's (a late result of a
-- presumed-dead worker is discarded, and its timing is not recorded).
--
-- KEY.job          the job hash
-- KEY.inflight     the worker's inflight list
-- KEY...           one histogram hash per timing increment, after the named keys
-- ARG.id           the job id
-- ARG.attempt      the caller's attempt (the fence)
-- ARG.worker       the caller's worker id (the fence)
-- ARG.status       the RQ status to end in: finished, failed or canceled
-- ARG.ended_at     now (RQ time format)
-- ARG.result       the result (JSON) or ''
-- ARG.error        the error or ''
-- ARG.body         the last event's body (done, error, cancelled)
-- ARG.maxlen       the events stream's cap
-- ARG.ttl_ms       the events stream's expiry
-- ARG.result_ttl   seconds the job hash is kept from now on
-- ARG.metrics      JSON (first token, tokens: for the history) or ''
-- ARG.chunks       the number n of chunk events that precede the last one
-- ARG...           the n chunk bodies, then the timing's field and amount per increment (see record)
--
-- Returns 1 when written, 0 when fenced off.

local cur = redis.call('HMGET', KEY.job, 'attempt', 'worker_name', 'status', 'model', 'reply_to')
if cur[1] ~= ARG.attempt or cur[2] ~= ARG.worker or cur[3] ~= 'started' then
  -- (another attempt of the job runs on this worker: its in-flight entry stays)
  if cur[2] ~= ARG.worker or cur[3] ~= 'started' then redis.call('LREM', KEY.inflight, 0, ARG.id) end
  return 0
end
redis.call('LREM', KEY.inflight, 0, ARG.id)
if cur[4] then redis.call('HINCRBY', RUNNING, cur[4], -1) end
redis.call('HSET', KEY.job, 'status', ARG.status, 'ended_at', ARG.ended_at)
if ARG.result ~= '' then redis.call('HSET', KEY.job, 'result', ARG.result) end
if ARG.error ~= '' then redis.call('HSET', KEY.job, 'error', ARG.error) end
if ARG.metrics ~= '' then redis.call('HSET', KEY.job, 'metrics', ARG.metrics) end
redis.call('HDEL', KEY.job, 'cancel')
local chunks = tonumber(ARG.chunks)
local seq = redis.call('HINCRBY', KEY.job, 'seq', chunks + 1) - chunks - 1
for i = ARG_REST, ARG_REST + chunks - 1 do
  emit(KEY.job, ARG.id, ARG.attempt, ARGV[i], ARG.maxlen, false, false, cur[5], seq)
  seq = seq + 1
end
emit(KEY.job, ARG.id, ARG.attempt, ARG.body, ARG.maxlen, ARG.ttl_ms, false, cur[5], seq)
redis.call('EXPIRE', KEY.job, ARG.result_ttl)
redis.call('HINCRBY', STATS, 'finished:' .. ARG.status, 1)
record(KEY_REST, ARG_REST + chunks)
return 1
