-- idle: ARGV = prefix, worker_id, free slots, lease µs, expiry µs, ntopics, topic...
-- Registers the worker as idle on its topics, so that enqueue may claim due jobs for it
-- and push them to its inbox (keys.py, "Push"); free slots 0 unregisters it.
local worker, free = ARGV[2], tonumber(ARGV[3])
local ntopics = tonumber(ARGV[6])
if free < 1 then
  redis.call('HDEL', k_idlers(), worker)
  for i = 1, ntopics do redis.call('SREM', k_idle(ARGV[6 + i]), worker) end
  return 0
end
redis.call('HSET', k_idlers(), worker, ARGV[3] .. ' ' .. ARGV[4] .. ' ' .. ARGV[5])
for i = 1, ntopics do redis.call('SADD', k_idle(ARGV[6 + i]), worker) end
return 1
