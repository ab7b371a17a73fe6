"""Lua scripts: each job state change is one atomic round trip.

Every script that changes a running job checks its fence first: the job's ``attempt`` and ``worker_name`` must
still be the caller's, so a worker presumed dead can never write into a job that another worker now runs.
An event is one JSON object; its ``seq`` comes from ``HINCRBY seq`` on the job hash, and it goes to the replay
stream (entry id ``<seq+1>-0``) and to the pub/sub channel in the same script.
"""

from __future__ import annotations

import hashlib
from typing import Any

from redis.exceptions import NoScriptError

from . import keys

_EMIT = f"""
local function emit(jk, id, attempt, body, maxlen, ttl_ms)
  local seq = redis.call('HINCRBY', jk, 'seq', 1) - 1
  local ev = '{{"job":"' .. id .. '","seq":' .. seq .. ',"attempt":' .. attempt .. ',' .. string.sub(body, 2)
  local sk = '{keys.events_key("")}' .. id
  redis.call('XADD', sk, 'MAXLEN', '~', maxlen, (seq + 1) .. '-0', 'e', ev)
  redis.call('PEXPIRE', sk, ttl_ms)
  redis.call('PUBLISH', '{keys.chunks_channel("")}' .. id, ev)
  return seq
end
"""

# KEYS: inflight list, then the queue keys in the order to try.
# ARGV: worker id, now (RQ time format), events maxlen, events ttl ms.
# Returns {id, attempt, data, timeout, model, enqueued_at} or false. Skips ids whose job is gone or no longer
# queued.
POP_SRC = (
    _EMIT
    + f"""
for i = 2, #KEYS do
  for _ = 1, 100 do
    local id = redis.call('LPOP', KEYS[i])
    if not id then break end
    local jk = '{keys.RQ_JOB_PREFIX}' .. id
    local st = redis.call('HMGET', jk, 'status', 'attempt', 'data', 'run_timeout', 'model', 'enqueued_at')
    if st[1] == 'queued' then
      local attempt = st[2] or '1'  -- a job not enqueued by Corral has no attempt yet
      redis.call('RPUSH', KEYS[1], id)
      redis.call('ZREM', '{keys.DEADLINES}', id)
      redis.call('HSET', jk, 'status', 'started', 'worker_name', ARGV[1], 'started_at', ARGV[2],
                 'last_heartbeat', ARGV[2], 'attempt', attempt)
      emit(jk, id, attempt, '{{"type":"started","worker":"' .. ARGV[1] .. '"}}', ARGV[3], ARGV[4])
      return {{id, attempt, st[3] or '', st[4] or '', st[5] or '', st[6] or ''}}
    end
  end
end
return false
"""
)

# KEYS: job hash.  ARGV: id, attempt, worker, maxlen, ttl ms, then one or more event bodies.
# Returns -1 when fenced off (the job is no longer this worker's), 1 when a cancel was asked, else 0.
EMIT_SRC = (
    _EMIT
    + """
local cur = redis.call('HMGET', KEYS[1], 'attempt', 'worker_name', 'status', 'cancel')
if cur[1] ~= ARGV[2] or cur[2] ~= ARGV[3] or cur[3] ~= 'started' then return -1 end
for i = 6, #ARGV do emit(KEYS[1], ARGV[1], ARGV[2], ARGV[i], ARGV[4], ARGV[5]) end
if cur[4] then return 1 end
return 0
"""
)

# KEYS: job hash, inflight list.
# ARGV: id, attempt, worker, rq status, ended_at, result json or '', error or '', event body, maxlen,
#       events ttl ms, result ttl s, metrics json or '' (first token, tokens: for the history), then the
#       bodies of chunk events that precede the last one (if any).
# Returns 1 when written, 0 when fenced off (a late result of a presumed-dead worker is discarded).
FINISH_SRC = (
    _EMIT
    + f"""
redis.call('LREM', KEYS[2], 0, ARGV[1])
local cur = redis.call('HMGET', KEYS[1], 'attempt', 'worker_name', 'status')
if cur[1] ~= ARGV[2] or cur[2] ~= ARGV[3] or cur[3] ~= 'started' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[4], 'ended_at', ARGV[5])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'result', ARGV[6]) end
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[7]) end
if ARGV[12] ~= '' then redis.call('HSET', KEYS[1], 'metrics', ARGV[12]) end
redis.call('HDEL', KEYS[1], 'cancel')
for i = 13, #ARGV do emit(KEYS[1], ARGV[1], ARGV[2], ARGV[i], ARGV[9], ARGV[10]) end
emit(KEYS[1], ARGV[1], ARGV[2], ARGV[8], ARGV[9], ARGV[10])
redis.call('EXPIRE', KEYS[1], ARGV[11])
redis.call('HINCRBY', '{keys.STATS}', 'finished:' .. ARGV[4], 1)
return 1
"""
)

