-- prune: ARGV = prefix, finished_before, limit. Returns how many jobs were deleted.
local ids = redis.call('ZRANGEBYSCORE', k_finished(), '-inf', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local flat = redis.call('HGETALL', k_job(id))
  if #flat > 0 then
    remove_job(id, to_table(flat))
  else
    redis.call('ZREM', k_finished(), id)
  end
end
return #ids
