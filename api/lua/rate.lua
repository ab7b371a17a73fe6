-- RATE: take a token from an API key's bucket (a token bucket per key: its request rate limit). The clock is
-- Redis's, shared by every API replica.
--
-- KEY.bucket   the key's bucket hash (tokens, ts)
-- ARG.rate     tokens per second
-- ARG.burst    the bucket's size
--
-- Returns {1, ''} when allowed, {0, seconds to wait} when not (as a string: Lua numbers become integers on the
-- way out).

local rate, burst = tonumber(ARG.rate), tonumber(ARG.burst)
local now = clock()
local b = redis.call('HMGET', KEY.bucket, 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
if tokens < 1 then return {0, tostring((1 - tokens) / rate)} end
redis.call('HSET', KEY.bucket, 'tokens', tostring(tokens - 1), 'ts', tostring(now))
redis.call('PEXPIRE', KEY.bucket, math.ceil(burst / rate * 1000) + 1000)
return {1, ''}
