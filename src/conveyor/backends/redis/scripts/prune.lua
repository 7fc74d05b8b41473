-- prune: ARGV = prefix, finished_before, limit. Deletes up to `limit` finished jobs
-- with finished_at < finished_before, the oldest first across the three finished
-- indexes. Returns how many jobs were deleted.
local limit = tonumber(ARGV[3])
local bound = '(' .. ARGV[2]
local cands = {}
for _, s in ipairs(FINISHED_STATUSES) do
  local got = redis.call('ZRANGEBYSCORE', k_finished(s), '-inf', bound, 'WITHSCORES', 'LIMIT', 0, limit)
  for i = 1, #got, 2 do cands[#cands + 1] = {tonumber(got[i + 1]), got[i], s} end
end
table.sort(cands, function(a, b) return a[1] < b[1] end)
local n = math.min(limit, #cands)
for i = 1, n do
  local id, s = cands[i][2], cands[i][3]
  local flat = redis.call('HGETALL', k_job(id))
  if #flat > 0 then
    remove_job(id, to_table(flat))
  else
    redis.call('ZREM', k_finished(s), id)
  end
end
return n
