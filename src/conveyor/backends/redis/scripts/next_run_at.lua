-- next_run_at: ARGV = prefix, topic...  Earliest run_at (µs string) of the pending
-- jobs of these topics, or false. In a ready zset the first member of each priority
-- level has that level's earliest run_at, so we visit one member per level.
local best = nil
local function consider(v)
  if v and (best == nil or tonumber(v) < tonumber(best)) then best = v end
end
for i = 2, #ARGV do
  local t = ARGV[i]
  local d = redis.call('ZRANGE', k_delayed(t), 0, 0, 'WITHSCORES')
  if #d > 0 then consider(redis.call('HGET', k_job(d[1]), 'run_at')) end
  local rkey = k_ready(t)
  local first = redis.call('ZRANGE', rkey, 0, 0, 'WITHSCORES')
  while #first > 0 do
    local id = ready_entry(first[1], 0)
    consider(redis.call('HGET', k_job(id), 'run_at'))
    first = redis.call('ZRANGEBYSCORE', rkey, '(' .. first[2], '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  end
end
return best or false
