-- count_finished: ARGV = prefix, since (µs), bucket (µs). Jobs finished at or after
-- since, read through the finished index (the zset prune uses), counted per bucket
-- and status. Returns a flat array: bucket index, status, count, bucket index, ...
-- Cost: one HMGET per job finished in the window.
local ids = redis.call('ZRANGEBYSCORE', k_finished(), ARGV[2], '+inf')
local bucket = tonumber(ARGV[3])
local counts = {}
for _, id in ipairs(ids) do
  local row = redis.call('HMGET', k_job(id), 'status', 'finished_at')
  if row[1] and row[2] then
    local key = string.format('%d', math.floor(tonumber(row[2]) / bucket)) .. ' ' .. row[1]
    counts[key] = (counts[key] or 0) + 1
  end
end
local out = {}
for key, n in pairs(counts) do
  local sep = string.find(key, ' ', 1, true)
  out[#out + 1] = string.sub(key, 1, sep - 1)
  out[#out + 1] = string.sub(key, sep + 1)
  out[#out + 1] = n
end
return out
