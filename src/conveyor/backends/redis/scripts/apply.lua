-- apply: one manual operation (conveyor.core.operation.JobOp), the rules of
-- conveyor.core.lifecycle.apply driven by the op's fields ('' keeps a field).
-- ARGV = prefix, id, now, status, has_result, result, restart, run_at, has_payload,
--   payload, priority, max_retries, has_metadata, metadata, has_last_error, last_error,
--   cancel_requested ('1'/'0'/''), then the allowed states.
-- Returns {0, record} | {1} not found | {2, status} not allowed | {3, status, holder}
-- when the op would make a second active job with the job's unique_key.
local id, now = ARGV[2], ARGV[3]
local key = k_job(id)
local flat = redis.call('HGETALL', key)
if #flat == 0 then return {1} end
local h = to_table(flat)
local ok = false
for i = 18, #ARGV do
  if ARGV[i] == h.status then ok = true end
end
if not ok then return {2, h.status} end
local new = to_table(flat)
local status = ARGV[4]
if status ~= '' then
  new.status = status
  if FINISHED[status] then new.finished_at = now else new.finished_at = nil end
  if status == 'completed' then
    if ARGV[5] == '1' then new.result = ARGV[6] else new.result = nil end
  end
end
if ARGV[7] == '1' then
  new.attempts, new.snoozes, new.started_at, new.result = '0', '0', nil, nil
end
if ARGV[8] ~= '' then new.run_at = ARGV[8] end
if ARGV[9] == '1' then new.payload = ARGV[10] end
if ARGV[11] ~= '' then new.priority = ARGV[11] end
if ARGV[12] ~= '' then new.max_retries = ARGV[12] end
if ARGV[13] == '1' then new.metadata = ARGV[14] end
if ARGV[15] == '1' then new.last_error = ARGV[16] end
if ARGV[17] ~= '' then new.cancel_requested = ARGV[17] end
if new.status ~= 'processing' then new.locked_by, new.locked_until = nil, nil end
new.updated_at = now
if not ACTIVE[h.status] and ACTIVE[new.status] and new.unique_key then
  local holder = redis.call('HGET', k_unique(), unique_field(new))
  if holder and holder ~= id then return {3, h.status, holder} end
end
local set, del = {}, {}
for f, v in pairs(new) do
  if h[f] ~= v then set[#set + 1] = f; set[#set + 1] = v end
end
for f in pairs(h) do
  if new[f] == nil then del[#del + 1] = f end
end
unindex_state(id, h)
if #del > 0 then redis.call('HDEL', key, unpack(del)) end
if #set > 0 then redis.call('HSET', key, unpack(set)) end
index_state(id, new, now)
if new.status == 'pending' then wake() end
return {0, redis.call('HGETALL', key)}
