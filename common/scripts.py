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
from .jobs import JOB_BLOCK
from .schedule import POSITION_SRC, SCHED_LUA, STARTS_KEPT

_EMIT = f"""
-- quiet: not on the job's reply_to (the enqueue that writes the event returns it to the submitter instead).
-- Optional, for callers that know them (each saves a command, and every command a script calls costs): reply_to
-- (the job's, false: none; nil: read here), seq (the event's, when the caller has counted it already); ttl_ms
-- false: the stream's expiry is not renewed (it was a moment ago, or is renewed every few events).
local function emit(jk, id, attempt, body, maxlen, ttl_ms, quiet, reply_to, seq)
  if not seq then seq = redis.call('HINCRBY', jk, 'seq', 1) - 1 end
  local ev = '{{"job":"' .. id .. '","seq":' .. seq .. ',"attempt":' .. attempt .. ',' .. string.sub(body, 2)
  local sk = '{keys.events_key("")}' .. id
  redis.call('XADD', sk, 'MAXLEN', '~', maxlen, (seq + 1) .. '-0', 'e', ev)
  if ttl_ms then redis.call('PEXPIRE', sk, ttl_ms) end
  redis.call('PUBLISH', '{keys.chunks_channel("")}' .. id, ev)
  if not quiet then
    if reply_to == nil then reply_to = redis.call('HGET', jk, 'reply_to') end  -- the API following the job
    if reply_to then redis.call('PUBLISH', reply_to, ev) end
  end
  return seq, ev
end
"""

_MODEL_WORKERS = keys.model_workers_key("\x00").split("\x00")  # (prefix, suffix) around a model name
PARK_KEEP_MS = 600_000  # a park record outlives its use; an enqueue checks its ``until``
# added to the free slots of a worker parked for a model it has loaded (parks rank by score)
WARM_PARK = 1_000_000

