-- delete: ARGV = prefix, id, allowed...  Returns {0, record} | {1} | {2, status}.
local id = ARGV[2]
local flat = redis.call('HGETALL', k_job(id))
if #flat == 0 then return {1} end
local h = to_table(flat)
local ok = false
for i = 3, #ARGV do
  if ARGV[i] == h.status then ok = true end
end
if not ok then return {2, h.status} end
remove_job(id, h)
return {0, flat}