# KEYS: job hash, inflight list (may be a dummy).
# ARGV: id, attempt ('' = any), worker ('' = any), reason, max attempts ('' = no limit), now, maxlen,
#       events ttl ms, result ttl s, count ('1' = this attempt counts towards the retry limit).
# Returns {'requeued', attempt} | {'failed', attempt} | {'skipped'}.
REQUEUE_SRC = (
    _EMIT
    + f"""
redis.call('LREM', KEYS[2], 0, ARGV[1])
local cur = redis.call('HMGET', KEYS[1], 'attempt', 'worker_name', 'status', 'origin')
if cur[3] ~= 'started' then return {{'skipped'}} end
if (ARGV[2] ~= '' and cur[1] ~= ARGV[2]) or (ARGV[3] ~= '' and cur[2] ~= ARGV[3]) then return {{'skipped'}} end
local attempt = tonumber(cur[1])
local reason = cjson.encode(ARGV[4])
if ARGV[10] == '1' and ARGV[5] ~= '' and attempt >= tonumber(ARGV[5]) then
  local err = 'gave up after ' .. attempt .. ' attempts: ' .. ARGV[4]
  redis.call('HSET', KEYS[1], 'status', 'failed', 'ended_at', ARGV[6], 'error', err)
  emit(KEYS[1], ARGV[1], attempt, '{{"type":"error","error":' .. cjson.encode(err) .. '}}', ARGV[7], ARGV[8])
  redis.call('EXPIRE', KEYS[1], ARGV[9])
  redis.call('HINCRBY', '{keys.STATS}', 'finished:failed', 1)
  return {{'failed', attempt}}
end
local next_attempt = attempt
if ARGV[10] == '1' then next_attempt = attempt + 1 end
redis.call('HSET', KEYS[1], 'status', 'queued', 'attempt', next_attempt, 'enqueued_at', ARGV[6])
redis.call('HDEL', KEYS[1], 'worker_name', 'started_at', 'cancel')
emit(KEYS[1], ARGV[1], next_attempt, '{{"type":"retry","reason":' .. reason .. '}}', ARGV[7], ARGV[8])
redis.call('LPUSH', '{keys.RQ_QUEUE_PREFIX}' .. cur[4], ARGV[1])
local model = redis.call('HGET', KEYS[1], 'model')
redis.call('PUBLISH', '{keys.wake_channel("")}' .. model, ARGV[1])
redis.call('HINCRBY', '{keys.STATS}', 'requeued', 1)
return {{'requeued', next_attempt}}
"""
)

# KEYS: job hash.  ARGV: id, now, maxlen, events ttl ms, result ttl s.
# Returns {'cancelled'} for a queued job (removed from its queue), {'cancelling', worker} for a running one
# (the worker stops it), {status} when it has already ended, {'missing'} when there is no such job.
CANCEL_SRC = (
    _EMIT
    + f"""
local st = redis.call('HMGET', KEYS[1], 'status', 'worker_name', 'attempt', 'origin')
if not st[1] then return {{'missing'}} end
if st[1] == 'queued' then
  redis.call('LREM', '{keys.RQ_QUEUE_PREFIX}' .. st[4], 0, ARGV[1])
  redis.call('HSET', KEYS[1], 'status', 'canceled', 'ended_at', ARGV[2])
  redis.call('HINCRBY', '{keys.STATS}', 'finished:canceled', 1)
  emit(KEYS[1], ARGV[1], st[3], '{{"type":"cancelled","reason":"cancelled while queued"}}', ARGV[3], ARGV[4])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  return {{'cancelled'}}
end
if st[1] == 'started' then
  redis.call('HSET', KEYS[1], 'cancel', '1')
  redis.call('PUBLISH', '{keys.control_channel("")}' .. st[2], '{{"cancel":"' .. ARGV[1] .. '"}}')
  return {{'cancelling', st[2]}}
end
return {{st[1]}}
"""
)


