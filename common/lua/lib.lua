-- Helpers shared by the job scripts.
--
-- The loader (common/scripts.py) puts before each script the definitions of this file that the script uses,
-- directly or through another definition, and nothing else: a script call creates no closure it does not need.
-- Before these come, generated from Python, the key builders and constants of common/keys.py (job_key(id),
-- queue_key(model), DEADLINES, PRIORITIES, ...), a few constants of the scheduler (STARTS_KEPT, PARK_KEEP_MS,
-- WARM_PARK) and the script's arguments by name (KEY.<name>, ARG.<name>, KEY_REST and ARG_REST: the first KEYS
-- and ARGV index after the named ones, JOB_BLOCK: the field names of one job block).
-- Each definition is one paragraph (no blank line inside) and uses only what comes before it.

-- the server's clock, in seconds
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- An event is one JSON object: job, seq and attempt first, then the fields of body (a JSON object). Its seq comes
-- from HINCRBY seq on the job hash; it goes to the replay stream (entry id <seq+1>-0) and to the job's pub/sub
-- channel, and to the job's reply_to unless quiet (the enqueue that writes it returns it to the submitter).
-- Optional, for callers that know them (each saves a command): reply_to (the job's; false: none; nil: read
-- here), seq (when the caller has counted it already); ttl_ms false: the stream's expiry is not renewed (it was
-- a moment ago, or is renewed every few events).
local function emit(jk, id, attempt, body, maxlen, ttl_ms, quiet, reply_to, seq)
  if not seq then seq = redis.call('HINCRBY', jk, 'seq', 1) - 1 end
  local ev = '{"job":"' .. id .. '","seq":' .. seq .. ',"attempt":' .. attempt .. ',' .. string.sub(body, 2)
  local sk = events_key(id)
  redis.call('XADD', sk, 'MAXLEN', '~', maxlen, (seq + 1) .. '-0', 'e', ev)
  if ttl_ms then redis.call('PEXPIRE', sk, ttl_ms) end
  redis.call('PUBLISH', chunks_channel(id), ev)
  if not quiet then
    if reply_to == nil then reply_to = redis.call('HGET', jk, 'reply_to') end  -- the API following the job
    if reply_to then redis.call('PUBLISH', reply_to, ev) end
  end
  return seq, ev
end

