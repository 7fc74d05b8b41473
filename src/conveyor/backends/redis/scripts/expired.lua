-- expired: ARGV = prefix, now, limit. Processing jobs whose lease ended before now.
local ids = redis.call('ZRANGEBYSCORE', k_processing(), '-inf', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  out[#out + 1] = redis.call('HGETALL', k_job(id))
end
return out