class LuaScript:
    """A script called by EVALSHA through ``execute_command``, loaded again if Redis lost it (a restart).

    redis-py's own Script objects go through a deprecation wrapper that cost ~10% of a worker's CPU per job."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, client: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.execute_command("SCRIPT", "LOAD", self.source)
            return client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)

    async def call_async(self, client: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.execute_command("SCRIPT", "LOAD", self.source)
            return await client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)


# KEYS: job hash, deadlines zset.  ARGV: id, now, maxlen, events ttl ms, result ttl s.
# Fails a job still queued when its queue-wait deadline has passed. Returns 1 when it expired the job.
EXPIRE_QUEUED_SRC = (
    _EMIT
    + f"""
redis.call('ZREM', KEYS[2], ARGV[1])
local st = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'origin', 'queue_timeout')
if st[1] ~= 'queued' then return 0 end
redis.call('LREM', '{keys.RQ_QUEUE_PREFIX}' .. st[3], 0, ARGV[1])
local err = 'expired: not started within ' .. (st[4] or '?') .. 's in the queue'
redis.call('HSET', KEYS[1], 'status', 'failed', 'ended_at', ARGV[2], 'error', err)
redis.call('HINCRBY', '{keys.STATS}', 'expired', 1)
redis.call('HINCRBY', '{keys.STATS}', 'finished:failed', 1)
emit(KEYS[1], ARGV[1], st[2], '{{"type":"error","error":' .. cjson.encode(err) .. '}}', ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""
)

# KEYS: job hash, model queue, rq:queues, events stream, deadlines zset, stats hash, history zset, recent list,
#       owner's active-jobs set.
# ARGV: id, max queue (0 = none), queued event, maxlen, events ttl ms, wake channel, chunks channel, deadline
#       (0 = none), created (epoch s), history min score, history max count, the job hash as a JSON object
#       of strings (one argument: far cheaper to send than 2N), owner's quota of queued + running jobs (0 = none).
# Returns {queue length after the push}, {-1, current length} when the queue is full or {-2, active jobs} when
# the owner's quota is used up (nothing written either way; ended jobs leave the owner's set here, lazily).
ENQUEUE_SRC = """
local limit = tonumber(ARGV[2])
if limit > 0 then
  local depth = redis.call('LLEN', KEYS[2])
  if depth >= limit then return {-1, depth} end
end
local quota = tonumber(ARGV[13])
if quota > 0 then
  local active = 0
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[9])) do
    local st = redis.call('HGET', 'RQ_JOB_PREFIX' .. id, 'status')
    if st == 'queued' or st == 'started' then active = active + 1 else redis.call('SREM', KEYS[9], id) end
  end
  if active >= quota then return {-2, active} end
end
local flat = {}
for field, value in pairs(cjson.decode(ARGV[12])) do
  flat[#flat + 1] = field
  flat[#flat + 1] = value
end
redis.call('HSET', KEYS[1], unpack(flat))
local n = redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], KEYS[2])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '1-0', 'e', ARGV[3])
redis.call('PEXPIRE', KEYS[4], ARGV[5])
redis.call('PUBLISH', ARGV[7], ARGV[3])
redis.call('PUBLISH', ARGV[6], ARGV[1])
if tonumber(ARGV[8]) > 0 then redis.call('ZADD', KEYS[5], ARGV[8], ARGV[1]) end
redis.call('HINCRBY', KEYS[6], 'submitted', 1)
redis.call('ZADD', KEYS[7], ARGV[9], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', '(' .. ARGV[10])
if redis.call('ZCARD', KEYS[7]) > tonumber(ARGV[11]) then
  redis.call('ZREMRANGEBYRANK', KEYS[7], 0, -tonumber(ARGV[11]) - 1)
end
redis.call('LPUSH', KEYS[8], ARGV[1])
redis.call('LTRIM', KEYS[8], 0, RECENT_LAST)
if quota > 0 then
  redis.call('SADD', KEYS[9], ARGV[1])
  redis.call('PEXPIRE', KEYS[9], ARGV[5])
end
return {n}
""".replace("RECENT_LAST", str(keys.RECENT_JOBS_MAX - 1)).replace("RQ_JOB_PREFIX", keys.RQ_JOB_PREFIX)

RELEASE_LOCK_SRC = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

POP = LuaScript(POP_SRC)
EMIT = LuaScript(EMIT_SRC)
FINISH = LuaScript(FINISH_SRC)
REQUEUE = LuaScript(REQUEUE_SRC)
CANCEL = LuaScript(CANCEL_SRC)
EXPIRE_QUEUED = LuaScript(EXPIRE_QUEUED_SRC)
ENQUEUE = LuaScript(ENQUEUE_SRC)
RELEASE_LOCK = LuaScript(RELEASE_LOCK_SRC)
