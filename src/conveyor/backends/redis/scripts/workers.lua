-- workers: ARGV = prefix, op, ...
--   op 'save': id, last_heartbeat score, json  |  op 'remove': id
--   op 'list': alive_since → the JSON entries of workers seen since (older ones deleted)
local op = ARGV[2]
local zkey = k_workers()
if op == 'save' then
  redis.call('SET', k_worker(ARGV[3]), ARGV[5])
  redis.call('ZADD', zkey, ARGV[4], ARGV[3])
  return 1
elseif op == 'remove' then
  redis.call('DEL', k_worker(ARGV[3]))
  return redis.call('ZREM', zkey, ARGV[3])
elseif op == 'list' then
  local dead = redis.call('ZRANGEBYSCORE', zkey, '-inf', '(' .. ARGV[3])
  for _, id in ipairs(dead) do
    redis.call('DEL', k_worker(id))
    redis.call('ZREM', zkey, id)
  end
  local out = {}
  for _, id in ipairs(redis.call('ZRANGE', zkey, 0, -1)) do
    local v = redis.call('GET', k_worker(id))
    if v then out[#out + 1] = v end
  end
  return out
end
return redis.error_reply('unknown op ' .. op)
