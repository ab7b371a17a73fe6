-- REQUEUE: put a running job back at the front of its queue: started -> queued, with attempt + 1 when this
-- attempt counts (a retry event); or, when it has used its attempts, started -> failed (an error event).
-- A job whose cancel was asked while it ran ends canceled instead (its worker stopped before it could finish it).
-- Fenced when the caller names the attempt or worker (the janitor names the dead worker); a job not started is
-- left alone.
--
-- KEY.job            the job hash
-- KEY.inflight       the worker's inflight list (the job leaves it in any case; any key when there is none)
-- ARG.id             the job id
-- ARG.attempt        the attempt to requeue ('': any)
-- ARG.worker         the worker running it ('': any)
-- ARG.reason         why (in the retry event, and the error)
-- ARG.max_attempts   attempts allowed ('': no limit)
-- ARG.now            now (RQ time format)
-- ARG.maxlen         the events stream's cap
-- ARG.ttl_ms         the events stream's expiry
-- ARG.result_ttl     seconds a failed job's hash is kept
-- ARG.counts         '1': this attempt counts towards the limit (else the job goes back with the same attempt)
--
-- Returns {'requeued', attempt} | {'failed', attempt} | {'canceled', attempt} | {'skipped'}.

redis.call('LREM', KEY.inflight, 0, ARG.id)
local cur = redis.call('HMGET', KEY.job, 'attempt', 'worker_name', 'status', 'origin', 'model', 'priority',
                      'submitter', 'cancel')
if cur[3] ~= 'started' then return {'skipped'} end
if (ARG.attempt ~= '' and cur[1] ~= ARG.attempt) or (ARG.worker ~= '' and cur[2] ~= ARG.worker) then
  return {'skipped'}
end
if cur[5] then redis.call('HINCRBY', RUNNING, cur[5], -1) end
local attempt = tonumber(cur[1])
-- the job ends here in ``status`` (and the field-value pairs ``...``), with its last event ``body``
local function ended(status, body, ...)
  redis.call('HSET', KEY.job, 'status', status, 'ended_at', ARG.now, ...)
  emit(KEY.job, ARG.id, attempt, body, ARG.maxlen, ARG.ttl_ms)
  redis.call('EXPIRE', KEY.job, ARG.result_ttl)
  redis.call('HINCRBY', STATS, 'finished:' .. status, 1)
  return {status, attempt}
end
if cur[8] then  -- a cancel asked while it ran: it ends here, never runs again
  redis.call('HDEL', KEY.job, 'cancel')
  local why = cjson.encode('cancelled; its worker stopped first (' .. ARG.reason .. ')')
  return ended('canceled', '{"type":"cancelled","reason":' .. why .. '}')
end
local counts = ARG.counts == '1'
if counts and ARG.max_attempts ~= '' and attempt >= tonumber(ARG.max_attempts) then
  local err = 'gave up after ' .. attempt .. ' attempts: ' .. ARG.reason
  return ended('failed', '{"type":"error","error":' .. cjson.encode(err) .. '}', 'error', err)
end
local next_attempt = attempt
if counts then next_attempt = attempt + 1 end
redis.call('HSET', KEY.job, 'status', 'queued', 'attempt', next_attempt, 'enqueued_at', ARG.now)
redis.call('HDEL', KEY.job, 'worker_name', 'started_at', 'cancel')
local reason = cjson.encode(ARG.reason)
emit(KEY.job, ARG.id, next_attempt, '{"type":"retry","reason":' .. reason .. '}', ARG.maxlen, ARG.ttl_ms)
redis.call('LPUSH', rq_queue_key(cur[4]), ARG.id)
if cur[5] and cur[6] and cur[7] then index_push(cur[5], cur[6], cur[7], ARG.id, true) end
wake(cur[5] or '', clock(), ARG.id)  -- one idle worker holding the model pops it
redis.call('HINCRBY', STATS, 'requeued', 1)
return {'requeued', next_attempt}