# Lua: start a job on a worker, take the next job of a model queue for a worker, and the parks of idle workers
# (push dispatch: an idle worker parks for the models it may take; an enqueue of one of them hands the job to
# the parked worker chosen by parked_worker, which learns it from its control channel — docs/scheduling.md).
# w: {id = worker id, ts = now (RQ time format), maxlen, ttl = the events stream's cap and ttl ms, aging = s,
#     quiet = the started event not on reply_to (start sets w.started to it)}
_TAKE = f"""
local function start(jk, id, st, m, w)
  local attempt = st[2] or '1'  -- a job not enqueued by Corral has no attempt yet
  local seq, ev
  redis.call('RPUSH', '{keys.inflight_key("")}' .. w.id, id)
  if w.fresh then
    -- a job an enqueue hands at once: its hash already says started (push_job wrote it), it never had a
    -- deadline, its queued event is seq 0 and its stream's expiry was just set
    seq, ev = emit(jk, id, attempt, '{{"type":"started","worker":"' .. w.id .. '"}}', w.maxlen, false, w.quiet,
                   nil, 1)
  else
    -- the worker's clock when it sent the pop, which may be before the job was (re-)queued: never earlier
    local ts = w.ts
    if st[6] and st[6] > ts then ts = st[6] end  -- (RQ timestamps compare as text)
    redis.call('ZREM', '{keys.DEADLINES}', id)
    redis.call('HSET', jk, 'status', 'started', 'worker_name', w.id, 'started_at', ts, 'last_heartbeat', ts,
               'attempt', attempt)
    seq, ev = emit(jk, id, attempt, '{{"type":"started","worker":"' .. w.id .. '"}}', w.maxlen, w.ttl, w.quiet)
  end
  w.started = ev
  local sk = '{keys.STARTS_PREFIX}' .. m
  if redis.call('LPUSH', sk, string.format('%.3f', w.now)) > {STARTS_KEPT} then
    redis.call('LTRIM', sk, 0, {STARTS_KEPT - 1})
  end
  redis.call('HINCRBY', '{keys.RUNNING}', m, 1)
  return {{id, attempt, st[3] or '', st[4] or '', st[5] or '', st[6] or '', seq}}
end
local function take(qkey, m, now, w)
  for _ = 1, 100 do
    local id = index_pop(m, now, w.aging)
    if id then
      if redis.call('LREM', qkey, 1, id) == 0 then id = false end  -- no longer queued: skip
    else
      id = redis.call('LPOP', qkey)  -- a job outside the index (pushed by RQ's own tools)
      if not id then return nil end
    end
    if id then
      local jk = '{keys.RQ_JOB_PREFIX}' .. id
      local st = redis.call('HMGET', jk, 'status', 'attempt', 'data', 'run_timeout', 'model', 'enqueued_at')
      if st[1] == 'queued' then return start(jk, id, st, m, w) end
    end
  end
  return nil
end
-- end a worker's park; returns the job (JSON of POP's answer) and its id an enqueue handed it meanwhile, if any
local function unpark(wid)
  local pk = '{keys.PARK_PREFIX}' .. wid
  local rec = redis.call('HMGET', pk, 'models', 'job', 'id')
  if rec[1] then
    for m in string.gmatch(rec[1], '%S+') do redis.call('ZREM', '{keys.PARKED_PREFIX}' .. m, wid) end
  end
  redis.call('DEL', pk)
  return rec[2], rec[3]
end
-- the live parked worker to hand a job of model m: the one with m loaded and the most free slots; one without m
-- only when no worker claims it warm (as a pop would not make it wait: cold_wait). Its park ends: it leaves the
-- parked sets, and the record of a worker that is not handed the job goes (hand overwrites the other's). Live:
-- the park was renewed, the heartbeat says healthy (its Ollama answers) and the worker listens on its control
-- channel (a killed worker's connections close at once, long before its heartbeat expires).
local function listening(wid)
  return redis.call('PUBSUB', 'NUMSUB', '{keys.control_channel("")}' .. wid)[2] > 0
end
local function parked_worker(m, now)
  local pz = '{keys.PARKED_PREFIX}' .. m
  for _ = 1, 4 do
    local top = redis.call('ZREVRANGE', pz, 0, 0, 'WITHSCORES')
    local wid = top[1]
    if not wid then return false end
    if tonumber(top[2]) < {WARM_PARK} and live_claims(m, now) > 0 then return false end
    local pk = '{keys.PARK_PREFIX}' .. wid
    local rec = redis.call('HMGET', pk, 'models', 'until')
    redis.call('ZREM', pz, wid)
    for other in string.gmatch(rec[1] or '', '%S+') do
      if other ~= m then redis.call('ZREM', '{keys.PARKED_PREFIX}' .. other, wid) end
    end
    local live = tonumber(rec[2] or '0') >= now
    if live and redis.call('HGET', '{keys.worker_key("")}' .. wid, 'healthy') == '1' and listening(wid) then
      return wid
    end
    redis.call('DEL', pk)
  end
  return false
end
-- tell a worker the job it was handed (POP's answer), and keep it for its next pop if the message is lost
local function hand(wid, job)
  local body = cjson.encode(job)
  local pk = '{keys.PARK_PREFIX}' .. wid
  redis.call('HSET', pk, 'job', body, 'id', job[1])
  redis.call('PEXPIRE', pk, {PARK_KEEP_MS})
  redis.call('PUBLISH', '{keys.control_channel("")}' .. wid, '{{"dispatch":' .. body .. '}}')
end
"""

