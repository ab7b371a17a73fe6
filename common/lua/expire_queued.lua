-- EXPIRE_QUEUED: fail a job still queued when its queue-wait deadline has passed: queued -> failed (it leaves its
-- queue, an error event). The janitor calls it for each job whose deadline is due.
--
-- KEY.job          the job hash
-- KEY.deadlines    the deadlines zset (the job leaves it in any case)
-- ARG.id           the job id
-- ARG.now          now (RQ time format)
-- ARG.maxlen       the events stream's cap
-- ARG.ttl_ms       the events stream's expiry
-- ARG.result_ttl   seconds the failed job's hash is kept
--
-- Returns 1 when it expired the job, 0 when the job was no longer queued.

redis.call('ZREM', KEY.deadlines, ARG.id)
local st = redis.call('HMGET', KEY.job, 'status', 'attempt', 'origin', 'queue_timeout', 'model', 'priority',
                      'submitter')
if st[1] ~= 'queued' then return 0 end
redis.call('LREM', rq_queue_key(st[3]), 0, ARG.id)
index_remove(st[5], st[6], st[7], ARG.id)
local err = 'expired: not started within ' .. (st[4] or '?') .. 's in the queue'
redis.call('HSET', KEY.job, 'status', 'failed', 'ended_at', ARG.now, 'error', err)
redis.call('HINCRBY', STATS, 'expired', 1)
redis.call('HINCRBY', STATS, 'finished:failed', 1)
emit(KEY.job, ARG.id, st[2], '{"type":"error","error":' .. cjson.encode(err) .. '}', ARG.maxlen, ARG.ttl_ms)
redis.call('EXPIRE', KEY.job, ARG.result_ttl)
return 1
