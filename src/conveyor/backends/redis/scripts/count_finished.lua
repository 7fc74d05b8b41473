-- count_finished: ARGV = prefix, since (µs), bucket (µs). Jobs finished at or after
-- since, counted per bucket and status. Returns a flat array: bucket index, status,
-- count, bucket index, ...
-- Cost: per status and non-empty bucket, one ZRANGEBYSCORE for the bucket's first job
-- and one ZCOUNT (O(log n) each): it does not grow with the number of jobs counted.
local bucket = tonumber(ARGV[3])
local out = {}
for _, s in ipairs(FINISHED_STATUSES) do
  local key = k_finished(s)
  local from = ARGV[2]
  while true do
    local first = redis.call('ZRANGEBYSCORE', key, from, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    if #first == 0 then break end
    local b = math.floor(tonumber(first[2]) / bucket)
    local upper = string.format('%d', (b + 1) * bucket)
    out[#out + 1] = string.format('%d', b)
    out[#out + 1] = s
    out[#out + 1] = redis.call('ZCOUNT', key, from, '(' .. upper)
    from = upper
  end
end
return out