# KEYS: inflight list, then the queue keys in the order to try.
# ARGV: worker id, now (RQ time format), events maxlen, events ttl ms, flags (one per queue key, see
#       schedule.plan_pop: '1' warm: claim and take; '0' cold: take after the cold delay, when no warm queue
#       has a job; 'c' cold with room on the host: the same, and before the warm queues when no worker serves
#       the model and its oldest job has waited the switch delay; 'r' reserved: claim only; 't' the target of
#       a switch, now with room: claim and take first; 's' switch probe: the worker is at its model capacity),
#       cold delay s, warm claim ttl s, switch delay s, priority aging s (0: strict priorities), free slots to
#       park with when nothing can be taken (0: do not park), seconds the park lasts, the id of the last job
#       handed to this worker that it has seen (a handed job it has not seen is returned first).
# Returns {id, attempt, data, timeout, model, enqueued_at, seq of the started event}; or {'switch', model, then
# for each warm model: name, queued, other live claims} when a probed model has waited the switch delay and no
# worker claims it (the model is then claimed for this worker); or, when only jobs a cold worker must not take
# yet are queued, the milliseconds until the first may be taken; or false. Skips ids whose job is gone or no
# longer queued.
POP_SRC = (
    _EMIT
    + SCHED_LUA
    + _TAKE
    + f"""
local now = clock()
local w = {{id = ARGV[1], ts = ARGV[2], maxlen = ARGV[3], ttl = ARGV[4], aging = tonumber(ARGV[9]), now = now}}
-- a job an enqueue handed to this worker while it was parked, if its message was not seen (ARGV[12] acks one)
local handed, handed_id = unpark(w.id)
if handed and handed_id ~= ARGV[12] then
  local job = cjson.decode(handed)
  local cur = redis.call('HMGET', '{keys.RQ_JOB_PREFIX}' .. handed_id, 'status', 'worker_name', 'attempt')
  if cur[1] == 'started' and cur[2] == w.id and cur[3] == job[2] then return job end
end
local qp = #'{keys.queue_key("")}' + 1
local function flag(i) return string.sub(ARGV[5], i - 1, i - 1) end
local function claim(m) redis.call('ZADD', '{keys.WARM_PREFIX}' .. m, now + tonumber(ARGV[7]), ARGV[1]) end
for i = 2, #KEYS do
  if flag(i) == '1' or flag(i) == 'r' or flag(i) == 't' then claim(string.sub(KEYS[i], qp)) end
end
-- at capacity: a model whose oldest job has waited the switch delay with no worker claiming it makes this
-- worker switch (it stops taking one of its models and takes this one once that has drained)
local function unserved(m, qkey)
  local age = head_age(qkey, now)
  return age and age >= tonumber(ARGV[8]) and live_claims(m, now) == 0
end
for i = 2, #KEYS do
  local m = string.sub(KEYS[i], qp)
  if flag(i) == 's' and unserved(m, KEYS[i]) then
    claim(m)
    local out = {{'switch', m}}
    for j = 2, #KEYS do
      if flag(j) == '1' then
        local h = string.sub(KEYS[j], qp)
        out[#out + 1] = h
        out[#out + 1] = redis.call('LLEN', KEYS[j])
        out[#out + 1] = live_claims(h, now) - 1
      end
    end
    return out
  end
end
-- first a switch's target ('t') or a cold model with room ('c') that nobody serves and has waited the switch
-- delay, then warm models ('1'), then cold ones ('0', 'c') after the cold delay
local wait = nil
for pass = 1, 2 do
  for i = 2, #KEYS do
    local m, f, left = string.sub(KEYS[i], qp), flag(i), -1
    if pass == 1 then
      if f == 't' or (f == 'c' and unserved(m, KEYS[i])) then left = 0 end
    elseif f == '0' or f == 'c' then
      left = cold_wait(m, KEYS[i], now, tonumber(ARGV[6]))
    elseif f == '1' then
      left = 0
    end
    if left == 0 then
      local job = take(KEYS[i], m, now, w)
      if job then return job end
    elseif left > 0 and (wait == nil or left < wait) then
      wait = left
    end
  end
end
-- nothing to take now: park for the models it may take, so that the next enqueue of one hands its job straight
-- here (a warm worker before a cold one, see parked_worker)
local slots = tonumber(ARGV[10] or '0') or 0
if slots > 0 then
  local parked = {{}}
  for i = 2, #KEYS do
    local f = flag(i)
    if f == '1' or f == '0' or f == 'c' then
      parked[#parked + 1] = string.sub(KEYS[i], qp)
      local score = slots
      if f == '1' then score = {WARM_PARK} + slots end
      redis.call('ZADD', '{keys.PARKED_PREFIX}' .. parked[#parked], score, w.id)
    end
  end
  if #parked > 0 then
    local pk = '{keys.PARK_PREFIX}' .. w.id
    redis.call('HSET', pk, 'models', table.concat(parked, ' '),
               'until', string.format('%.3f', now + tonumber(ARGV[11])))
    redis.call('PEXPIRE', pk, {PARK_KEEP_MS})
  end
end
if wait then return math.ceil(wait * 1000) end
return false
"""
)