-- Add increments to hashes (a job's timing to the fleet-wide histograms, common.histograms): KEYS from
-- first_key on, one hash per increment; ARGV from first_arg on, a field and an amount per increment, in the same
-- order ('...|sum' fields take floats).
local function record(first_key, first_arg)
  for i = first_key, #KEYS do
    local a = first_arg + 2 * (i - first_key)
    if string.sub(ARGV[a], -4) == '|sum' then redis.call('HINCRBYFLOAT', KEYS[i], ARGV[a], ARGV[a + 1])
    else redis.call('HINCRBY', KEYS[i], ARGV[a], ARGV[a + 1]) end
  end
end

-- -- scheduling: the fair-share index beside each model's RQ list (common/schedule.py, docs/scheduling.md) -----

-- a submitter's fair-share weight (default 1)
local function weight(s)
  local w = tonumber(redis.call('HGET', WEIGHTS, s) or '1') or 1
  if w <= 0 then return 1 end
  return w
end

-- make submitter s of level (m, p) one the pop serves (a no-op when it is): its turn comes at the level's virtual
-- time
local function activate(m, p, s)
  local vt = redis.call('HGET', VTIME, m .. '|' .. p) or '0'
  if redis.call('EXISTS', active_key(m, p)) == 0 then  -- the level was empty: its wait for aging starts now
    redis.call('HSET', SERVED, m .. '|' .. p, string.format('%.3f', clock()))
  end
  redis.call('ZADD', active_key(m, p), 'NX', vt, s)
end

-- put a queued id into the fair-share index (at the front for a retry); returns the length of the submitter's
-- sub-queue
local function index_push(m, p, s, id, front)
  local q = subqueue_key(m, p, s)
  local n
  if front then n = redis.call('LPUSH', q, id) else n = redis.call('RPUSH', q, id) end
  activate(m, p, s)
  return n
end

-- take an id out of the index (cancel, expiry)
local function index_remove(m, p, s, id)
  if not (m and p and s) then return end
  local q = subqueue_key(m, p, s)
  redis.call('LREM', q, 1, id)
  if redis.call('LLEN', q) == 0 then redis.call('ZREM', active_key(m, p), s) end
end

-- the priority levels in the order to serve them: the highest with jobs first, unless a lower one with jobs has
-- not been served for aging seconds (then the longest-waiting such level: one pop per aging interval, so none
-- starves)
local function levels(m, now, aging)
  if aging <= 0 then return PRIORITIES end
  local starved, oldest = nil, nil
  for i = 2, #PRIORITIES do
    local p = PRIORITIES[i]
    if redis.call('EXISTS', active_key(m, p)) == 1 then
      local t = tonumber(redis.call('HGET', SERVED, m .. '|' .. p) or '0') or 0
      if now - t >= aging and (oldest == nil or t < oldest) then starved, oldest = p, t end
    end
  end
  if not starved then return PRIORITIES end
  local order = {starved}
  for _, p in ipairs(PRIORITIES) do if p ~= starved then order[#order + 1] = p end end
  return order
end

-- the next id of a model: highest priority first (see levels), then the submitter with the lowest virtual start
local function index_pop(m, now, aging)
  for _, p in ipairs(levels(m, now, aging)) do
    local ak = active_key(m, p)
    for _ = 1, 100 do
      local head = redis.call('ZRANGE', ak, 0, 0, 'WITHSCORES')
      if #head == 0 then break end
      local s, score = head[1], tonumber(head[2])
      local q = subqueue_key(m, p, s)
      local id = redis.call('LPOP', q)
      if redis.call('LLEN', q) == 0 then
        redis.call('ZREM', ak, s)
      else
        redis.call('ZADD', ak, score + 1 / weight(s), s)
      end
      if id then
        redis.call('HSET', VTIME, m .. '|' .. p, score)
        redis.call('HSET', SERVED, m .. '|' .. p, string.format('%.3f', now))
        return id
      end
    end
  end
  return nil
end

-- jobs expected to start before the i-th (from 0) queued job of submitter s in (m, p): every job of a higher
-- priority, the submitter's own before it, and each other submitter's jobs whose virtual start comes first
local function fair_position(m, p, s, i)
  local pos = i
  for _, hp in ipairs(PRIORITIES) do
    if hp == p then break end
    for _, t in ipairs(redis.call('ZRANGE', active_key(m, hp), 0, -1)) do
      pos = pos + redis.call('LLEN', subqueue_key(m, hp, t))
    end
  end
  local mine = tonumber(redis.call('ZSCORE', active_key(m, p), s) or '0') + i / weight(s)
  local others = redis.call('ZRANGE', active_key(m, p), 0, -1, 'WITHSCORES')
  for j = 1, #others, 2 do
    local t, ts = others[j], tonumber(others[j + 1])
    if t ~= s and mine > ts then
      pos = pos + math.min(redis.call('LLEN', subqueue_key(m, p, t)), math.ceil((mine - ts) * weight(t)))
    end
  end
  return pos
end

-- seconds the oldest queued job of a model queue has waited (nil: the queue is empty)
local function head_age(qkey, now)
  local head = redis.call('LINDEX', qkey, 0)
  if not head then return nil end
  return now - (tonumber(redis.call('HGET', job_key(head), 'enq_ts') or '0') or 0)
end

-- how many workers claim model m warm now (claims expire)
local function live_claims(m, now) return redis.call('ZCOUNT', warm_key(m), now, '+inf') end

-- seconds a cold worker must still wait before taking a job of model m (0: take it now, -1: queue empty)
local function cold_wait(m, qkey, now, delay)
  local age = head_age(qkey, now)
  if not age then return -1 end
  if live_claims(m, now) == 0 then return 0 end
  local left = delay - age
  if left <= 0 then return 0 end
  return left
end

-- -- dispatch: start a job on a worker; the parks of idle workers (push dispatch, docs/scheduling.md) ----------

-- Start a job on a worker: queued -> started. st: the job hash's status, attempt, data, run_timeout, model,
-- enqueued_at. w: {id = worker id, ts = now (RQ time format), now = the script's clock, maxlen, ttl = the events
-- stream's cap and ttl ms, quiet = the started event not on reply_to, fresh = a job an enqueue hands at once};
-- sets w.started to the started event. Returns POP's answer: {id, attempt, data, timeout, model, enqueued_at,
-- seq of the started event}.
local function start(jk, id, st, m, w)
  local attempt = st[2] or '1'  -- a job not enqueued by Corral has no attempt yet
  local seq, ev
  redis.call('RPUSH', inflight_key(w.id), id)
  if w.fresh then
    -- a job an enqueue hands at once: its hash already says started (push_job wrote it), it never had a
    -- deadline, its queued event is seq 0 and its stream's expiry was just set
    seq, ev = emit(jk, id, attempt, '{"type":"started","worker":"' .. w.id .. '"}', w.maxlen, false, w.quiet,
                   nil, 1)
  else
    -- the worker's clock when it sent the pop, which may be before the job was (re-)queued: never earlier
    local ts = w.ts
    if st[6] and st[6] > ts then ts = st[6] end  -- (RQ timestamps compare as text)
    redis.call('ZREM', DEADLINES, id)
    redis.call('HSET', jk, 'status', 'started', 'worker_name', w.id, 'started_at', ts, 'last_heartbeat', ts,
               'attempt', attempt)
    seq, ev = emit(jk, id, attempt, '{"type":"started","worker":"' .. w.id .. '"}', w.maxlen, w.ttl, w.quiet)
  end
  w.started = ev
  local sk = starts_key(m)
  if redis.call('LPUSH', sk, string.format('%.3f', w.now)) > STARTS_KEPT then
    redis.call('LTRIM', sk, 0, STARTS_KEPT - 1)
  end
  redis.call('HINCRBY', RUNNING, m, 1)
  return {id, attempt, st[3] or '', st[4] or '', st[5] or '', st[6] or '', seq}
end

-- take a queued id out of its model's RQ list; 0 when it is not there. LREM walks the list from one end, and the
-- index's next job is not always the head (a tenant's job behind another tenant's batch, a high-priority one):
-- it walks from the end nearer the job, judged by when the job, the head and the tail were queued (a job pushed
-- by RQ's own tools has no enq_ts: it counts as old). The walk costs the job's distance from that end.
local function unqueue(qkey, id)
  local head = redis.call('LINDEX', qkey, 0)
  if head == id then
    redis.call('LPOP', qkey)
    return 1
  end
  local tail = redis.call('LINDEX', qkey, -1)
  if tail == id then
    redis.call('RPOP', qkey)
    return 1
  end
  if not (head and tail) then return 0 end
  local function queued_at(x) return tonumber(redis.call('HGET', job_key(x), 'enq_ts') or '0') or 0 end
  local t = queued_at(id)
  if queued_at(tail) - t < t - queued_at(head) then return redis.call('LREM', qkey, -1, id) end
  return redis.call('LREM', qkey, 1, id)
end

-- take the next job of a model queue for worker w (see start); nil when there is none. Skips ids whose job is
-- gone or no longer queued.
local function take(qkey, m, now, w)
  for _ = 1, 100 do
    local id = index_pop(m, now, w.aging)
    if id then
      if unqueue(qkey, id) == 0 then id = false end  -- no longer queued: skip
    else
      id = redis.call('LPOP', qkey)  -- a job outside the index (pushed by RQ's own tools)
      if not id then return nil end
    end
    if id then
      local jk = job_key(id)
      local st = redis.call('HMGET', jk, 'status', 'attempt', 'data', 'run_timeout', 'model', 'enqueued_at')
      if st[1] == 'queued' then return start(jk, id, st, m, w) end
    end
  end
  return nil
end

-- end a worker's park; returns the job (JSON of POP's answer) and its id an enqueue handed it meanwhile, if any
local function unpark(wid)
  local pk = park_key(wid)
  local rec = redis.call('HMGET', pk, 'models', 'job', 'id')
  if rec[1] then
    for m in string.gmatch(rec[1], '%S+') do redis.call('ZREM', parked_key(m), wid) end
  end
  redis.call('DEL', pk)
  return rec[2], rec[3]
end

-- whether a worker listens on its control channel (a killed worker's connections close at once, long before its
-- heartbeat expires)
local function listening(wid)
  return redis.call('PUBSUB', 'NUMSUB', control_channel(wid))[2] > 0
end

-- The live parked worker to hand a job of model m: the one with m loaded and the most free slots; one without m
-- only when no worker claims it warm (as a pop would not make it wait: cold_wait), or any when ``cold`` (a
-- wake-up: its pop then waits the cold delay itself). Returns its id, and for a worker without m the seconds its
-- warm claims last (its park's ``claim``): a hand claims m for it at once, as a pop taking a cold job does. Its park ends: it leaves the parked sets, and the record of
-- a worker that is not handed the job goes (hand overwrites the other's). Live: the park was renewed, the
-- heartbeat says healthy (its Ollama answers) and the worker is listening. ``prefer``: a worker to take instead of
-- the best one when it is parked for m and as warm (the API sent it the job already: api/link.py).
local function parked_worker(m, now, cold, prefer)
  local pz = parked_key(m)
  for _ = 1, 4 do
    local top = redis.call('ZREVRANGE', pz, 0, 0, 'WITHSCORES')
    local wid = top[1]
    if not wid then return false end
    if prefer and prefer ~= '' and prefer ~= wid then
      local score = redis.call('ZSCORE', pz, prefer)
      if score and (tonumber(score) >= WARM_PARK) == (tonumber(top[2]) >= WARM_PARK) then
        wid, top[2] = prefer, score
      end
    end
    prefer = nil
    if not cold and tonumber(top[2]) < WARM_PARK and live_claims(m, now) > 0 then return false end
    local pk = park_key(wid)
    local rec = redis.call('HMGET', pk, 'models', 'until', 'claim')
    redis.call('ZREM', pz, wid)
    for other in string.gmatch(rec[1] or '', '%S+') do
      if other ~= m then redis.call('ZREM', parked_key(other), wid) end
    end
    local live = tonumber(rec[2] or '0') >= now
    if live and redis.call('HGET', worker_key(wid), 'healthy') == '1' and listening(wid) then
      if tonumber(top[2]) < WARM_PARK then return wid, tonumber(rec[3]) end
      return wid
    end
    redis.call('DEL', pk)
  end
  return false
end

-- A job of model m was queued (or re-queued): wake ONE idle worker to pop it, not every worker holding m (their
-- pops would cost the fleet size per job): the parked worker a hand would pick, its park ended so that the next
-- job wakes another; none when every holder is busy (each pops when a slot frees). The broadcast on
-- corral:wake:<m> is for workers without push dispatch (they never park and follow it); push-dispatch workers do
-- not subscribe to it. A wake-up lost on the way costs the worker's idle poll (IDLE_POLL, 1 s). The message names
-- the model: the woken worker tries its queue first (were it to take a job of another model, queued meanwhile with
-- nobody else parked for it, this job would wait for the next poll).
local function wake(m, now, id)
  redis.call('PUBLISH', wake_channel(m), id)
  local wid = parked_worker(m, now, true)
  if wid then
    local body = '{"wake":' .. cjson.encode(id) .. ',"model":' .. cjson.encode(m) .. '}'
    redis.call('PUBLISH', control_channel(wid), body)
  end
end

-- tell a worker the job it was handed (POP's answer), and keep it for its next pop if the message is lost
local function hand(wid, job)
  local body = cjson.encode(job)
  local pk = park_key(wid)
  redis.call('HSET', pk, 'job', body, 'id', job[1])
  redis.call('PEXPIRE', pk, PARK_KEEP_MS)
  redis.call('PUBLISH', control_channel(wid), '{"dispatch":' .. body .. '}')
end

-- -- enqueue: write queued jobs ----------------------------------------------------------------------------------

-- the job blocks after the named arguments (ARGV[ARG_REST] on, JOB_BLOCK's fields each): one table per job
local function job_blocks()
  local jobs, n = {}, #JOB_BLOCK
  for a = ARG_REST, #ARGV - n + 1, n do
    local job = {}
    for k = 1, n do job[JOB_BLOCK[k]] = ARGV[a + k - 1] end
    jobs[#jobs + 1] = job
  end
  return jobs
end

-- whether a live worker holds model m (its holders are scored by when their heartbeat expires)
local function served(m, now)
  return #redis.call('ZRANGEBYSCORE', model_workers_key(m), now, '+inf', 'LIMIT', 0, 1) > 0
end

-- the recent jobs list's length after the last push_job (trim_lists)
local recent_len = 0

-- Write one queued job (nothing -> queued): hash, RQ list, fair-share index, queued event, wake-up, deadline,
-- history, recent list, owner's active set. job: a job block (id, event = the queued event, deadline (0: none),
-- model, priority, submitter, created (epoch s), owner ('': none), hash = the job hash as a JSON object of
-- strings). now: the script's clock. handed: {id = worker, ts = start time (RQ format)} for a job handed to a
-- parked worker at once (push dispatch): it never enters the queue, and its hash is written started (as start()
-- would) in the same command. Returns 1 + the job's queue position (fair_position: jobs expected to start first;
-- 0 for a job handed) and the job hash's fields.
local function push_job(job, maxlen, ttl_ms, track_owner, now, handed)
  local id, m = job.id, job.model
  local jk, qk, sk = job_key(id), queue_key(m), events_key(id)
  local flat, fields = {'enq_ts', string.format('%.6f', now)}, cjson.decode(job.hash)
  local written = fields
  if handed then
    written = {status = 'started', worker_name = handed.id, started_at = handed.ts, last_heartbeat = handed.ts,
               seq = '2'}  -- (seq: the queued and started events are 0 and 1)
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
  redis.call('SADD', RQ_QUEUES, qk)  -- RQ's list of queues, which GET /queues reads too
  if not handed then
    redis.call('RPUSH', qk, id)
    n = index_push(m, job.priority, job.submitter, id, false)
    if tonumber(job.deadline) > 0 then redis.call('ZADD', DEADLINES, job.deadline, id) end
  end
  redis.call('XADD', sk, 'MAXLEN', '~', maxlen, '1-0', 'e', job.event)
  redis.call('PEXPIRE', sk, ttl_ms)
  redis.call('PUBLISH', chunks_channel(id), job.event)  -- (not on reply_to: see enqueue.lua)
  if not handed then wake(m, now, id) end
  redis.call('ZADD', HISTORY, job.created, id)
  recent_len = redis.call('LPUSH', RECENT_JOBS, id)
  if track_owner then
    local ok = owner_jobs_key(job.owner)
    redis.call('SADD', ok, id)
    redis.call('PEXPIRE', ok, ttl_ms)
  end
  if handed then return 1, fields end
  return fair_position(m, job.priority, job.submitter, n - 1) + 1, fields
end

-- the owner's queued + running jobs, plus adding, over the quota? (ended jobs leave the owner's set here, lazily)
local function over_quota(owner, quota, adding)
  if quota <= 0 or owner == '' then return false end
  local ok = owner_jobs_key(owner)
  local active = 0
  for _, id in ipairs(redis.call('SMEMBERS', ok)) do
    local st = redis.call('HGET', job_key(id), 'status')
    if st == 'queued' or st == 'started' then active = active + 1 else redis.call('SREM', ok, id) end
  end
  if active + adding > quota then return active end
  return false
end

-- keep the history index under its count (most) and age (oldest: the oldest score kept) and the recent list
-- under its length; submitted: the submit counter after adding the jobs just pushed. The age trim runs every 64
-- submits, or when over the count.
local function trim_lists(submitted, added, oldest, most)
  if recent_len > RECENT_JOBS_MAX then
    redis.call('LTRIM', RECENT_JOBS, 0, RECENT_JOBS_MAX - 1)
  end
  local card = redis.call('ZCARD', HISTORY)
  most = tonumber(most)
  if card > most or math.floor(submitted / 64) ~= math.floor((submitted - added) / 64) then
    card = card - redis.call('ZREMRANGEBYSCORE', HISTORY, '-inf', '(' .. oldest)
  end
  if card > most then redis.call('ZREMRANGEBYRANK', HISTORY, 0, card - most - 1) end
end

-- An Idempotency-Key's record (common.keys.idempotency_key): the submit's body digest, then '|' and each job's
-- id and 1 + queue position, '|'-separated. An earlier submit's answer under the owner's key ({-4, its record
-- without the digest}) when the digest matches, {-5} when it does not, nil when the key is new or none was sent.
local function idem_replay(owner, key, digest)
  if key == '' then return nil end
  local rec = redis.call('GET', idempotency_key(owner, key))
  if not rec then return nil end
  if string.sub(rec, 1, #digest + 1) ~= digest .. '|' then return {-5} end
  return {-4, string.sub(rec, #digest + 2)}
end

-- remember a submit's answer (parts: each job's id and 1 + queue position) for ttl seconds (see idem_replay)
local function idem_record(owner, key, digest, ttl, parts)
  if key == '' then return end
  redis.call('SET', idempotency_key(owner, key), digest .. '|' .. table.concat(parts, '|'), 'EX', ttl)
end
