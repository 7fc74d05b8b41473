-- transition: ARGV = prefix, id, action, nallowed, allowed..., nset, field, value, ...,
--   ndel, field...
-- Compare-and-set on the status, then index maintenance. Returns
--   {0, record} | {1} not found | {2, status} not allowed | {3, status, holder} unique.
local id = ARGV[2]
local key = k_job(id)
local flat = redis.call('HGETALL', key)
if #flat == 0 then return {1} end
local h = to_table(flat)
local pos = 4
local ok = false
for i = 1, tonumber(ARGV[pos]) do
  if ARGV[pos + i] == h.status then ok = true end
end
pos = pos + tonumber(ARGV[pos]) + 1
if not ok then return {2, h.status} end
local nset = tonumber(ARGV[pos])
local set = {}
for i = 1, nset do set[i] = ARGV[pos + i] end
pos = pos + nset + 1
local ndel = tonumber(ARGV[pos])
local del = {}
for i = 1, ndel do del[i] = ARGV[pos + i] end
local new = to_table(flat)
for i = 1, #set, 2 do new[set[i]] = set[i + 1] end
for _, f in ipairs(del) do new[f] = nil end
if not ACTIVE[h.status] and ACTIVE[new.status] and new.unique_key then
  local holder = redis.call('HGET', k_unique(), unique_field(new))
  if holder and holder ~= id then return {3, h.status, holder} end
end
unindex_state(id, h)
if new.topic ~= h.topic then redis.call('SADD', k_topics(), new.topic) end
if #del > 0 then redis.call('HDEL', key, unpack(del)) end
if #set > 0 then redis.call('HSET', key, unpack(set)) end
index_state(id, new, new.updated_at or new.run_at)
if new.status == 'pending' then wake() end
return {0, redis.call('HGETALL', key)}
