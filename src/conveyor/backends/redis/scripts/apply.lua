-- apply: manual operations (conveyor.core.operation.JobOp) in order, each by the rules
-- of conveyor.core.lifecycle.apply driven by the op's fields ('' keeps a field).
-- ARGV = prefix, now, n, then per op 17 values: id, status, has_result, result,
--   restart, run_at, has_payload, payload, priority, max_retries, has_metadata,
--   metadata, has_last_error, last_error, cancel_requested ('1'/'0'/''), remove
--   ('1'/'0'), the allowed states joined by ','.
-- Returns per op {0, record} (for a remove: the record deleted) | {1} not found |
-- {2, status} not allowed | {3, status, holder} when the op would make a second active
-- job with the job's unique_key.
local now = ARGV[2]
local out = {}
local woke = false
for j = 1, tonumber(ARGV[3]) do
  local b = 3 + (j - 1) * 17
  local id = ARGV[b + 1]
  local key = k_job(id)
  local flat = redis.call('HGETALL', key)
  local h = to_table(flat)
  if #flat == 0 then
    out[j] = {1}
  elseif not string.find(',' .. ARGV[b + 17] .. ',', ',' .. h.status .. ',', 1, true) then
    out[j] = {2, h.status}
  elseif ARGV[b + 16] == '1' then
    remove_job(id, h)
    out[j] = {0, flat}
  else
    local new = to_table(flat)
    local status = ARGV[b + 2]
    if status ~= '' then
      new.status = status
      if FINISHED[status] then new.finished_at = now else new.finished_at = nil end
      if status == 'completed' then
        if ARGV[b + 3] == '1' then new.result = ARGV[b + 4] else new.result = nil end
      end
    end
    if ARGV[b + 5] == '1' then
      new.attempts, new.snoozes, new.started_at, new.result = '0', '0', nil, nil
    end
    if ARGV[b + 6] ~= '' then new.run_at = ARGV[b + 6] end
    if ARGV[b + 7] == '1' then new.payload = ARGV[b + 8] end
    if ARGV[b + 9] ~= '' then new.priority = ARGV[b + 9] end
    if ARGV[b + 10] ~= '' then new.max_retries = ARGV[b + 10] end
    if ARGV[b + 11] == '1' then new.metadata = ARGV[b + 12] end
    if ARGV[b + 13] == '1' then new.last_error = ARGV[b + 14] end
    if ARGV[b + 15] ~= '' then new.cancel_requested = ARGV[b + 15] end
    if new.status ~= 'processing' then new.locked_by, new.locked_until = nil, nil end
    new.updated_at = now
    local holder = nil
    if not ACTIVE[h.status] and ACTIVE[new.status] and new.unique_key then
      holder = redis.call('HGET', k_unique(), unique_field(new))
      if holder == id then holder = nil end
    end
    if holder then
      out[j] = {3, h.status, holder}
    else
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
      if new.status == 'pending' then woke = true end
      out[j] = {0, redis.call('HGETALL', key)}
    end
  end
end
if woke then wake() end
return out
