-- leader: the store's one maintenance lease (the worker elected to recover expired job
-- leases, prune and fire schedules), a key whose TTL is the lease.
-- ARGV = prefix, op, ...
--   op 'acquire': holder, ttl ms → 1 when holder now leads (SET NX PX took the free
--                 key, or holder already held it and its TTL is renewed), else 0
--   op 'release': holder → deletes the key only if holder holds it
--   op 'get'     → the holder, or false
local op = ARGV[2]
local key = k_leader()
if op == 'acquire' then
  if redis.call('SET', key, ARGV[3], 'NX', 'PX', ARGV[4]) then
    return 1
  end
  -- Compare and renew: only the holder extends its own lease.
  if redis.call('GET', key) == ARGV[3] then
    redis.call('PEXPIRE', key, ARGV[4])
    return 1
  end
  return 0
elseif op == 'release' then
  if redis.call('GET', key) == ARGV[3] then
    return redis.call('DEL', key)
  end
  return 0
elseif op == 'get' then
  return redis.call('GET', key)
end
return redis.error_reply('unknown op ' .. op)