# KEYS: job hash.  ARGV: id, attempt, worker, maxlen, ttl ms, then one or more event bodies.
# Returns -1 when fenced off (the job is no longer this worker's), 1 when a cancel was asked, else 0.
EMIT_SRC = (
    _EMIT
    + """
local cur = redis.call('HMGET', KEYS[1], 'attempt', 'worker_name', 'status', 'cancel', 'reply_to')
if cur[1] ~= ARGV[2] or cur[2] ~= ARGV[3] or cur[3] ~= 'started' then return -1 end
local n = #ARGV - 5
local seq = redis.call('HINCRBY', KEYS[1], 'seq', n) - n
for i = 6, #ARGV do
  -- the stream's expiry (a day by default) is renewed every 16 events; every other script renews it each time
  local ttl = seq % 16 == 0 and ARGV[5]
  emit(KEYS[1], ARGV[1], ARGV[2], ARGV[i], ARGV[4], ttl, false, cur[5], seq)
  seq = seq + 1
end
if cur[4] then return 1 end
return 0
"""
)

# Lua: add increments to hashes (a job's timing to the fleet-wide histograms, common.histograms): KEYS from
# first_key on, one hash per increment; ARGV from first_arg on, a field and an amount per increment, in the same
# order (``…|sum`` fields take floats).
RECORD_LUA = """
local function record(first_key, first_arg)
  for i = first_key, #KEYS do
    local a = first_arg + 2 * (i - first_key)
    if string.sub(ARGV[a], -4) == '|sum' then redis.call('HINCRBYFLOAT', KEYS[i], ARGV[a], ARGV[a + 1])
    else redis.call('HINCRBY', KEYS[i], ARGV[a], ARGV[a + 1]) end
  end
end
"""

# KEYS: job hash, inflight list, then one hash per increment of the job's timing (RECORD_LUA).
# ARGV: id, attempt, worker, rq status, ended_at, result json or '', error or '', event body, maxlen,
#       events ttl ms, result ttl s, metrics json or '' (first token, tokens: for the history), the number n of
#       chunk events that precede the last one, their n bodies, then the timing's field, amount pairs.
# Returns 1 when written (the timing recorded with it), 0 when fenced off (a late result of a presumed-dead
# worker is discarded, and its timing is not recorded).
FINISH_SRC = (
    _EMIT
    + RECORD_LUA
    + f"""
redis.call('LREM', KEYS[2], 0, ARGV[1])
local cur = redis.call('HMGET', KEYS[1], 'attempt', 'worker_name', 'status', 'model', 'reply_to')
if cur[1] ~= ARGV[2] or cur[2] ~= ARGV[3] or cur[3] ~= 'started' then return 0 end
if cur[4] then redis.call('HINCRBY', '{keys.RUNNING}', cur[4], -1) end
redis.call('HSET', KEYS[1], 'status', ARGV[4], 'ended_at', ARGV[5])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'result', ARGV[6]) end
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[7]) end
if ARGV[12] ~= '' then redis.call('HSET', KEYS[1], 'metrics', ARGV[12]) end
redis.call('HDEL', KEYS[1], 'cancel')
local chunks = tonumber(ARGV[13])
local seq = redis.call('HINCRBY', KEYS[1], 'seq', chunks + 1) - chunks - 1
for i = 14, 13 + chunks do
  emit(KEYS[1], ARGV[1], ARGV[2], ARGV[i], ARGV[9], false, false, cur[5], seq)
  seq = seq + 1
end
emit(KEYS[1], ARGV[1], ARGV[2], ARGV[8], ARGV[9], ARGV[10], false, cur[5], seq)
redis.call('EXPIRE', KEYS[1], ARGV[11])
redis.call('HINCRBY', '{keys.STATS}', 'finished:' .. ARGV[4], 1)
record(3, 14 + chunks)
return 1
"""
)

# KEYS: job hash, inflight list (may be a dummy).
# ARGV: id, attempt ('' = any), worker ('' = any), reason, max attempts ('' = no limit), now, maxlen,
#       events ttl ms, result ttl s, count ('1' = this attempt counts towards the retry limit).
# Returns {'requeued', attempt} | {'failed', attempt} | {'skipped'}.
REQUEUE_SRC = (
    _EMIT
    + SCHED_LUA
    + f"""
redis.call('LREM', KEYS[2], 0, ARGV[1])
local cur = redis.call('HMGET', KEYS[1], 'attempt', 'worker_name', 'status', 'origin', 'model', 'priority',
                      'submitter')
if cur[3] ~= 'started' then return {{'skipped'}} end
if (ARGV[2] ~= '' and cur[1] ~= ARGV[2]) or (ARGV[3] ~= '' and cur[2] ~= ARGV[3]) then return {{'skipped'}} end
if cur[5] then redis.call('HINCRBY', '{keys.RUNNING}', cur[5], -1) end
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
if cur[5] and cur[6] and cur[7] then index_push(cur[5], cur[6], cur[7], ARGV[1], true) end
redis.call('PUBLISH', '{keys.wake_channel("")}' .. (cur[5] or ''), ARGV[1])
redis.call('HINCRBY', '{keys.STATS}', 'requeued', 1)
return {{'requeued', next_attempt}}
"""
)

