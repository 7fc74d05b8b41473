-- schedules: ARGV = prefix, op, name, ...
--   op 'get': record or false;  op 'list': every record by name;
--   op 'delete': 1 if it existed;  op 'enable': ARGV[4] = '1'/'0', ARGV[5] = next_run_at
--   ('' = NULL): the record or false.
local op, name = ARGV[2], ARGV[3]
if op == 'list' then
  local out = {}
  for _, n in ipairs(redis.call('ZRANGE', k_schedules(), 0, -1)) do
    out[#out + 1] = redis.call('HGETALL', k_schedule(n))
  end
  return out
end
local key = k_schedule(name)
if op == 'get' then
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return false end
  return flat
elseif op == 'delete' then
  redis.call('ZREM', k_schedules(), name)
  return redis.call('DEL', key)
elseif op == 'enable' then
  if redis.call('EXISTS', key) == 0 then return false end
  redis.call('HSET', key, 'enabled', ARGV[4])
  if ARGV[5] == '' then redis.call('HDEL', key, 'next_run_at') else redis.call('HSET', key, 'next_run_at', ARGV[5]) end
  return redis.call('HGETALL', key)
end
return redis.error_reply('unknown op ' .. op)
