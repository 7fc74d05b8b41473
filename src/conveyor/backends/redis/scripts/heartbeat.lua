-- heartbeat: ARGV = prefix, worker_id, locked_until, id...
-- Extends the leases still held by the worker. Returns {lost ids, cancel-requested ids}.
local worker, lu = ARGV[2], ARGV[3]
local lost, cancel = {}, {}
local pkey = k_processing()
for i = 4, #ARGV do
  local id = ARGV[i]
  local key = k_job(id)
  local f = redis.call('HMGET', key, 'status', 'locked_by', 'cancel_requested')
  if f[1] ~= 'processing' or f[2] ~= worker then
    lost[#lost + 1] = id
  else
    redis.call('HSET', key, 'locked_until', lu)
    redis.call('ZADD', pkey, lu, id)
    if f[3] == '1' then cancel[#cancel + 1] = id end
  end
end
return {lost, cancel}
