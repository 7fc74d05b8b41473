-- fire_schedule: ARGV = prefix, name, fire_at, next_run_at ('' = NULL), the job's record
-- (a JSON array: record.encode_job).
-- Exactly-once per instant: compare-and-set on last_fired_at, then insert the job.
-- Returns {0} nothing fired | {1} job stored as given | {2, record} job returned instead.
local key = k_schedule(ARGV[2])
local fire_at = ARGV[3]
local f = redis.call('HMGET', key, 'name', 'enabled', 'last_fired_at')
if not f[1] or f[2] ~= '1' then return {0} end
if f[3] and tonumber(f[3]) >= tonumber(fire_at) then return {0} end
redis.call('HSET', key, 'last_fired_at', fire_at)
if ARGV[4] == '' then redis.call('HDEL', key, 'next_run_at') else redis.call('HSET', key, 'next_run_at', ARGV[4]) end
local flat = cjson.decode(ARGV[5])
local stored = redis.call('HGETALL', k_job(flat[2]))  -- the id is second
if #stored > 0 then return {2, stored} end
local r = insert_job(flat)
if r == false then
  wake()
  return {1}
end
return {2, r}