# KEYS: job hash.  ARGV: id, now, maxlen, events ttl ms, result ttl s.
# Returns {'cancelled'} for a queued job (removed from its queue), {'cancelling', worker} for a running one
# (the worker stops it), {status} when it has already ended, {'missing'} when there is no such job.
CANCEL_SRC = (
    _EMIT
    + SCHED_LUA
    + f"""
local st = redis.call('HMGET', KEYS[1], 'status', 'worker_name', 'attempt', 'origin', 'model', 'priority',
                      'submitter')
if not st[1] then return {{'missing'}} end
if st[1] == 'queued' then
  redis.call('LREM', '{keys.RQ_QUEUE_PREFIX}' .. st[4], 0, ARGV[1])
  index_remove(st[5], st[6], st[7], ARGV[1])
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

    def send_now(self, client: Any, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA written at once when ``client`` can (the lean client, connected): its reply's future, else None.
        The caller falls back to ``call_async`` on NOSCRIPT, which loads the script."""
        send = getattr(client, "send_now", None)
        return None if send is None else send("EVALSHA", self.sha, len(keys), *keys, *args)

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
    + SCHED_LUA
    + f"""
redis.call('ZREM', KEYS[2], ARGV[1])
local st = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'origin', 'queue_timeout', 'model', 'priority',
                      'submitter')
if st[1] ~= 'queued' then return 0 end
redis.call('LREM', '{keys.RQ_QUEUE_PREFIX}' .. st[3], 0, ARGV[1])
index_remove(st[5], st[6], st[7], ARGV[1])
local err = 'expired: not started within ' .. (st[4] or '?') .. 's in the queue'
redis.call('HSET', KEYS[1], 'status', 'failed', 'ended_at', ARGV[2], 'error', err)
redis.call('HINCRBY', '{keys.STATS}', 'expired', 1)
redis.call('HINCRBY', '{keys.STATS}', 'finished:failed', 1)
emit(KEYS[1], ARGV[1], st[2], '{{"type":"error","error":' .. cjson.encode(err) .. '}}', ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""
)

# Lua: write one queued job (hash, RQ list, fair-share index, queued event, wake-up, deadline, history, recent
# list, owner's active set). a: index in ARGV of the job's block (common.jobs.job_block): id, queued event,
# deadline (0 = none), model, priority, submitter, created (epoch s), owner ('' = none), the job hash as a JSON
# object of strings. Returns 1 + the job's queue position (schedule.fair_position: jobs expected to start first).
_PUSH_JOB = (
    SCHED_LUA
    + f"""
local recent_len = 0  -- the recent jobs list's length after the last push_job (trim_lists)
-- whether a live worker holds model m (its holders are scored by when their heartbeat expires)
local function served(m, now)
  local holders = '{_MODEL_WORKERS[0]}' .. m .. '{_MODEL_WORKERS[1]}'
  return #redis.call('ZRANGEBYSCORE', holders, now, '+inf', 'LIMIT', 0, 1) > 0
end
-- now: the script's clock. handed: {{id = worker, ts = start time (RQ format)}} for a job handed to a parked worker
-- at once (push dispatch): it never enters the queue, and its hash is written started (as start() would) in the
-- same command; then the position is 0. Returns the position + 1 and the job hash's fields.
local function push_job(a, maxlen, ttl_ms, track_owner, now, handed)
  local id, m = ARGV[a], ARGV[a + 3]
  local jk, qk = '{keys.RQ_JOB_PREFIX}' .. id, '{keys.queue_key("")}' .. m
  local sk = '{keys.events_key("")}' .. id
  local flat, fields = {{'enq_ts', string.format('%.6f', now)}}, cjson.decode(ARGV[a + 8])
  local written = fields
  if handed then
    written = {{status = 'started', worker_name = handed.id, started_at = handed.ts, last_heartbeat = handed.ts,
               seq = '2'}}  -- (seq: the queued and started events are 0 and 1)
    for field, value in pairs(fields) do
      if written[field] == nil then written[field] = value end
    end
  end
  for field, value in pairs(written) do
    flat[#flat + 1] = field
    flat[#flat + 1] = value
  end
  redis.call('HSET', jk, unpack(flat))
  local n = 0
  redis.call('SADD', '{keys.RQ_QUEUES}', qk)  -- RQ's list of queues, which GET /queues reads too
  if not handed then
    redis.call('RPUSH', qk, id)
    n = index_push(m, ARGV[a + 4], ARGV[a + 5], id, false)
    if tonumber(ARGV[a + 2]) > 0 then redis.call('ZADD', '{keys.DEADLINES}', ARGV[a + 2], id) end
  end
  redis.call('XADD', sk, 'MAXLEN', '~', maxlen, '1-0', 'e', ARGV[a + 1])
  redis.call('PEXPIRE', sk, ttl_ms)
  redis.call('PUBLISH', '{keys.chunks_channel("")}' .. id, ARGV[a + 1])  -- (not on reply_to: see ENQUEUE)
  if not handed then redis.call('PUBLISH', '{keys.wake_channel("")}' .. m, id) end
  redis.call('ZADD', '{keys.HISTORY}', ARGV[a + 6], id)
  recent_len = redis.call('LPUSH', '{keys.RECENT_JOBS}', id)
  if track_owner then
    local ok = '{keys.owner_jobs_key("")}' .. ARGV[a + 7]
    redis.call('SADD', ok, id)
    redis.call('PEXPIRE', ok, ttl_ms)
  end
  if handed then return 1, fields end
  return fair_position(m, ARGV[a + 4], ARGV[a + 5], n - 1) + 1, fields
end
-- the owner's queued + running jobs, plus adding, over the quota? (ended jobs leave the owner's set here, lazily)
local function over_quota(owner, quota, adding)
  if quota <= 0 or owner == '' then return false end
  local ok = '{keys.owner_jobs_key("")}' .. owner
  local active = 0
  for _, id in ipairs(redis.call('SMEMBERS', ok)) do
    local st = redis.call('HGET', '{keys.RQ_JOB_PREFIX}' .. id, 'status')
    if st == 'queued' or st == 'started' then active = active + 1 else redis.call('SREM', ok, id) end
  end
  if active + adding > quota then return active end
  return false
end
-- keep the history index under its count (ARGV[5]) and age (ARGV[4]: the oldest score kept) and the recent
-- list under its length; submitted: the submit counter after adding the jobs just pushed. The age trim runs every
-- 64 submits, or when over the count.
local function trim_lists(submitted, added)
  if recent_len > {keys.RECENT_JOBS_MAX} then
    redis.call('LTRIM', '{keys.RECENT_JOBS}', 0, {keys.RECENT_JOBS_MAX - 1})
  end
  local card, most = redis.call('ZCARD', '{keys.HISTORY}'), tonumber(ARGV[5])
  if card > most or math.floor(submitted / 64) ~= math.floor((submitted - added) / 64) then
    card = card - redis.call('ZREMRANGEBYSCORE', '{keys.HISTORY}', '-inf', '(' .. ARGV[4])
  end
  if card > most then redis.call('ZREMRANGEBYRANK', '{keys.HISTORY}', 0, card - most - 1) end
end
"""
)

# KEYS: the model queue.  ARGV: max queue (0 = none), events maxlen, events ttl ms, history min score, history
# max count, owner's quota of queued + running jobs (0 = none), then one job block (above), then now (RQ time
# format: the start of a job handed at once to a parked worker, push dispatch; else the job gets a wake-up), then
# '1' to refuse the job when no live worker holds its model (else '0': the job waits for one).
# Returns {1 + queue position}, or {1, started event} for a job handed at once; {-3} when no live worker holds the
# model, {-1, current length} when the queue is full or {-2, active jobs} when the owner's quota is used up
# (nothing written in any of these three cases). The events
# it writes (queued, started) are not published on the job's reply_to: the submitter has them from its own
# arguments and this reply, without a pub/sub delivery to wait for on the time-to-first-token path.
ENQUEUE_SRC = (
    _EMIT
    + _PUSH_JOB
    + _TAKE
    + f"""
local m, now = ARGV[10], clock()
-- refused, in this order, with nothing written: no live worker holds the model (when checked), the queue is full,
-- the owner's quota is used up. A live parked worker to hand the job to holds the model: the served check is left
-- for the other cases (when no worker holds it, parked_worker may have dropped dead workers' parks before).
local check = ARGV[17] == '1'
local quota = tonumber(ARGV[6])
if check and quota > 0 and ARGV[14] ~= '' then  -- (the quota's count drops ended jobs from the owner's set)
  if not served(m, now) then return {{-3}} end
  check = false
end
local limit = tonumber(ARGV[1])
local depth = redis.call('LLEN', KEYS[1])
if limit > 0 and depth >= limit then
  if check and not served(m, now) then return {{-3}} end
  return {{-1, depth}}
end
local active = over_quota(ARGV[14], quota, 1)
if active then return {{-2, active}} end
-- an idle queue and a parked worker: the job goes to that worker at once (else it is queued with a wake-up)
local wid = depth == 0 and parked_worker(m, now)
if not wid and check and not served(m, now) then return {{-3}} end
local handed = wid and {{id = wid, ts = ARGV[16]}}
local n, fields = push_job(7, ARGV[2], ARGV[3], quota > 0 and ARGV[14] ~= '', now, handed)
local out = {{n}}
if wid then
  local w = {{id = wid, maxlen = ARGV[2], quiet = true, fresh = true, now = now}}
  local st = {{'queued', '1', fields.data, fields.run_timeout, m, fields.enqueued_at}}
  hand(wid, start('{keys.RQ_JOB_PREFIX}' .. ARGV[7], ARGV[7], st, m, w))
  out[2] = w.started
end
trim_lists(redis.call('HINCRBY', '{keys.STATS}', 'submitted', 1), 1)
return out
"""
)

# KEYS: none.  ARGV: as ENQUEUE's first six, then the blocks of every job (all of one owner), then one character
# per job: '1' to refuse the batch when no live worker holds the job's model. All or nothing: returns {-3, index
# of the first such job}, {-1, model, depth} when one model queue would pass the limit, {-2, active} when the
# owner's quota would (nothing written in any of these cases), else {1 + queue position of each job...}.
ENQUEUE_BATCH_SRC = (
    _PUSH_JOB
    + f"""
local limit = tonumber(ARGV[1])
local last, checks, now = #ARGV - 1, ARGV[#ARGV], clock()  -- (last: the end of the job blocks)
local count = (last - 6) / {JOB_BLOCK}
local holds = {{}}
for i = 1, count do
  local m = ARGV[7 + (i - 1) * {JOB_BLOCK} + 3]
  if string.sub(checks, i, i) == '1' then
    if holds[m] == nil then holds[m] = served(m, now) end
    if not holds[m] then return {{-3, i - 1}} end
  end
end
if limit > 0 then
  local extra = {{}}
  for a = 7, last, {JOB_BLOCK} do
    local m = ARGV[a + 3]
    extra[m] = (extra[m] or 0) + 1
  end
  for m, k in pairs(extra) do
    local depth = redis.call('LLEN', '{keys.queue_key("")}' .. m)
    if depth + k > limit then return {{-1, m, depth}} end
  end
end
local quota = tonumber(ARGV[6])
local owner = ''
if count > 0 then owner = ARGV[7 + 7] end
local active = over_quota(owner, quota, count)
if active then return {{-2, active}} end
local out = {{}}
for a = 7, last, {JOB_BLOCK} do
  out[#out + 1] = push_job(a, ARGV[2], ARGV[3], quota > 0 and owner ~= '', now)  -- (the first value)
end
trim_lists(redis.call('HINCRBY', '{keys.STATS}', 'submitted', #out), #out)
return out
"""
)

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
ENQUEUE_BATCH = LuaScript(ENQUEUE_BATCH_SRC)
POSITION = LuaScript(POSITION_SRC)
RELEASE_LOCK = LuaScript(RELEASE_LOCK_SRC)
