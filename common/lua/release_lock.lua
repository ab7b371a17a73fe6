-- RELEASE_LOCK: delete a lock only while it is still the caller's (a lock that expired and was taken by another
-- process stays).
--
-- KEY.lock    the lock
-- ARG.token   the caller's token (the lock's value when it took it)
--
-- Returns 1 when released, 0 when the lock is not the caller's.

if redis.call('GET', KEY.lock) == ARG.token then return redis.call('DEL', KEY.lock) end
return 0
