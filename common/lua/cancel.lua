-- CANCEL: cancel a job. Queued -> canceled (it leaves its queue, a cancelled event); started: the cancel field is
-- set and its worker told on its control channel (the worker stops the job and finishes it canceled).
--
-- KEY.job          the job hash
-- ARG.id           the job id
-- ARG.now          now (RQ time format)
-- ARG.maxlen       the events stream's cap
-- ARG.ttl_ms       the events stream's expiry
-- ARG.result_ttl   seconds the cancelled job's hash is kept
--
-- Returns {'cancelled'} for a queued job, {'cancelling', worker} for a running one, {status} when it has already
-- ended, {'missing'} when there is no such job.

local st = redis.call('HMGET', KEY.job, 'status', 'worker_name', 'attempt', 'origin', 'model', 'priority',
                      'submitter')
if not st[1] then return {'missing'} end
if st[1] == 'queued' then
  redis.call('LREM', rq_queue_key(st[4]), 0, ARG.id)
  index_remove(st[5], st[6], st[7], ARG.id)
  redis.call('HSET', KEY.job, 'status', 'canceled', 'ended_at', ARG.now)
  redis.call('HINCRBY', STATS, 'finished:canceled', 1)
  emit(KEY.job, ARG.id, st[3], '{"type":"cancelled","reason":"cancelled while queued"}', ARG.maxlen, ARG.ttl_ms)
  redis.call('EXPIRE', KEY.job, ARG.result_ttl)
  return {'cancelled'}
end
if st[1] == 'started' then
  redis.call('HSET', KEY.job, 'cancel', '1')
  redis.call('PUBLISH', control_channel(st[2]), '{"cancel":"' .. ARG.id .. '"}')
  return {'cancelling', st[2]}
end
return {st[1]}
