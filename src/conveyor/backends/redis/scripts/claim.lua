-- claim: ARGV = prefix, worker_id, limit, now, locked_until, ntopics, topic...
-- Promotes the claimer's due delayed jobs, then takes up to `limit` due jobs in
-- (priority desc, run_at, id) order across its topics. Returns flat records.
local worker, limit, now, lu = ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local nownum = tonumber(now)
local ntopics = tonumber(ARGV[6])
-- Promotion is bounded per call so that one script never blocks Redis for long; the
-- rest is promoted by the next claims (order is exact unless more than this many
-- delayed jobs of one topic fell due at once).
local PROMOTE = 1000
local cands = {}
for i = 1, ntopics do
  local t = ARGV[6 + i]
  local dkey = k_delayed(t)
  local due = redis.call('ZRANGEBYSCORE', dkey, '-inf', now, 'LIMIT', 0, PROMOTE)
  if #due > 0 then
    local rkey = k_ready(t)
    for _, id in ipairs(due) do
      local f = redis.call('HMGET', k_job(id), 'run_at', 'priority')
      if f[1] then redis.call('ZADD', rkey, -tonumber(f[2]), ready_member(f[1], id)) end
    end
    redis.call('ZREM', dkey, unpack(due))
  end
  local top = redis.call('ZRANGE', k_ready(t), 0, limit - 1, 'WITHSCORES')
  for j = 1, #top, 2 do
    cands[#cands + 1] = {tonumber(top[j + 1]), top[j], t}
  end
end
if ntopics > 1 then
  table.sort(cands, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
end
local out = {}
for _, c in ipairs(cands) do
  if #out >= limit then break end
  local member, t = c[2], c[3]
  -- never early, even if a writer's clock ran ahead of this claimer's
  if tonumber(string.sub(member, 1, 16)) <= nownum then
    local flat = claim_member(worker, member, t, string.sub(member, 17), now, lu)
    if flat then out[#out + 1] = flat end
  end
end
return out
